"""The console's read-only pages (a stub until the pages land: the endpoints the
navigation and the actions link to, each a heading only)."""

from __future__ import annotations

from quart import Blueprint, render_template, request

from ..http.shared import Services


def add_pages(bp: Blueprint, services: Services) -> None:
    """The pages' endpoints: ``overview``, ``search``, ``user``, ``device``, ``call``,
    ``parked``."""

    @bp.get("/")
    async def overview() -> str:
        return await render_template("overview.html")

    @bp.get("/search")
    async def search() -> str:
        return await render_template("stub.html", heading="Search",
                                     q=request.args.get("q", ""))

    @bp.get("/users/<path:username>")
    async def user(username: str) -> str:
        return await render_template("stub.html", heading=f"User {username}")

    @bp.get("/devices/<path:selector>")
    async def device(selector: str) -> str:
        return await render_template("stub.html", heading=f"Device {selector}")

    @bp.get("/calls/<path:id>")
    async def call(id: str) -> str:
        return await render_template("stub.html", heading=f"Call {id}")

    @bp.get("/parked")
    async def parked() -> str:
        return await render_template("stub.html", heading="Parked events")
