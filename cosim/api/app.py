"""The FastAPI app of ``s4g api``: the DSF-SE compatible simulation API at ``/se``, study jobs at ``/api``, the
Professional GUI at ``/``, the OpenAPI document at ``/openapi.json``.

DSF-SE paths (the original S4G simulation engine's, as its Professional GUI called them):

=======================================  ====================================================================
``POST /se/simulation``                  a grid (DSF-SE or pandapower JSON) -> its id (a JSON string)
``PUT  /se/commands/run/{id}``           run it: ``sim_duration_in_hours`` (or ``duration``), thresholds
``GET  /se/commands/status/{id}``        progress, a number 0..100
``PUT  /se/commands/abort/{id}``         stop the run
``GET  /se/simulation/{id}``             results: voltages, currents, losses, powers (+ nodes, critical nodes)
=======================================  ====================================================================

Additions: ``GET /se/simulation`` (list), ``GET /se/simulation/{id}/state`` and ``/grid`` (single-line
layout), ``DELETE /se/simulation/{id}``; ``/api/scenarios``, ``/api/studies`` (submit, list, status, cancel,
table as JSON / CSV / Parquet, report). Access goes through the shared web gate (:mod:`cosim.gui.auth`):
reading needs the viewer role, changing anything the engineer role (plus Origin and CSRF checks, or a bearer
token); without a users file everyone is the local engineer and the server binds 127.0.0.1.
"""

from __future__ import annotations

import io
import math
from functools import partial
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cosim.gui.auth import Gate, Reply, gui_auth

from .errors import ApiError, BodyLimit
from .grids import parse_body, store_grid
from .jobs import Limits, Registry
from .simulation import RunRequest
from .studies import StudyRequest

STATIC = Path(__file__).parent / "static"
ASSETS = {"pro.js": "text/javascript", "pro.css": "text/css"}
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _need(method: str, path: str) -> str | None:
    if path.startswith(("/se", "/api")):
        return "engineer" if method in UNSAFE else "viewer"
    return None  # the page, its assets, the OpenAPI document and /auth/ (the gate answers those)


