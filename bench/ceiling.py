"""The ceiling: an empty quart-trio handler served by hypercorn with pnbridge's settings (the
hypercorn config ``pnbridge serve`` builds from its defaults: timeouts, header limits).

Usage: python bench/ceiling.py HOST:PORT
"""

import sys

import hypercorn.trio
import trio
from pnbridge.config import Config
from pnbridge.server import hypercorn_config
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
    trio.run(hypercorn.trio.serve, app, hypercorn_config(Config(), [sys.argv[1]]))
