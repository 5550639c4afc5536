"""The ceiling: an empty quart-trio handler served by pnbridge's HTTP server with its settings
(the hypercorn config ``pnbridge serve`` builds from its defaults: timeouts, header limits).

Usage: python bench/ceiling.py HOST:PORT
"""

import sys
from functools import partial

import trio
from pnbridge.config.tables import Config
from pnbridge.http.worker import serve
from pnbridge.ops.metrics import Metrics
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
    config = hypercorn_config(Config(), [sys.argv[1]])
    forever = trio.sleep_forever
    trio.run(partial(serve, app, config, Metrics().connection_errors, shutdown_trigger=forever))
