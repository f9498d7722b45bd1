"""Our CSMS endpoint (the "SMX side"): a websocket server that charge points connect to.

Charge points connect to ``ws://HOST:PORT/<cp_id>`` offering the subprotocol ``ocpp1.6`` or ``ocpp2.0.1``.
Only expected ids are admitted (a driver registers its charge point with :meth:`CsmsServer.expect`; the
stand-alone server may admit any); an unknown id gets HTTP 404 and a subprotocol other than the one
expected for that id gets HTTP 400, both at the handshake. Each connected station is served by a
:class:`CsmsSession` (we answer its calls) or, when the driver names an upstream CSMS, by a
:class:`devices.wallbox.proxy.ProxySession` (the upstream answers; we observe and inject).

What the station reports is kept in a :class:`StationState` that outlives connections (a charge point
that reconnects keeps its transaction). Servers are shared in the process: every driver and virtual device
asking for the same (host, port) gets the same server (:func:`acquire` / :func:`release`, ref-counted).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devices.wallbox import profiles as pf
from devices.wallbox.model import STATUS_NAMES
from devices.wallbox.rpc import SUBPROTOCOL, VERSION_OF_SUBPROTOCOL, Endpoint, Payload

log = logging.getLogger(__name__)

_STATUS_CODE = {name: i for i, name in enumerate(STATUS_NAMES)}
_STATE_201 = {"Charging": 2, "SuspendedEVSE": 3, "SuspendedEV": 4, "EVConnected": 1, "Idle": 1}
_CONNECTOR_201 = {"Available": 0, "Reserved": 6, "Unavailable": 7, "Faulted": 8}
_tx_ids = itertools.count(1)


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


@dataclass
class StationState:
    """Everything a charge point has told us; survives reconnects."""

    cp_id: str
    version: str
    connected: bool = False
    booted: bool = False
    boots: int = 0
    epoch: int = 0  # moves on at every boot and when someone else changes the profiles (proxy upstream)
    boot: dict = field(default_factory=dict)
    status_code: float = math.nan
    error_code: str = ""
    connector_status: str = ""  # 2.0.1
    charging_state: str = ""  # 2.0.1
    tx_id: str | None = None
    tx_ended_plugged: bool = False  # 2.0.1: transaction over, cable still in (-> Finishing)
    tx_start_wh: float = math.nan
    last_session_wh: float = 0.0
    e_wh: float = math.nan
    p_w: float = math.nan
    i_phase_a: list[float] = field(default_factory=lambda: [math.nan, math.nan, math.nan])
    p_offered_w: float = math.nan
    i_offered_a: float = math.nan
    soc: float = math.nan
    cp_time: datetime | None = None
    meter_seq: int = 0
    transactions_started: int = 0
    transactions_stopped: int = 0
    meter_messages: int = 0
    confirmed_limit_w: float = math.nan
    last_seen: float = 0.0
    _changed: asyncio.Condition | None = None

    @property
    def changed(self) -> asyncio.Condition:
        if self._changed is None:
            self._changed = asyncio.Condition()
        return self._changed

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(predicate), timeout_s)
            except TimeoutError:
                return False
        return True

    # -- derived values ------------------------------------------------------------------------------------
    @property
    def session_active(self) -> bool:
        return self.tx_id is not None

    @property
    def status(self) -> float:
        if self.version == "1.6":
            return self.status_code
        cs = self.connector_status
        if cs in _CONNECTOR_201:
            return float(_CONNECTOR_201[cs])
        if cs == "Occupied":
            if self.tx_id is not None:
                return float(_STATE_201.get(self.charging_state, 1))
            return 5.0 if self.tx_ended_plugged else 1.0
        return math.nan

    def session_wh(self) -> float:
        if self.tx_id is not None:
            return self.e_wh - self.tx_start_wh if math.isfinite(self.tx_start_wh) else math.nan
        return self.last_session_wh

    def measurement(self) -> dict[str, float]:
        code = self.status
        phases = [x for x in self.i_phase_a if math.isfinite(x)]
        return {
            "p_w": self.p_w, "q_var": 0.0 if math.isfinite(self.p_w) else math.nan, "e_wh": self.e_wh,
            "e_session_wh": self.session_wh(), "soc": self.soc,
            "i_a": max(phases) if phases else math.nan,
            "i_l1_a": self.i_phase_a[0], "i_l2_a": self.i_phase_a[1], "i_l3_a": self.i_phase_a[2],
            "status": code, "connected": float(1 <= code <= 5) if math.isfinite(code) else math.nan,
            "session_active": float(self.session_active),
            "p_max_w": self.p_offered_w if math.isfinite(self.p_offered_w) else self.confirmed_limit_w,
            "i_max_a": self.i_offered_a,
        }

    # -- observing the station's messages (our CSMS and the proxy use the same) -------------------------------
    def _seen_time(self, ts: Any) -> None:
        try:
            t = pf.parse_time(ts) if ts else None
        except pf.ProfileError:
            t = None
        if t is not None and (self.cp_time is None or t > self.cp_time):
            self.cp_time = t

    def _meter(self, meter_values: list[dict], tx_match: bool = True) -> None:
        for mv in meter_values or []:
            self._seen_time(mv.get("timestamp"))
            for sv in mv.get("sampledValue", []):
                measurand = sv.get("measurand", "Energy.Active.Import.Register")
                context = sv.get("context", "Sample.Periodic")
                unit = sv.get("unit") or (sv.get("unitOfMeasure") or {}).get("unit")
                mult = 10 ** int((sv.get("unitOfMeasure") or {}).get("multiplier", 0))
                v = _num(sv.get("value")) * mult
                if unit in ("kW", "kWh"):
                    v *= 1000.0
                if measurand == "Energy.Active.Import.Register":
                    if context == "Transaction.Begin":
                        if tx_match:
                            self.tx_start_wh = v
                        continue
                    self.e_wh = v
                elif measurand == "Power.Active.Import":
                    self.p_w = v
                elif measurand == "Current.Import":
                    idx = {"L1": 0, "L2": 1, "L3": 2, "L1-N": 0, "L2-N": 1, "L3-N": 2}.get(sv.get("phase", ""))
                    if idx is None:
                        self.i_phase_a = [v, v, v]
                    else:
                        self.i_phase_a[idx] = v
                elif measurand == "Power.Offered":
                    self.p_offered_w = v
                elif measurand == "Current.Offered":
                    self.i_offered_a = v
                elif measurand == "SoC":
                    self.soc = v / 100.0
        if meter_values:
            self.meter_seq += 1

    def observe_call(self, action: str, p: Payload) -> None:
        """A CALL from the station (before it is answered)."""
        self.last_seen = time.monotonic()
        if action == "BootNotification":
            self.boot = dict(p)
        elif action == "StatusNotification":
            self._seen_time(p.get("timestamp"))
            if self.version == "1.6":
                if p.get("connectorId") == 0 and p["status"] not in ("Faulted", "Unavailable"):
                    return
                self.status_code = float(_STATUS_CODE.get(p["status"], math.nan))
                self.error_code = p.get("errorCode", "")
            else:
                self.connector_status = p["connectorStatus"]
                if p["connectorStatus"] == "Available":
                    self.tx_ended_plugged = False
        elif action == "MeterValues":
            tx = p.get("transactionId")
            self._meter(p.get("meterValue", []), tx_match=tx is None or str(tx) == str(self.tx_id))
            self.meter_messages += 1
        elif action == "StartTransaction":
            self._seen_time(p.get("timestamp"))
            pass  # the transaction exists once the CSMS has answered (observe_result)
        elif action == "StopTransaction":
            self._seen_time(p.get("timestamp"))
            end = float(p["meterStop"])
            start = self.tx_start_wh
            for mv in p.get("transactionData") or []:
                for sv in mv.get("sampledValue", []):
                    if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                        if sv.get("context") == "Transaction.End":
                            end = _num(sv["value"]) * (1000.0 if sv.get("unit") == "kWh" else 1.0)
                        elif sv.get("context") == "Transaction.Begin" and not math.isfinite(start):
                            start = _num(sv["value"]) * (1000.0 if sv.get("unit") == "kWh" else 1.0)
            if self.tx_id is not None and str(p["transactionId"]) == self.tx_id:
                self.last_session_wh = end - start if math.isfinite(start) else math.nan
                self.tx_id = None
                self.tx_start_wh = math.nan
            self.e_wh = end
            self.transactions_stopped += 1
        elif action == "TransactionEvent":
            self._seen_time(p.get("timestamp"))
            info = p["transactionInfo"]
            event = p["eventType"]
            if event == "Started":
                self.tx_id = info["transactionId"]
                self.tx_start_wh = math.nan
                self.tx_ended_plugged = False
                self.transactions_started += 1
            if "chargingState" in info:
                self.charging_state = info["chargingState"]
            mine = self.tx_id == info["transactionId"]
            self._meter(p.get("meterValue", []), tx_match=mine)
            if p.get("meterValue"):
                self.meter_messages += 1
            if event == "Ended" and mine:
                self.last_session_wh = self.e_wh - self.tx_start_wh if math.isfinite(self.tx_start_wh) else math.nan
                self.tx_id = None
                self.tx_start_wh = math.nan
                self.tx_ended_plugged = info.get("stoppedReason") != "EVDisconnected"
                self.transactions_stopped += 1

    def observe_result(self, action: str, request: Payload, reply: Payload) -> None:
        """The answer to a station's CALL (ours or the upstream's)."""
        if action == "BootNotification" and reply.get("status") == "Accepted":
            self.booted = True
            self.boots += 1
            self.epoch += 1
        elif action == "StartTransaction":
            self.tx_id = str(reply["transactionId"])
            self.tx_start_wh = float(request["meterStart"])
            self.transactions_started += 1


# ======================================================================================================
class Session:
    """Our side of one connected charge point. ``request`` sends OUR calls to the station."""

    def __init__(self, server: "CsmsServer", state: StationState, ws: ServerConnection, *,
                 timeout_s: float = 30.0) -> None:
        self.server, self.state, self.ws = server, state, ws
        self.version = state.version
        self.endpoint = Endpoint(state.cp_id, ws, state.version, timeout_s=timeout_s)

    async def run(self) -> None:
        await self.endpoint.run()

    async def request(self, action: str, payload: Payload, timeout_s: float) -> Payload:
        return await self.endpoint.request(action, payload, timeout_s=timeout_s)

    async def close(self) -> None:
        await self.ws.close()


class CsmsSession(Session):
    """We are the CSMS: we answer the station's calls."""

    def __init__(self, server: "CsmsServer", state: StationState, ws: ServerConnection, **kw: Any) -> None:
        super().__init__(server, state, ws, **kw)
        actions = ["BootNotification", "Heartbeat", "StatusNotification", "Authorize", "MeterValues",
                   "DataTransfer", "FirmwareStatusNotification", "SecurityEventNotification"]
        actions += (["StartTransaction", "StopTransaction", "DiagnosticsStatusNotification"] if self.version == "1.6"
                    else ["TransactionEvent", "NotifyEvent", "NotifyReport", "LogStatusNotification",
                          "NotifyChargingLimit", "NotifyEVChargingNeeds"])
        for action in actions:
            self.endpoint.handlers[action] = self._handler(action)

    def _handler(self, action: str) -> Callable[[Payload], Any]:
        async def handle(p: Payload) -> Payload:
            self.state.observe_call(action, p)
            reply = self.answer(action, p)
            self.state.observe_result(action, p, reply)
            self.server.emit(self.state, action, p)
            await self.state.notify()
            return reply
        return handle

    def answer(self, action: str, p: Payload) -> Payload:
        now = pf.format_time(datetime.now(timezone.utc))
        accepted = {"status": "Accepted"}
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": self.server.heartbeat_s}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "Authorize":
            return {"idTagInfo": accepted} if self.version == "1.6" else {"idTokenInfo": accepted}
        if action == "StartTransaction":
            return {"transactionId": next(_tx_ids), "idTagInfo": accepted}
        if action == "StopTransaction":
            return {"idTagInfo": accepted} if p.get("idTag") else {}
        if action == "TransactionEvent":
            return {"idTokenInfo": accepted} if p.get("idToken") else {}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        if action == "NotifyEVChargingNeeds":
            return {"status": "Accepted"}
        return {}


