"""The console's Blueprint at ``/console``: its templates and static files, access
(session.py), the read-only pages (pages.py) and the actions (actions.py)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint
from quart_trio import QuartTrio

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
    pages.add_pages(bp, services)
    actions.add_actions(bp, services)
    app.register_blueprint(bp)
