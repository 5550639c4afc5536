"""The ceiling: an empty quart-trio handler served by hypercorn with pnbridge's settings."""

import sys

import hypercorn.config
import hypercorn.trio
import trio
from quart import Response
from quart_trio import QuartTrio

app = QuartTrio("ceiling")


@app.route("/", defaults={"path": ""}, methods=["GET", "POST"])
@app.route("/<path:path>", methods=["GET", "POST"])
async def empty(path: str) -> Response:
    response = Response(b"", status=200)
    del response.headers["Content-Type"]
    return response


if __name__ == "__main__":
    config = hypercorn.config.Config()
    config.bind = [sys.argv[1]]
    config.accesslog = None
    trio.run(hypercorn.trio.serve, app, config)
