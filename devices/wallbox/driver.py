"""The SMX-side driver of one charge point: ``ocpp16://HOST:PORT/CP_ID`` and ``ocpp201://HOST:PORT/CP_ID``.

In OCPP the charge point calls us, so "connecting" means: our CSMS listens on HOST:PORT (one shared server
per address in the process, see :mod:`devices.wallbox.csms`), admits CP_ID, and ``connect`` waits up to
``timeout_s`` for that station to connect and boot.

* ``read`` asks the station for fresh meter values (TriggerMessage MeterValues, then waits for them) and
  returns what it has reported: p_w (+ = drawn from the grid), e_wh, e_session_wh, soc (NaN unless the EV
  reports it), phase currents, the status code (see docs/devices/wallbox.md), connected, session_active and
  p_max_w (Power.Offered, else the last confirmed composite limit). A station without TriggerMessage is read
  from what it last sent. A station that does not answer within ``timeout_s`` raises DeviceUnavailable; a
  malformed answer raises ProtocolError.
* ``write({"p_max_w": W})`` or ``{"i_max_a": A}`` installs a constant-limit charging profile (by default a
  TxDefaultProfile on connector 1 at stack level 1) and CONFIRMS it with GetCompositeSchedule: many real
  chargers accept profiles and then ignore them, so a composite limit above the requested one raises
  SetpointRejected. Limits go on the wire with the schema's 0.1 resolution, rounded down.

Address query options: ``stack`` (stack level), ``profile_id``, ``purpose`` (TxDefaultProfile | TxProfile),
``connector``, ``confirm`` (0 = do not confirm), ``upstream`` (a legacy CSMS URL: proxy mode, see
:mod:`devices.wallbox.proxy`; the default stack level is then 8, above the upstream's profiles).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from typing import Any
from collections.abc import Mapping
from urllib.parse import parse_qs, unquote

from devices.base import (Address, Capabilities, DeviceUnavailable, Driver, Measurement, ProtocolError, Setpoint,
                          SetpointRejected)
from devices import tls
from devices.wallbox import csms, proxy
from devices.wallbox import profiles as pf
from devices.wallbox.model import status_name
from devices.wallbox.rpc import CallErrorReply, ConnectionLost, MalformedReply, Payload
from devices.wallbox.security import OcppSecurityError, csms_security_from_query
from devices.wallbox.session import CsmsSession, Session
from devices.wallbox.station_state import StationState

DEFAULT_PORT = 9000
PROXY_STACK_LEVEL = 8


class OcppDriver(Driver):
    version = ""
    query_keys = ("upstream", "stack", "profile_id", "purpose", "connector", "confirm", "voltage", "phases",
                  "security_profile", "password_env", "upstream_identity", *tls.TLS_QUERY_KEYS)

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        if not address.host:
            raise ValueError(f"{address.raw}: the driver needs HOST:PORT/CP_ID (an address without a host asks the "
                             "co-simulation for a virtual charge point)")
        self.host = address.host
        self.port = address.port or DEFAULT_PORT
        self.cp_id = unquote(address.path.rstrip("/").rsplit("/", 1)[-1]) if address.path else ""
        if not self.cp_id:
            raise ValueError(f"{address.raw}: no charge point id (expected {address.scheme}://HOST:PORT/CP_ID)")
        q = {k: v[-1] for k, v in parse_qs(address.query).items()}
        self.upstream = q.get("upstream")
        self.stack_level = int(q.get("stack", PROXY_STACK_LEVEL if self.upstream else 1))
        self.profile_id = int(q.get("profile_id", 1_000_000 + zlib.crc32(self.cp_id.encode()) % 1_000_000))
        self.purpose = q.get("purpose", pf.TX_DEFAULT)
        self.connector = int(q.get("connector", 1))
        self.confirm = q.get("confirm", "1") not in ("0", "false", "no")
        self.voltage_v = float(q.get("voltage", 230.0))
        self.phases = int(q.get("phases", 3))
        try:  # security profile 1-3 of our CSMS and this station's password (devices.wallbox.security)
            self.security, self.password = csms_security_from_query(q)
            self.upstream_ssl = self._upstream_ssl(q)
        except (OcppSecurityError, tls.TlsConfigError) as exc:
            raise ValueError(f"{address.raw}: {exc}") from None
        self._server: csms.CsmsServer | None = None
        self._state: StationState | None = None
        self._lock = asyncio.Lock()
        self._applied: tuple[str, float, int] | None = None
        self._wanted: tuple[str, float] | None = None
        self._open = False
        self.trigger_supported = True

    # -- lifecycle -----------------------------------------------------------------------------------------
    async def connect(self) -> None:
        if self._open:
            return
        if self._server is None:
            try:
                self._server = await csms.acquire(self.host, self.port, security=self.security)
            except OSError as exc:
                raise DeviceUnavailable(f"{self.address.raw}: cannot listen on {self.host}:{self.port}: {exc}") from exc
            self._state = self._server.expect(self.cp_id, self.version,
                                              proxy.factory(self.upstream, ssl=self.upstream_ssl)
                                              if self.upstream else None,
                                              connectors=max(self.connector, 1), password=self.password)
        self._open = True
        session = await self._server.wait_booted(self.cp_id, self.timeout_s)
        if session is None:
            await self.close()
            raise DeviceUnavailable(f"charge point {self.cp_id!r} did not connect and boot to our CSMS on "
                                    f"ws://{self.host}:{self.port}/ within {self.timeout_s:g} s")

    def _upstream_ssl(self, q: dict[str, str]) -> ssl.SSLContext | None:
        """TLS towards a wss:// upstream: its CA from pki=, our client certificate upstream_identity= (optional)."""
        if not (self.upstream or "").startswith("wss://"):
            return None
        if not q.get("pki"):
            return tls.client_context(tls.TlsFiles())  # the system's trust store
        return tls.client_context(tls.TlsFiles.from_pki(q["pki"], q.get("upstream_identity")))

    async def close(self) -> None:
        self._open = False
        server, self._server = self._server, None
        if server is not None:
            await server.forget(self.cp_id)
            await csms.release(server)

    def _require_open(self) -> tuple[csms.CsmsServer, StationState]:
        if not self._open or self._server is None or self._state is None:
            raise DeviceUnavailable(f"{self.address.raw}: not connected")
        return self._server, self._state

    async def _session(self, deadline: float) -> Session:
        server, _ = self._require_open()
        session = await server.wait_booted(self.cp_id, max(deadline - time.monotonic(), 0.0))
        if session is None:
            raise DeviceUnavailable(f"charge point {self.cp_id!r} is not connected to ws://{self.host}:{self.port}/")
        return session

    async def _call(self, session: Session, action: str, payload: Payload, deadline: float) -> Payload:
        try:
            return await session.request(action, payload, max(deadline - time.monotonic(), 0.001))
        except TimeoutError as exc:
            raise DeviceUnavailable(f"{self.cp_id}: {action} not answered within {self.timeout_s:g} s") from exc
        except ConnectionLost as exc:
            raise DeviceUnavailable(f"{self.cp_id}: connection lost during {action}") from exc
        except MalformedReply as exc:
            raise ProtocolError(f"{self.cp_id}: {exc}") from exc

    # -- read ----------------------------------------------------------------------------------------------
    async def read(self) -> Measurement:
        async with self._lock:
            _, state = self._require_open()
            deadline = time.monotonic() + self.timeout_s
            session = await self._session(deadline)
            if self._wanted is not None and self._applied is not None and self._applied[2] != state.epoch:
                # the station rebooted or someone else changed its profiles: re-assert our limit
                await self._apply(session, *self._wanted, deadline)
            if self.trigger_supported:
                seq = state.meter_seq
                try:
                    reply = await self._call(session, "TriggerMessage", self._trigger_payload(), deadline)
                except CallErrorReply as exc:
                    if exc.code not in ("NotImplemented", "NotSupported"):
                        raise ProtocolError(f"{self.cp_id}: TriggerMessage answered {exc}") from exc
                    self.trigger_supported = False
                    reply = {"status": "NotImplemented"}
                if reply["status"] == "Accepted":
                    left = max(deadline - time.monotonic(), 0.0)
                    if not await state.wait_for(lambda: state.meter_seq > seq, left):
                        raise DeviceUnavailable(f"{self.cp_id}: no MeterValues within {self.timeout_s:g} s after "
                                                "TriggerMessage")
            values = state.measurement()
            return Measurement(self.clock(), values)

    def _trigger_payload(self) -> Payload:
        if self.version == "1.6":
            return {"requestedMessage": "MeterValues", "connectorId": self.connector}
        return {"requestedMessage": "MeterValues", "evse": {"id": self.connector}}

    # -- write ---------------------------------------------------------------------------------------------
    async def _write(self, setpoint: Setpoint) -> None:
        p = setpoint.values.get("p_max_w")
        i = setpoint.values.get("i_max_a")
        if i is not None and p is not None:
            unit, limit = "A", min(i, p / (self.voltage_v * self.phases))
        elif p is not None:
            unit, limit = "W", float(p)
        elif i is not None:
            unit, limit = "A", float(i)
        else:
            return
        limit = pf.floor1(limit)
        async with self._lock:
            _, state = self._require_open()
            if self._applied == (unit, limit, state.epoch):
                return  # already confirmed since the last boot / profile change
            deadline = time.monotonic() + self.timeout_s
            session = await self._session(deadline)
            await self._apply(session, unit, limit, deadline)

    def _profile(self, unit: str, limit: float, state: StationState) -> pf.Profile:
        # Absolute from the station's own clock (the last time it reported), so clock skew cannot delay it;
        # before it has reported any time, Relative (no clock needed: the one period applies at once)
        start = state.cp_time.replace(microsecond=0) if state.cp_time else None
        tx = state.tx_id if self.purpose == pf.TX else None
        if self.purpose == pf.TX and tx is None:
            raise SetpointRejected(f"{self.cp_id}: a TxProfile needs a running transaction")
        return pf.constant_limit(self.profile_id, self.stack_level, limit, unit, purpose=self.purpose,
                                 connector=self.connector, start=start, transaction_id=tx)

    async def _apply(self, session: Session, unit: str, limit: float, deadline: float) -> None:
        assert self._state is not None
        state = self._state
        profile = self._profile(unit, limit, state)
        if self.version == "1.6":
            req = {"connectorId": self.connector, "csChargingProfiles": pf.to_v16(profile)}
        else:
            req = {"evseId": self.connector, "chargingProfile": pf.to_v201(profile)}
        self._wanted = (unit, limit)
        try:
            reply = await self._call(session, "SetChargingProfile", req, deadline)
        except CallErrorReply as exc:
            raise SetpointRejected(f"{self.cp_id}: SetChargingProfile answered {exc}") from exc
        if reply["status"] != "Accepted":
            info = (reply.get("statusInfo") or {}).get("reasonCode", "")
            raise SetpointRejected(f"{self.cp_id}: charge point answered {reply['status']} {info} to a "
                                   f"{limit:g} {unit} {self.purpose}".rstrip())
        if self.confirm:
            await self._confirm(session, unit, limit, deadline)
        self._applied = (unit, limit, state.epoch)

    async def _confirm(self, session: Session, unit: str, limit: float, deadline: float) -> None:
        assert self._state is not None
        if self.version == "1.6":
            req: Payload = {"connectorId": self.connector, "duration": 60, "chargingRateUnit": unit}
        else:
            req = {"evseId": self.connector, "duration": 60, "chargingRateUnit": unit}
        try:
            reply = await self._call(session, "GetCompositeSchedule", req, deadline)
        except CallErrorReply as exc:
            raise ProtocolError(f"{self.cp_id}: cannot confirm the profile: GetCompositeSchedule answered "
                                f"{exc}") from exc
        if reply["status"] != "Accepted":
            raise ProtocolError(f"{self.cp_id}: cannot confirm the profile: GetCompositeSchedule {reply['status']}")
        sched = reply.get("chargingSchedule") if self.version == "1.6" else (reply.get("schedule") or {})
        periods = (sched or {}).get("chargingSchedulePeriod") or []
        if not periods:
            raise ProtocolError(f"{self.cp_id}: GetCompositeSchedule returned no periods")
        got_unit = (sched or {}).get("chargingRateUnit", unit)
        first = min(periods, key=lambda q: q["startPeriod"])
        got = float(first["limit"])
        if got_unit != unit:
            got = pf.convert(got, got_unit, unit, self.voltage_v, first.get("numberPhases") or self.phases)
        if got > limit + 0.1 + 1e-6 * limit:
            raise SetpointRejected(f"{self.cp_id}: the charge point accepted a {limit:g} {unit} profile but its "
                                   f"composite schedule still allows {got:g} {unit}: the charger ignores the profile")
        self._state.confirmed_limit_w = got if unit == "W" else pf.convert(got, "A", "W", self.voltage_v, self.phases)

    # -- extras --------------------------------------------------------------------------------------------
    async def identity(self) -> Mapping[str, Any]:
        out: dict[str, Any] = {"address": self.address.raw, "protocol": f"OCPP {self.version}", "cp_id": self.cp_id}
        if self._state is not None:
            b = self._state.boot
            cs = b.get("chargingStation", {})
            out.update(manufacturer=b.get("chargePointVendor") or cs.get("vendorName"),
                       model=b.get("chargePointModel") or cs.get("model"),
                       serial=b.get("chargePointSerialNumber") or cs.get("serialNumber"),
                       firmware=b.get("firmwareVersion") or cs.get("firmwareVersion"))
            out["status"] = self._state.status
            out["status_text"] = status_name(self._state.status)
        return out

    async def request(self, action: str, payload: Payload) -> Payload:
        """Send any OCPP request to the station (bench commands, tests); the station's answer is returned."""
        async with self._lock:
            session = await self._session(time.monotonic() + self.timeout_s)
            return await self._call(session, action, payload, time.monotonic() + self.timeout_s)

    async def renew_certificate(self, timeout_s: float | None = None) -> str:
        """Renew the station's client certificate (security profile 3) by its own signing request, signed by our
        CSMS's PKI: 'installed', 'refused' (by the station: it reports why as a security event), 'rejected' (the
        trigger or our signing refused: no PKI, a request not for this station), or 'timeout'. The station uses
        the new certificate from its next connection; the old one is revoked once the new one is installed."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        async with self._lock:
            _, state = self._require_open()
            session = await self._session(deadline)
            if not isinstance(session, CsmsSession):
                return "rejected"  # a proxied station: the upstream CSMS manages its certificates
            state.renewal = ""
            status = await session.renew_certificate(max(deadline - time.monotonic(), 0.001))
        if status != "Accepted":
            return "rejected"
        ended = await state.wait_for(lambda: state.renewal in ("installed", "refused", "rejected"),
                                     max(deadline - time.monotonic(), 0.0))
        return state.renewal if ended else "timeout"

    @property
    def state(self) -> StationState | None:
        return self._state


class Ocpp16Driver(OcppDriver):
    schemes = ("ocpp16",)
    version = "1.6"


class Ocpp201Driver(OcppDriver):
    schemes = ("ocpp201",)
    version = "2.0.1"