# ======================================================================================================
@dataclass
class Expected:
    version: str
    upstream: str | None = None


class CsmsServer:
    """The websocket server; one per (host, port) in the process (see :func:`acquire`)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, accept_any: bool = False,
                 heartbeat_s: int = 300, request_timeout_s: float = 30.0) -> None:
        self.host, self.port = host, port
        self.accept_any = accept_any
        self.heartbeat_s = heartbeat_s
        self.request_timeout_s = request_timeout_s
        self.expected: dict[str, Expected] = {}
        self.states: dict[str, StationState] = {}
        self.sessions: dict[str, Session] = {}
        self._server: Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.refs = 0
        self._expected_changed = asyncio.Event()
        #: called with (station state, action, payload) for every CALL a station makes (monitoring, tests)
        self.listeners: list[Callable[[StationState, str, Payload], None]] = []

    def emit(self, state: StationState, action: str, payload: Payload) -> None:
        for listener in self.listeners:
            listener(state, action, payload)

    async def start(self) -> int:
        self.loop = asyncio.get_running_loop()
        self._server = await serve(self._handle, self.host, self.port, process_request=self._process_request,
                                   select_subprotocol=self._select_subprotocol,
                                   subprotocols=list(SUBPROTOCOL.values()), ping_interval=20, ping_timeout=20,
                                   close_timeout=2, compression=None)
        self.port = self._server.sockets[0].getsockname()[1]
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
        return f"ws://{self.host}:{self.port}/"

    # -- admission -----------------------------------------------------------------------------------------
    def expect(self, cp_id: str, version: str, upstream: str | None = None) -> StationState:
        self.expected[cp_id] = Expected(version, upstream)
        self._expected_changed.set()
        state = self.states.get(cp_id)
        if state is None or state.version != version:
            state = self.states[cp_id] = StationState(cp_id, version)
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

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        cp_id = self._cp_id(request.path)
        if not cp_id or (cp_id not in self.expected and not self.accept_any):
            log.warning("refused charge point %r: unknown id", cp_id)
            return connection.respond(HTTPStatus.NOT_FOUND, f"unknown charge point {cp_id!r}\n")
        offered = [s.strip() for h in request.headers.get_all("Sec-WebSocket-Protocol") for s in h.split(",")]
        if self._version_for(cp_id, offered) is None:
            want = self.expected.get(cp_id)
            log.warning("refused charge point %r: offered subprotocols %s", cp_id, offered)
            return connection.respond(HTTPStatus.BAD_REQUEST,
                                      f"subprotocol {SUBPROTOCOL[want.version] if want else 'ocpp1.6/ocpp2.0.1'} "
                                      f"required, offered: {', '.join(offered) or 'none'}\n")
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Any) -> str | None:
        version = self._version_for(self._cp_id(connection.request.path), list(offered))
        return SUBPROTOCOL[version] if version else None

    async def _handle(self, ws: ServerConnection) -> None:
        cp_id = self._cp_id(ws.request.path)
        version = VERSION_OF_SUBPROTOCOL.get(ws.subprotocol or "")
        if version is None:
            await ws.close(1002, "subprotocol required")
            return
        exp = self.expected.get(cp_id) or Expected(version)
        state = self.states.get(cp_id)
        if state is None or state.version != version:
            state = self.states[cp_id] = StationState(cp_id, version)
        old = self.sessions.get(cp_id)
        if old is not None:  # a station that reconnects replaces its old connection
            await asyncio.gather(old.close(), return_exceptions=True)
        if exp.upstream:
            from devices.wallbox.proxy import ProxySession
            session: Session = ProxySession(self, state, ws, upstream=exp.upstream, timeout_s=self.request_timeout_s)
        else:
            session = CsmsSession(self, state, ws, timeout_s=self.request_timeout_s)
        self.sessions[cp_id] = session
        state.connected = True
        state.booted = False
        await state.notify()
        log.info("charge point %s connected (OCPP %s)", cp_id, version)
        try:
            await session.run()
        except ConnectionClosed:
            pass
        finally:
            current = self.sessions.get(cp_id)
            if current is session:
                del self.sessions[cp_id]
            if current is session or current is None:  # not replaced by a newer connection
                state.connected = False
                state.booted = False
            await state.notify()
            log.info("charge point %s disconnected", cp_id)

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


def _usable(server: CsmsServer | None) -> bool:
    if server is None or server.loop is None:
        return False
    if server.loop is asyncio.get_running_loop():
        return True
    if server.loop.is_closed():
        return False
    raise RuntimeError(f"the CSMS on {server.host}:{server.port} runs on another event loop")


async def acquire(host: str, port: int = 0, *, accept_any: bool = False) -> CsmsServer:
    """The shared server for (host, port), started if needed. Port 0 = the process's default loopback CSMS
    for ``host`` (all virtual charge points of a run share it)."""
    loop_key = (host, id(asyncio.get_running_loop()))
    async with _lock():
        server = _defaults.get(loop_key) if port == 0 else _servers.get((host, port))
        if not _usable(server):
            server = CsmsServer(host, port, accept_any=accept_any)
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
