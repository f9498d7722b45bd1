"""Our side of one connected charge point: the session kinds our CSMS serves, made by a session factory.

:class:`CsmsSession` answers the station's calls itself (we are its CSMS); a proxy session
(:mod:`devices.wallbox.proxy`) lets a legacy CSMS answer. The server (:mod:`devices.wallbox.csms`) knows
neither: each admitted charge point names a :data:`SessionFactory` (default :class:`CsmsSession`), so the
server does not import the kinds of session it runs.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, UTC
from typing import Any, Protocol
from collections.abc import Callable

from websockets.asyncio.server import ServerConnection

from devices import pki
from devices.wallbox import profiles as pf
from devices.wallbox.plausibility import check_call
from devices.wallbox.rpc import Endpoint, Payload
from devices.wallbox.security import CsmsSecurity
from devices.wallbox.station_state import StationState


log = logging.getLogger(__name__)


class TxIds:
    """The 1.6 transaction ids our CSMS issues: increasing, from a start that grows with the wall clock (one per
    second since late 2023), so a restarted CSMS does not issue an old id again and a StopTransaction it cannot
    know (issued before the restart, answer lost) still passes, while an id above the last one issued cannot
    be a real transaction. Stays below 2^31 until about 2091."""

    def __init__(self) -> None:
        self.start = max(1, int(time.time()) - 1_700_000_000)
        self._next = itertools.count(self.start)
        self.last = self.start - 1

    def issue(self) -> int:
        self.last = next(self._next)
        return self.last

    def possible(self, tx: int) -> bool:
        return 1 <= tx <= self.last


TX_IDS = TxIds()


class SessionHost(Protocol):
    """What a session needs from the server that runs it."""

    heartbeat_s: int
    stats: Counter[str]
    security: CsmsSecurity

    def emit(self, state: StationState, action: str, payload: Payload) -> None: ...


class Session:
    """Our side of one connected charge point. ``request`` sends OUR calls to the station."""

    def __init__(self, server: SessionHost, state: StationState, ws: ServerConnection, *,
                 timeout_s: float = 30.0) -> None:
        self.server, self.state, self.ws = server, state, ws
        self.version = state.version
        self.timeout_s = timeout_s
        self.endpoint = Endpoint(state.cp_id, ws, state.version, timeout_s=timeout_s, stats=server.stats)

    async def run(self) -> None:
        await self.endpoint.run()

    async def request(self, action: str, payload: Payload, timeout_s: float) -> Payload:
        return await self.endpoint.request(action, payload, timeout_s=timeout_s)

    async def close(self) -> None:
        await self.ws.close()

    @property
    def last_rx(self) -> float:
        """Monotonic time of the last frame from the station."""
        return self.endpoint.last_rx


#: makes the session of a charge point that connected: (server, state, websocket, timeout_s=...) -> Session
SessionFactory = Callable[..., Session]


class CsmsSession(Session):
    """We are the CSMS: we answer the station's calls (impossible values refused, see
    :mod:`devices.wallbox.plausibility`)."""

    def __init__(self, server: SessionHost, state: StationState, ws: ServerConnection, **kw: Any) -> None:
        super().__init__(server, state, ws, **kw)
        actions = ["BootNotification", "Heartbeat", "StatusNotification", "Authorize", "MeterValues",
                   "DataTransfer", "FirmwareStatusNotification", "SecurityEventNotification", "SignCertificate"]
        actions += (["StartTransaction", "StopTransaction", "DiagnosticsStatusNotification"] if self.version == "1.6"
                    else ["TransactionEvent", "NotifyEvent", "NotifyReport", "LogStatusNotification",
                          "NotifyChargingLimit", "NotifyEVChargingNeeds"])
        for action in actions:
            self.endpoint.handlers[action] = self._handler(action)
        self.endpoint.after["SignCertificate"] = self._send_signed
        self._signed: tuple[str, bytes] | None = None  # (serial, chain) to send after SignCertificate's answer

    def _handler(self, action: str) -> Callable[[Payload], Any]:
        async def handle(p: Payload) -> Payload:
            check_call(action, p, self.state, TX_IDS.possible)
            self.state.observe_call(action, p)
            reply = self.answer(action, p)
            self.state.observe_result(action, p, reply)
            self.server.emit(self.state, action, p)
            await self.state.notify()
            return reply
        return handle

    def answer(self, action: str, p: Payload) -> Payload:
        now = pf.format_time(datetime.now(UTC))
        accepted = {"status": "Accepted"}
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": self.server.heartbeat_s}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "Authorize":
            return {"idTagInfo": accepted} if self.version == "1.6" else {"idTokenInfo": accepted}
        if action == "StartTransaction":
            return {"transactionId": TX_IDS.issue(), "idTagInfo": accepted}
        if action == "StopTransaction":
            return {"idTagInfo": accepted} if p.get("idTag") else {}
        if action == "TransactionEvent":
            return {"idTokenInfo": accepted} if p.get("idToken") else {}
        if action == "DataTransfer":
            return {"status": "UnknownVendorId"}
        if action == "NotifyEVChargingNeeds":
            return {"status": "Accepted"}
        if action == "SignCertificate":
            return self._sign(p)
        return {}

    # -- certificate renewal by request (2.0.1 A02, 1.6 security extension) -------------------------------------
    async def renew_certificate(self, timeout_s: float) -> str:
        """Ask the station for a signing request (it answers with SignCertificate, we with CertificateSigned);
        returns the trigger's status. How the renewal ends is in ``state.renewal``."""
        if self.version == "1.6":
            reply = await self.request("ExtendedTriggerMessage", {"requestedMessage": "SignChargePointCertificate"},
                                       timeout_s)
        else:
            reply = await self.request("TriggerMessage", {"requestedMessage": "SignChargingStationCertificate"},
                                       timeout_s)
        return str(reply["status"])

    def _sign(self, p: Payload) -> Payload:
        """Sign the station's request with our PKI's issuing CA when we have one and the request is for the
        station's own id (the CN it connected as); anything else is Rejected."""
        where = self.server.security.pki
        try:
            if where is None:
                raise pki.PkiError("this CSMS signs no certificates (it has no PKI: security profile 2 or 3)")
            if p.get("certificateType", "ChargingStationCertificate") != "ChargingStationCertificate":
                raise pki.PkiError(f"{p['certificateType']}: we sign charging station certificates only")
            entry, chain = pki.sign_request(where, str(p["csr"]).encode(), "chargepoint", name=self.state.cp_id)
        except pki.PkiError as exc:
            log.warning("%s: SignCertificate refused: %s", self.state.cp_id, exc)
            self.server.stats["sign_certificate_rejected"] += 1
            self.state.renewal = "rejected"
            return {"status": "Rejected"}
        self._signed = (entry.serial, chain)
        self.state.renewal_serial, self.state.renewal = entry.serial, "pending"
        return {"status": "Accepted"}

    async def _send_signed(self, _: Payload) -> None:
        signed, self._signed = self._signed, None
        if signed is None:
            return
        serial, chain = signed
        payload: Payload = {"certificateChain": chain.decode()}
        if self.version != "1.6":
            payload["certificateType"] = "ChargingStationCertificate"
        where = self.server.security.pki
        assert where is not None
        try:
            reply = await self.request("CertificateSigned", payload, self.timeout_s)
        except Exception:  # no answer: the certificate may or may not be installed; it stays valid, pending
            log.warning("%s: CertificateSigned got no answer; serial %s stays pending", self.state.cp_id, serial)
            raise
        installed = reply.get("status") == "Accepted"
        pki.settle_renewal(where, serial, installed)
        self.state.renewal = "installed" if installed else "refused"
        self.server.stats["certificates_installed" if installed else "certificates_refused"] += 1
        await self.state.notify()


@dataclass
class Expected:
    """A charge point the server admits: its OCPP version, how it is served, how many connectors it has."""

    version: str
    session: SessionFactory | None = None  # None: CsmsSession
    connectors: int = 1


__all__ = ["CsmsSession", "Expected", "Session", "SessionFactory", "SessionHost"]
