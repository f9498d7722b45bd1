"""Our CSMS endpoint (the "SMX side"): a websocket server that charge points connect to.

Charge points connect to ``ws://HOST:PORT/<cp_id>`` offering the subprotocol ``ocpp1.6`` or ``ocpp2.0.1``.
Only expected ids are admitted (a driver registers its charge point with :meth:`CsmsServer.expect`; the
stand-alone server may admit any); an unknown id gets HTTP 404, a subprotocol other than the one expected
for that id HTTP 400, a connection beyond ``max_connections`` HTTP 503, all at the handshake. A connection
that does not boot within ``boot_timeout_s`` or stays silent for ``idle_timeout_s`` is closed (half-open
peers do not hold a slot). Each connected station is served by the session its admission names (a
:mod:`devices.wallbox.session` factory: our :class:`~devices.wallbox.session.CsmsSession` by default, a
proxy to a legacy CSMS when the driver asks for one).

What the station reports is kept in a :class:`~devices.wallbox.station_state.StationState` that outlives
connections (a charge point that reconnects keeps its transaction). Security profiles 1-3 (basic auth, TLS,
client certificates; :mod:`devices.wallbox.security`) are checked at the handshake too (401/403, or no TLS
handshake at all for a revoked or foreign certificate); an allow-list (``expect``, or ``--ids``) refuses every
other id with 404. Servers are shared in the process: every
driver and virtual device asking for the same (host, port) gets the same server (:func:`acquire` /
:func:`release`, ref-counted). Every rejection is counted in :attr:`CsmsServer.stats`; charge-point ids are
escaped before they reach a log line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from http import HTTPStatus
from typing import TypeGuard
from collections.abc import Callable, Sequence
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from devices import tls
from devices.wallbox.rpc import SUBPROTOCOL, VERSION_OF_SUBPROTOCOL, Payload, printable
from devices.wallbox.security import CsmsSecurity, _digest, check_password
from devices.wallbox.session import CsmsSession, Expected, Session, SessionFactory
from devices.wallbox.station_state import StationState

log = logging.getLogger(__name__)

MAX_ID_CHARS = 255  # a charge point id longer than this is no id (and would cost memory per attempt)


class CsmsServer:
    """The websocket server; one per (host, port) in the process (see :func:`acquire`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, accept_any: bool = False,
                 heartbeat_s: int = 300, request_timeout_s: float = 30.0, max_connections: int = 1024,
                 boot_timeout_s: float = 60.0, idle_timeout_s: float | None = None,
                 any_connectors: int = 8, security: CsmsSecurity | None = None) -> None:
        self.host, self.port = host, port
        self.security = security or CsmsSecurity()
        self._password_digests: dict[str, bytes] = {}  # cp_id -> SHA-256 of its basic-auth password
        self.accept_any = accept_any
        self.heartbeat_s = heartbeat_s
        self.request_timeout_s = request_timeout_s
        self.max_connections = max_connections
        self.boot_timeout_s = boot_timeout_s
        #: no frame for this long closes the connection (default: two heartbeat intervals and a minute)
        self.idle_timeout_s = idle_timeout_s if idle_timeout_s is not None else 2 * heartbeat_s + 60
        self.any_connectors = any_connectors  # connectors a station admitted without a driver may have
        #: rejected frames by error code, refused handshakes, closed idle connections, ...
        self.stats: Counter[str] = Counter()
        self.connections = 0
        self.expected: dict[str, Expected] = {}
        self.states: dict[str, StationState] = {}
        self.sessions: dict[str, Session] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refs = 0
        self._expected_changed = asyncio.Event()
        #: called with (station state, action, payload) for every CALL a station makes (monitoring, tests)
        self.listeners: list[Callable[[StationState, str, Payload], object]] = []  # what they return is ignored

    def emit(self, state: StationState, action: str, payload: Payload) -> None:
        for listener in self.listeners:
            listener(state, action, payload)

    async def start(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._server = await serve(self._handle, self.host, self.port, process_request=self._process_request,
                                   select_subprotocol=self._select_subprotocol,
                                   subprotocols=list(SUBPROTOCOL.values()), ping_interval=20, ping_timeout=20,
                                   close_timeout=2, compression=None, ssl=self.security.ssl)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for s in list(self.sessions.values()):
            await asyncio.gather(s.close(), return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def url(self) -> str:
        return f"{self.security.scheme}://{self.host}:{self.port}/"

    # -- admission -----------------------------------------------------------------------------------------
    def expect(self, cp_id: str, version: str, session: SessionFactory | None = None,
               connectors: int = 1, password: str | None = None) -> StationState:
        """Admit ``cp_id`` speaking ``version``, served by ``session`` (default: we are its CSMS); ``password``
        is its basic-auth password (security profiles 1 and 2)."""
        if password is not None:
            self._password_digests[cp_id] = _digest(check_password(password))
        self.expected[cp_id] = Expected(version, session, connectors)
        self._expected_changed.set()
        state = self.states.get(cp_id)
        if state is None or state.version != version:
            state = self.states[cp_id] = StationState(cp_id, version)
        state.connectors = connectors
        return state

    async def forget(self, cp_id: str) -> None:
        """Stop managing ``cp_id``: its connection is closed and later attempts are refused."""
        self.expected.pop(cp_id, None)
        session = self.sessions.pop(cp_id, None)
        if session is not None:
            await asyncio.gather(session.close(), return_exceptions=True)

    async def wait_expected(self, cp_id: str, timeout_s: float) -> bool:
        """Until a driver admits ``cp_id`` (in-process virtual charge points use it to avoid a refused first try)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while cp_id not in self.expected and not self.accept_any:
            self._expected_changed.clear()
            try:
                await asyncio.wait_for(self._expected_changed.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return False
        return True

    @staticmethod
    def _cp_id(path: str) -> str:
        return unquote(urlsplit(path).path.rstrip("/").rsplit("/", 1)[-1])

    def _version_for(self, cp_id: str, offered: list[str]) -> str | None:
        exp = self.expected.get(cp_id)
        if exp is not None:
            return exp.version if SUBPROTOCOL[exp.version] in offered else None
        for sub in offered:
            if sub in VERSION_OF_SUBPROTOCOL:
                return VERSION_OF_SUBPROTOCOL[sub]
        return None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, why: str, text: str) -> Response:
        self.stats[f"refused_{why}"] += 1
        level = logging.WARNING if self.stats[f"refused_{why}"] <= 5 else logging.DEBUG
        log.log(level, "refused a charge point: %s", printable(text, 200))
        return connection.respond(status, text + "\n")

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = self._cp_id(request.path)
        if len(cp_id) > MAX_ID_CHARS:
            return self._refuse(connection, HTTPStatus.BAD_REQUEST, "long_id",
                                f"charge point id longer than {MAX_ID_CHARS} characters")
        if not cp_id or (cp_id not in self.expected and not self.accept_any):
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown_id",
                                f"unknown charge point {printable(cp_id)!r}")
        refusal = self.security.refusal(cp_id, request.headers.get("Authorization"),
                                        connection.transport.get_extra_info("ssl_object"),
                                        self._password_digests.get(cp_id))
        if refusal is not None:
            status, why, text = refusal
            response = self._refuse(connection, status, why, f"charge point {printable(cp_id)!r}: {text}")
            if status == HTTPStatus.UNAUTHORIZED:
                response.headers["WWW-Authenticate"] = 'Basic realm="OCPP", charset="UTF-8"'
            return response
        if self.connections >= self.max_connections and cp_id not in self.sessions:  # a reconnect replaces
            return self._refuse(connection, HTTPStatus.SERVICE_UNAVAILABLE, "cap",
                                f"more than {self.max_connections} connections")
        offered = [s.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for s in h.split(",")]
        if self._version_for(cp_id, offered) is None:
            want = self.expected.get(cp_id)
            self.stats["refused_subprotocol"] += 1
            log.warning("refused charge point %r: offered subprotocols %s", printable(cp_id),
                        printable(offered, 120))
            return connection.respond(HTTPStatus.BAD_REQUEST,
                                      f"subprotocol {SUBPROTOCOL[want.version] if want else 'ocpp1.6/ocpp2.0.1'} "
                                      f"required, offered: {', '.join(offered) or 'none'}\n")
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        assert connection.request is not None  # subprotocols are chosen while handling the opening request
        version = self._version_for(self._cp_id(connection.request.path), list(offered))
        return SUBPROTOCOL[version] if version else None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None  # the handler runs after the opening handshake
        cp_id = self._cp_id(ws.request.path)
        version = VERSION_OF_SUBPROTOCOL.get(ws.subprotocol or "")
        if version is None:
            await ws.close(1002, "subprotocol required")
            return
        exp = self.expected.get(cp_id) or Expected(version, connectors=self.any_connectors)
        state = self.states.get(cp_id)
        if state is None or state.version != version:
            self._prune_states()
            state = self.states[cp_id] = StationState(cp_id, version, connectors=exp.connectors)
        old = self.sessions.get(cp_id)
        if old is not None:  # a station that reconnects replaces its old connection
            await asyncio.gather(old.close(), return_exceptions=True)
        make = exp.session or CsmsSession
        session: Session = make(self, state, ws, timeout_s=self.request_timeout_s)
        self.sessions[cp_id] = session
        self.connections += 1
        state.connected = True
        state.booted = False
        peer = tls.peer_identity(ws.transport.get_extra_info("ssl_object"))
        state.tls_serial = peer.serial.lower().lstrip("0") if peer is not None else ""
        await state.notify()
        log.info("charge point %s connected (OCPP %s)", printable(cp_id), version)
        watchdog = asyncio.create_task(self._watch(session, ws))
        try:
            await session.run()
        except ConnectionClosed:
            pass
        finally:
            self.connections -= 1
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            current = self.sessions.get(cp_id)
            if current is session:
                del self.sessions[cp_id]
            if current is session or current is None:  # not replaced by a newer connection
                state.connected = False
                state.booted = False
            await state.notify()
            log.info("charge point %s disconnected", printable(cp_id))

    async def _watch(self, session: Session, ws: ServerConnection) -> None:
        """Close a connection that does not boot in time or goes silent (a half-open or idle peer)."""
        opened = time.monotonic()
        while True:
            now = time.monotonic()
            if not session.state.booted and now - opened > self.boot_timeout_s:
                why, text = "boot_timeout", f"no accepted boot within {self.boot_timeout_s:g} s"
            elif now - session.last_rx > self.idle_timeout_s:
                why, text = "idle_timeout", f"silent for {self.idle_timeout_s:g} s"
            else:
                due = min(opened + self.boot_timeout_s if not session.state.booted else float("inf"),
                          session.last_rx + self.idle_timeout_s)
                await asyncio.sleep(max(due - now, 0.0) + 0.01)
                continue
            self.stats[f"closed_{why}"] += 1
            log.info("charge point %s: closing the connection: %s", printable(session.state.cp_id), text)
            await ws.close(1008 if why == "boot_timeout" else 1001, text)
            return

    def _prune_states(self, keep: int = 4096) -> None:
        """Forget stations that are neither admitted nor connected when there are many (accept_any servers)."""
        if len(self.states) < keep:
            return
        for cp_id in [c for c, st in self.states.items() if not st.connected and c not in self.expected]:
            del self.states[cp_id]

    async def wait_booted(self, cp_id: str, timeout_s: float) -> Session | None:
        """The booted session of ``cp_id``, waiting up to ``timeout_s``; None if it does not come."""
        state = self.states.get(cp_id)
        if state is None:
            return None
        ok = await state.wait_for(lambda: state.booted and cp_id in self.sessions, timeout_s)
        return self.sessions.get(cp_id) if ok else None


# -- process-wide registry ---------------------------------------------------------------------------------
_servers: dict[tuple[str, int], CsmsServer] = {}
_defaults: dict[tuple[str, int], CsmsServer] = {}  # (host, id(loop)): one default server per I/O loop
_registry_locks: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def _lock() -> asyncio.Lock:
    """One registry lock per event loop (asyncio locks belong to a loop)."""
    loop = asyncio.get_running_loop()
    entry = _registry_locks.get(id(loop))
    if entry is None or entry[0] is not loop:
        for key in [k for k, (lp, _) in _registry_locks.items() if lp.is_closed()]:
            del _registry_locks[key]
        entry = _registry_locks[id(loop)] = (loop, asyncio.Lock())
    return entry[1]


def _usable(server: CsmsServer | None) -> TypeGuard[CsmsServer]:
    if server is None or server.loop is None:
        return False
    if server.loop is asyncio.get_running_loop():
        return True
    if server.loop.is_closed():
        return False
    raise RuntimeError(f"the CSMS on {server.host}:{server.port} runs on another event loop")


async def acquire(host: str, port: int = 0, *, accept_any: bool = False,
                  security: CsmsSecurity | None = None) -> CsmsServer:
    """The shared server for (host, port), started if needed. Port 0 = the process's default loopback CSMS
    for ``host`` (all virtual charge points of a run share it). Every user of one server must ask for the
    same ``security`` (ValueError otherwise: a driver must not weaken a secure CSMS, nor the other way round)."""
    loop_key = (host, id(asyncio.get_running_loop()))
    async with _lock():
        server = _defaults.get(loop_key) if port == 0 else _servers.get((host, port))
        if _usable(server) and security is not None and server.security is not security:
            raise ValueError(f"the CSMS on {host}:{server.port} runs with security profile "
                             f"{server.security.profile}; this driver asks for another setting")
        if not _usable(server):
            server = CsmsServer(host, port, accept_any=accept_any, security=security)
            await server.start()
            _servers[(host, server.port)] = server
            if port == 0:
                _defaults[loop_key] = server
        assert server is not None
        server.refs += 1
        return server


async def release(server: CsmsServer) -> None:
    async with _lock():
        server.refs -= 1
        if server.refs > 0:
            return
        if _servers.get((server.host, server.port)) is server:
            del _servers[(server.host, server.port)]
        for key in [k for k, v in _defaults.items() if v is server]:
            del _defaults[key]
    await server.stop()