def create_api_app(registry: Registry | None = None, *, users: str | None = None, auth: Gate | None = None,
                   limits: Limits | None = None, audit_log: str | Path | None = None) -> FastAPI:
    """``auth``: any object with the gate interface; else a users file (``users``) or open access as the local
    engineer. Changing requests are audited (``audit_log``: also appended to that JSON-lines file)."""
    reg = registry or Registry(limits=limits or Limits())
    app = FastAPI(title="S4G DSF-SE API and studies", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="The S4G simulation engine's REST API (DSF-SE, /se) on this framework's grid "
                              "simulator, and what-if studies (/api). See docs/api.md.")
    gate: Gate = auth or gui_auth(users, audit_log=audit_log)
    app.state.registry, app.state.auth = reg, gate
    plotly_cache: dict[str, str] = {}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        reasons = []
        for e in exc.errors()[:10]:
            loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
            reasons.append(f"{loc or 'body'}: {e.get('msg', 'invalid')}")
        return JSONResponse({"error": "; ".join(reasons) or "invalid request"}, status_code=422)

    @app.middleware("http")
    async def access(request: Request, call_next: Any) -> Response:
        path = request.url.path
        body = await request.body() if path.startswith("/auth/") else b""
        headers = {k.lower(): v for k, v in request.headers.items()}
        action = f"{request.method} {path}" if request.method in UNSAFE and not path.startswith("/auth/") else None
        ask = partial(gate.gate, request.method, path, headers, body, host=request.headers.get("host", ""),
                      need=_need(request.method, path), action=action,
                      peer=request.client.host if request.client else "")
        # a login (a password hash) or an audited change off the event loop; a read is a session lookup, cheaper
        # than the thread hop (which doubled a status poll's cost)
        answer = await run_in_threadpool(ask) if path.startswith("/auth/") or action else ask()
        if isinstance(answer, Reply) or (hasattr(answer, "status") and hasattr(answer, "body")):
            return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)
        request.state.who = answer
        response: Response = await call_next(request)
        return response

    # -- the page ------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html", headers={"Cache-Control": "no-store"})

    @app.get("/static/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name == "plotly.min.js":
            if "js" not in plotly_cache:
                plotly_cache["js"] = _plotly_js()
            return Response(plotly_cache["js"], media_type="text/javascript",
                            headers={"Cache-Control": "max-age=86400"})
        if name not in ASSETS:
            raise ApiError(404, f"no asset {name!r}")
        return FileResponse(STATIC / name, media_type=ASSETS[name], headers={"Cache-Control": "no-store"})

    # -- DSF-SE ------------------------------------------------------------------------------------------
    @app.post("/se/simulation", tags=["DSF-SE"], summary="Upload a grid (DSF-SE or pandapower JSON); its id")
    async def post_grid(request: Request) -> Response:
        raw = await request.body()
        doc = parse_body(raw)
        grid = await run_in_threadpool(store_grid, doc, raw, reg.folder / "grids")  # type: ignore[operator]
        reg.add_grid(grid)
        return JSONResponse(grid.id, status_code=201)

    @app.get("/se/simulation", tags=["DSF-SE"], summary="Every grid with the state of its simulation")
    def list_grids() -> list[dict[str, Any]]:
        return [{**job.grid.summary(), **job.status()} for job in list(reg.grids.values())]

    @app.put("/se/commands/run/{gid}", tags=["DSF-SE"], summary="Run the simulation of a grid")
    def run(gid: str, req: RunRequest, request: Request) -> Response:
        reg.run(gid, req, _user(request))
        return JSONResponse(f"simulation {gid} started: {req.steps} steps of {req.step_min:g} min", status_code=202)

    @app.get("/se/commands/status/{gid}", tags=["DSF-SE"], summary="Progress in % (a number, as the original)")
    async def status(gid: str) -> float:  # polled: async, no thread hop (it only reads a number)
        return float(reg.grid(gid).status()["progress"])

    def abort(gid: str) -> Response:
        job = reg.grid(gid)
        if not job.running:
            raise ApiError(409, f"simulation {gid} is not running (state {job.state})")
        job.abort()
        job.wait(30)
        return JSONResponse(f"simulation {gid} {job.state}")

    for method in ("PUT", "POST"):
        app.add_api_route("/se/commands/abort/{gid}", abort, methods=[method], tags=["DSF-SE"],
                          summary="Stop the running simulation", operation_id=f"abort_{method.lower()}")

    @app.get("/se/simulation/{gid}", tags=["DSF-SE"], summary="Results: voltages, currents, losses per node")
    def results(gid: str) -> Response:
        job = reg.grid(gid)
        if job.result is None:
            raise ApiError(409, f"no results: simulation {gid} is {job.state}"
                                + (f" ({job.error})" if job.error else ""))
        return JSONResponse(_finite(job.result))

    @app.get("/se/simulation/{gid}/state", tags=["DSF-SE"], summary="State, progress and error of a run")
    async def state(gid: str) -> dict[str, Any]:
        return reg.grid(gid).status()

    @app.get("/se/simulation/{gid}/grid", tags=["DSF-SE"], summary="The grid's single-line layout")
    def grid_layout(gid: str) -> dict[str, Any]:
        g = reg.grid(gid).grid
        return {**g.summary(), **g.layout}

    @app.delete("/se/simulation/{gid}", tags=["DSF-SE"], summary="Forget a grid (a running simulation stops)")
    def delete(gid: str) -> Response:
        reg.delete_grid(gid)
        return Response(status_code=204)

    # -- studies ------------------------------------------------------------------------------------------
    @app.get("/api/scenarios", tags=["studies"], summary="Base scenarios a study may name")
    def scenarios() -> list[str]:
        return reg.scenarios()

    @app.get("/api/scenarios/{name}", tags=["studies"], summary="A base scenario's variants, devices and period")
    def scenario(name: str) -> dict[str, Any]:
        return reg.scenario(name)

    @app.post("/api/studies", tags=["studies"], summary="Submit a study (YAML text) and start it")
    def post_study(req: StudyRequest, request: Request) -> Response:
        job = reg.submit_study(req, _user(request))
        return JSONResponse(job.status(), status_code=201)

    @app.get("/api/studies", tags=["studies"], summary="Every study and its state")
    def list_studies() -> list[dict[str, Any]]:
        return [s.status() for s in list(reg.studies.values())]

    @app.get("/api/studies/{sid}", tags=["studies"], summary="State and progress of a study")
    async def study_status(sid: str) -> dict[str, Any]:
        return reg.study(sid).status()

    @app.post("/api/studies/{sid}/cancel", tags=["studies"], summary="Stop a study (what finished is kept)")
    def cancel(sid: str) -> dict[str, Any]:
        job = reg.study(sid)
        job.runner.cancel()
        return job.status()

    @app.get("/api/studies/{sid}/table", tags=["studies"],
             summary="The table: one row per variant (format=json | csv | parquet)")
    def table(sid: str, format: str = "json") -> Response:
        job = reg.study(sid)
        if format == "json":
            return JSONResponse(job.rows())
        if format not in ("csv", "parquet"):
            raise ApiError(422, f"format must be json, csv or parquet, found {format!r}")
        path = job.out / "table.parquet"
        if not path.is_file():
            raise ApiError(409, f"study {sid} has no table file yet (state {job.status()['state']})")
        if format == "parquet":
            return FileResponse(path, media_type="application/vnd.apache.parquet",
                                filename=f"{job.name}.parquet")
        buf = io.StringIO()
        job.runner.table().to_csv(buf, index=False)
        return Response(buf.getvalue(), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="{job.name}.csv"'})

    @app.get("/api/studies/{sid}/report", tags=["studies"], summary="The study's self-contained HTML report")
    def report(sid: str) -> Response:
        job = reg.study(sid)
        path = job.out / "report.html"
        if not path.is_file():
            raise ApiError(409, f"study {sid} has no report yet (state {job.status()['state']})")
        return HTMLResponse(path.read_text(encoding="utf-8"))

    app.add_middleware(BodyLimit, max_bytes=reg.limits.max_body_bytes)  # outermost: before anything reads
    return app


def _user(request: Request) -> str:
    """Who asked (the gate's principal; "local" under open access): the owner a per-user quota counts."""
    return str(getattr(getattr(request.state, "who", None), "user", "local"))


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x
