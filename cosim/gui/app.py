"""One FastAPI app: the SensorThings API at ``/v1.1`` and the two GUIs at ``/gui``, behind one login gate.

Access (roles of the shared web-auth design, :mod:`cosim.gui.auth`):

=====================  =====================================================================================
``/gui/home``          the Residential GUI (page); ``/gui/api/home?site=S`` its data: a resident gets only their
                       own site (403 otherwise), viewers and above any site
``/gui/tech``          the Technical GUI; ``/gui/api/tech`` its data: engineer or admin
``/v1.1/...``          the SensorThings API: viewer and above, never a resident (whose view is their home page)
``/auth/...``          login, logout, who am I (the gate answers these itself)
=====================  =====================================================================================

Login, sessions, CSRF and the audit log are the framework's shared web access control
(:mod:`cosim.security.webauth`); without a users file the server is open (it binds 127.0.0.1 by default):
everyone is the local engineer.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cosim.sta.engine import Engine
from cosim.sta.server import add_sta_routes
from cosim.sta.store import Store

from . import data
from .auth import RESIDENT, Gate, Reply, gui_auth

STATIC = Path(__file__).parent / "static"
PAGES = {"/gui/home": "home.html", "/gui/tech": "tech.html", "/gui/gui.css": "gui.css", "/gui/home.js": "home.js",
         "/gui/tech.js": "tech.js", "/gui/common.js": "common.js"}
NEEDS = {"/gui/api/home": "viewer", "/gui/api/tech": "engineer", "/gui/api/sites": "viewer"}


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_clean(v) for v in x]
    return x


def _reply(r: Reply) -> Response:
    return JSONResponse(r.body, status_code=r.status, headers=r.headers)


def create_gui_app(store: Store, *, engine: Engine | None = None, users: str | None = None,
                   auth: Gate | None = None) -> FastAPI:
    """``auth``: any object with the ``gate`` interface (the shared WebAuth, or LocalAuth); else a users file
    (``users``) or open access."""
    app = FastAPI(title="S4G SensorThings API and GUIs", docs_url=None, redoc_url=None, openapi_url=None)
    gate: Gate = auth or gui_auth(users)
    engine = engine or Engine(store)
    app.state.store, app.state.engine, app.state.auth = store, engine, gate

    @app.middleware("http")
    async def access(request: Request, call_next: Any) -> Response:
        path = request.url.path
        body = await request.body() if path.startswith("/auth/") else b""
        if path.startswith("/v1.1"):
            need: str | None = "viewer"
        elif path in PAGES or path == "/" or path.startswith("/auth/"):
            need = None  # pages load, then ask /auth/me; the data behind them is gated
        else:
            need = NEEDS.get(path, "admin")
        headers = {k.lower(): v for k, v in request.headers.items()}
        host = request.headers.get("host", "")
        # off the event loop: a login after failures is slowed down on purpose (WebAuth sleeps)
        answer = await run_in_threadpool(gate.gate, request.method, path, headers, body, host=host, need=need,
                                         peer=request.client.host if request.client else "")
        if isinstance(answer, Reply) or (hasattr(answer, "status") and hasattr(answer, "body")):
            return _reply(answer)
        resident = getattr(answer, "role", None) == RESIDENT
        if need is not None and resident and not path.startswith(("/gui/api/home", "/gui/api/sites")):
            return JSONResponse({"error": "residents see their own home page only"}, status_code=403)
        request.state.who = answer
        return cast(Response, await call_next(request))

    add_sta_routes(app, engine)

    @app.get("/")
    def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    for route, name in PAGES.items():
        def page(name: str = name) -> Response:
            kind = {"html": "text/html", "css": "text/css", "js": "text/javascript"}[name.rsplit(".", 1)[1]]
            return FileResponse(STATIC / name, media_type=kind, headers={"Cache-Control": "no-store"})
        app.add_api_route(route, page, methods=["GET"])

    @app.get("/gui/api/sites")
    def site_list(request: Request) -> Response:
        who = request.state.who
        all_sites = data.sites(store)
        return JSONResponse([s for s in all_sites if who.sees_site(s)])

    @app.get("/gui/api/home")
    def home_data(request: Request, site: str | None = None) -> Response:
        who = request.state.who
        site = site or getattr(who, "site", None)
        if site is None:
            return JSONResponse({"error": "name a site: /gui/api/home?site=..."}, status_code=400)
        if not who.sees_site(site):
            return JSONResponse({"error": "a resident sees only their own site"}, status_code=403)
        body = data.home(store, site)
        if body is None:
            return JSONResponse({"error": f"no site {site!r}"}, status_code=404)
        return JSONResponse(_clean(body))

    @app.get("/gui/api/tech")
    def tech_data() -> Response:
        return JSONResponse(_clean(data.tech(store)))

    return app
