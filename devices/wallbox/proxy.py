"""The SMX between charge points and a legacy CSMS (the Bolzano site's existing EV SCADA keeps working).

A driver address with ``?upstream=ws://legacy:port/path/`` makes our CSMS serve that charge point as a
proxy: for each station that connects, we open a connection to ``<upstream>/<cp_id>`` with the same
subprotocol and forward both directions transparently:

* station -> upstream: every CALL (boot, status, transactions, meter values, ...) is validated, observed
  (the driver reads the station's state from it) and forwarded unchanged with its own unique id; the
  upstream's answer goes back to the station the same way. The upstream therefore sees the same
  transactions (and transaction ids it assigns itself) and the same meter values.
* upstream -> station: its CALLs (SetChargingProfile, RemoteStart, ...) are forwarded and answered; they
  are serialised with our own calls (OCPP-J allows one outstanding CALL per direction).
* we inject our own calls (the driver's charging profile at a higher stack level, GetCompositeSchedule,
  TriggerMessage) with our own unique ids; their answers are consumed here and never reach the upstream.
  When the upstream installs or clears profiles, the station's ``epoch`` moves on and the driver re-asserts
  its profile at the next read or write (in OCPP 1.6 a profile on the same stack level and purpose would
  replace ours).

Invalid frames are answered by the proxy with the version's CALLERROR and not forwarded. If the upstream
cannot be reached or drops, the station's connection is closed: it reconnects with backoff and keeps its
transaction messages meanwhile, so the upstream loses nothing.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any
from urllib.parse import quote

from ocpp.messages import Call, CallError, CallResult, MessageType
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection

from devices.wallbox.rpc import SUBPROTOCOL, ConnectionLost, Endpoint, OcppFault, printable, validate
from devices.wallbox.session import Session, SessionFactory, SessionHost
from devices.wallbox.station_state import StationState

log = logging.getLogger(__name__)

PROFILE_ACTIONS = ("SetChargingProfile", "ClearChargingProfile")


class _StationSide(Endpoint):
    """Faces the charge point: its calls go upstream, its answers go to whoever asked."""

    def __init__(self, proxy: ProxySession, ws: Any) -> None:
        super().__init__(proxy.state.cp_id, ws, proxy.version, timeout_s=proxy.timeout_s, stats=proxy.server.stats)
        self.proxy = proxy
        self.for_upstream: dict[str, asyncio.Future[Any]] = {}  # upstream calls waiting for the station's answer

    def _resolve(self, uid: str, msg: CallResult | CallError) -> None:
        fut = self.for_upstream.get(uid)
        if fut is not None and not fut.done():
            fut.set_result(msg)
            return
        super()._resolve(uid, msg)

    async def handle_call(self, call: Call) -> None:
        try:
            validate(MessageType.Call, call.action, call.payload, self.version)
        except OcppFault as fault:
            await self.refuse(call, fault)
            return
        state = self.proxy.state
        state.observe_call(call.action, call.payload)
        self.proxy.server.emit(state, call.action, call.payload)
        upstream = self.proxy.upstream_side
        assert upstream is not None  # the station side runs only once the upstream side is connected
        reply = await upstream.forward(call)
        if isinstance(reply, CallResult):
            try:
                validate(MessageType.CallResult, call.action, reply.payload, self.version)
            except OcppFault as fault:
                log.warning("%s: upstream answer to %s is invalid: %s", printable(self.id), call.action,
                            fault.description)
                await self._reply_error(call.unique_id, "InternalError", "the upstream CSMS answered invalidly")
                return
            state.observe_result(call.action, call.payload, reply.payload)
        await self.send_raw(reply.to_json())
        await state.notify()

    async def forward(self, call: Call) -> CallResult | CallError:
        """Pass an upstream CALL to the station, one outstanding CALL at a time (shared with ours)."""
        async with self._request_lock:
            fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self.for_upstream[call.unique_id] = fut
            try:
                await self.send_raw(call.to_json())
                return await asyncio.wait_for(fut, self._response_timeout)
            except TimeoutError:
                return CallError(call.unique_id, "InternalError", "the charge point did not answer in time", {})
            finally:
                self.for_upstream.pop(call.unique_id, None)


class _UpstreamSide(Endpoint):
    """Faces the legacy CSMS: forwards the station's calls, passes the CSMS's calls to the station."""

    def __init__(self, proxy: ProxySession, ws: Any) -> None:
        super().__init__(proxy.state.cp_id + "@upstream", ws, proxy.version, timeout_s=proxy.timeout_s,
                         stats=proxy.server.stats)
        self.proxy = proxy

    async def forward(self, call: Call) -> CallResult | CallError:
        """Send the station's CALL upstream with its own unique id and wait for the answer."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[call.unique_id] = fut
        try:
            await self.send_raw(call.to_json())
            return await asyncio.wait_for(fut, self._response_timeout)
        except (TimeoutError, ConnectionLost):
            # the station retries its transaction messages; closing makes it reconnect and resend
            await self.proxy.close()
            raise ConnectionLost(f"{self.id}: upstream did not answer {call.action}") from None
        finally:
            self._pending.pop(call.unique_id, None)

    async def handle_call(self, call: Call) -> None:
        try:
            validate(MessageType.Call, call.action, call.payload, self.version)
        except OcppFault as fault:
            await self.refuse(call, fault)
            return
        reply = await self.proxy.station_side.forward(call)
        await self.send_raw(reply.to_json())
        if call.action in PROFILE_ACTIONS and isinstance(reply, CallResult):
            self.proxy.state.epoch += 1  # the driver re-asserts its own profile
            await self.proxy.state.notify()


