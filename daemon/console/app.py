"""The console's Blueprint at ``/console``: its templates and static files, access
(session.py), the read-only pages (pages.py), the actions (actions.py), and its page for a
form too large."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Response, current_app
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestEntityTooLarge

from ..http.shared import Services
from . import actions, pages, session

HERE = Path(__file__).parent
PREFIX = "/console"


def add_console(app: QuartTrio, services: Services) -> None:
    """Serve the console on ``app`` (``services.operators`` says who may log in)."""
    bp = Blueprint("console", __name__, url_prefix=PREFIX,
                   template_folder=str(HERE / "templates"), static_folder=str(HERE / "static"),
                   static_url_path="/static")
    session.add_session(app, bp, services)

    @bp.errorhandler(RequestEntityTooLarge)
    async def too_large(error: RequestEntityTooLarge) -> Response:
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        return await session.error_page(413, f"the form is larger than {limit} bytes (the "
                                        "daemon's [reporter] max_body): nothing was done")

    pages.add_pages(bp, services)
    actions.add_actions(bp, services)
    app.register_blueprint(bp)
