"""The SensorThings API server (FastAPI): ``GET /v1.1/...`` over a :class:`cosim.sta.store.Store`.

``create_app(store)`` builds the ASGI app; ``HttpServer(app)`` runs it with uvicorn on a thread (tests, the live
run) and ``serve_forever`` in the foreground (``s4g sta serve``). Errors answer as FROST does:
``{"code": 400, "type": "error", "message": "..."}`` with 400 for a query the server cannot answer as asked and
404 for a path that names nothing; nothing a client sends ends in a 500.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from .engine import VERSION, Engine, NotFound
from .filter import QueryError
from .store import Store

log = logging.getLogger(__name__)
MAX_QUERY_CHARS = 8000


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"code": status, "type": "error", "message": message}, status_code=status)


def add_sta_routes(app: FastAPI, engine: Engine) -> None:
    """Mount the read API at ``/v1.1`` on ``app``."""

    def answer(request: Request, path: str) -> Response:
        query = request.url.query
        if len(query) > MAX_QUERY_CHARS:
            return _error(400, f"query string longer than {MAX_QUERY_CHARS} characters")
        base = f"{str(request.base_url).rstrip('/')}/{VERSION}"
        try:
            status, body, ctype = engine.get(path, query, base)
        except QueryError as exc:
            return _error(400, str(exc))
        except NotFound as exc:
            return _error(404, str(exc))
        if status == 204:
            return Response(status_code=204)
        if ctype.startswith("text/plain"):
            return PlainTextResponse(body)
        return JSONResponse(body)

    @app.get(f"/{VERSION}")
    def root(request: Request) -> Response:
        return answer(request, "")

    @app.get(f"/{VERSION}/{{path:path}}")
    def resource(request: Request, path: str) -> Response:
        return answer(request, path)

    @app.api_route(f"/{VERSION}/{{path:path}}", methods=["POST", "PATCH", "PUT", "DELETE"])
    def write(path: str) -> Response:
        return _error(405, "this server is read-only over recorded runs; observations arrive over the Data Broker")


def create_app(store: Store, engine: Engine | None = None) -> FastAPI:
    app = FastAPI(title="S4G SensorThings API", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = store
    app.state.engine = engine or Engine(store)
    add_sta_routes(app, app.state.engine)
    return app


def tcp_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn's ``sockets=``. Made with protocol IPPROTO_TCP on purpose: asyncio sets
    TCP_NODELAY on accepted connections only for such sockets, and ``socket.create_server`` makes protocol 0 --
    every response (headers and body written apart) then waited for the client's delayed ACK, 40 ms a request."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if hasattr(socket, "SO_REUSEADDR") and not hasattr(socket, "SO_EXCLUSIVEADDRUSE"):  # as create_server
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


class HttpServer:
    """An ASGI app served by uvicorn on a background thread, on a socket bound before the thread starts."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.sock = tcp_listener(host, port)
        self.host, self.port = self.sock.getsockname()[:2]
        config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        self.server = uvicorn.Server(config)
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> str:
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name=f"http-{self.port}", daemon=True)
        self.thread.start()
        while not self.server.started and self.thread.is_alive():
            self.thread.join(0.01)
        if not self.server.started:
            raise RuntimeError(f"HTTP server on {self.url} did not start")
        return self.url

    def close(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(10)
            self.thread = None
        self.sock.close()

    def __enter__(self) -> HttpServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