class ProxySession(Session):
    """One charge point connected through us to the upstream CSMS."""

    def __init__(self, server: SessionHost, state: StationState, ws: ServerConnection, *, upstream: str,
                 timeout_s: float = 30.0, ssl: Any = None) -> None:
        super().__init__(server, state, ws, timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self.upstream_url = upstream.rstrip("/") + "/" + quote(state.cp_id, safe="")
        self.station_side = _StationSide(self, ws)
        self.endpoint = self.station_side  # our own requests (driver) go through the station side
        self.upstream_side: _UpstreamSide | None = None
        self._up_ws: Any = None
        self.upstream_ssl = ssl  # wss:// upstream: a devices.tls client context

    async def run(self) -> None:
        try:
            # the station's basic-auth credentials go upstream unchanged: the legacy CSMS keeps checking them
            auth = self.ws.request.headers.get("Authorization") if self.ws.request is not None else None
            tls: dict[str, Any] = {"ssl": self.upstream_ssl} if self.upstream_ssl else {}
            headers: dict[str, Any] = {"additional_headers": {"Authorization": auth}} if auth else {}
            self._up_ws = await connect(self.upstream_url, subprotocols=[SUBPROTOCOL[self.version]], open_timeout=10,
                                        close_timeout=2, **tls, **headers)
        except Exception as exc:  # unreachable upstream: the station will retry with backoff
            log.warning("%s: upstream %s unreachable: %s", printable(self.state.cp_id), self.upstream_url, exc)
            await self.ws.close(1011, "upstream CSMS unreachable")
            return
        self.upstream_side = _UpstreamSide(self, self._up_ws)
        tasks = [asyncio.create_task(self.station_side.run()), asyncio.create_task(self.upstream_side.run())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.close()

    async def close(self) -> None:
        await asyncio.gather(self.ws.close(), *([self._up_ws.close()] if self._up_ws is not None else []),
                             return_exceptions=True)


def factory(upstream: str, ssl: Any = None) -> SessionFactory:
    """The session factory that serves a charge point through the legacy CSMS at ``upstream`` (``wss://`` with
    ``ssl``, a devices.tls client context)."""
    return functools.partial(ProxySession, upstream=upstream, ssl=ssl)


__all__ = ["ProxySession", "factory"]
