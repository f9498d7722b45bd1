"""The virtual charge point: a wallbox model behind OCPP 1.6J or 2.0.1, as a websocket client of a CSMS.

It connects to ``<csms_url>/<cp_id>`` with the version's subprotocol, boots, reports status and transactions
as the model's state changes (``advance`` is called by the co-simulation clock or by a wall clock), sends
MeterValues at the configured interval, obeys charging profiles (the composite schedule of
:mod:`devices.wallbox.profiles` limits the model's charging power, split at period boundaries inside a
step) and answers the CSMS's requests. When the connection drops it reconnects with exponential backoff;
transaction messages (start/stop, periodic meter values of a transaction) wait in an outbox until the CSMS
has acknowledged them, so none are lost; status and heartbeats are not queued (the current status is sent
after every boot).

Test hooks (used by the conformance harness): ``silent`` (keep the socket, answer nothing) and
``corrupt_next_reply`` (the next CALLRESULT is cut in half).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping
from urllib.parse import quote

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from devices.wallbox import profiles as pf
from devices.wallbox.model import (CHARGING, FAULTED, FINISHING, PREPARING, RESERVED, STATUS_NAMES, SUSPENDED_EV,
                                   SUSPENDED_EVSE, UNAVAILABLE, WallboxBank, WallboxConfig)
from devices.wallbox.rpc import (SUBPROTOCOL, CallErrorReply, ConnectionLost, Endpoint, MalformedReply, OcppFault,
                                 Payload)

log = logging.getLogger(__name__)

CONNECTOR = 1


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


@dataclass
class OutMsg:
    action: str
    build: Callable[[], Payload]
    persistent: bool
    on_result: Callable[[Payload], None] | None = None


@dataclass
class LocalTx:
    local_id: str
    session: int
    start: datetime
    start_register_wh: float
    remote_id: str | None = None  # 1.6: assigned by the CSMS; 2.0.1: ours (= local_id)
    seq_no: int = 0
    id_tag: str = "S4G"
    charging_state: str = ""
    remote_start_id: int | None = None
    trigger: str = "CablePluggedIn"


class _FaultyConnection:
    """Wraps the websocket for the test hooks (silent device, corrupt reply)."""

    def __init__(self, ws: ClientConnection, cp: "VirtualChargePoint") -> None:
        self.ws, self.cp = ws, cp

    async def recv(self) -> str:
        while True:
            msg = await self.ws.recv()
            if not self.cp.silent:
                return msg

    async def send(self, text: str) -> None:
        if self.cp.silent:
            return
        if self.cp.corrupt_next and text.startswith("[3,"):
            self.cp.corrupt_next = False
            text = text[: max(len(text) // 2, 3)]
        await self.ws.send(text)


class VirtualChargePoint:
    """Base: connection, outbox, model stepping, profiles. Subclasses speak one OCPP version."""

    version = ""

    def __init__(self, bank: WallboxBank, cfg: WallboxConfig, *, cp_id: str, csms_url: str,
                 clock: Callable[[], datetime], clock_at: Callable[[float], datetime] | None = None,
                 id_tag: str = "S4G", backoff_s: tuple[float, float] = (0.05, 5.0),
                 call_timeout_s: float = 10.0, drain_timeout_s: float = 10.0) -> None:
        self.bank, self.cfg = bank, cfg
        self.cp_id = cp_id
        self.csms_url = csms_url
        self.clock = clock
        self.clock_at = clock_at
        self.id_tag = id_tag
        self.backoff_s = backoff_s
        self.call_timeout_s = call_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.station = pf.Station(max_current_a=cfg.max_current_a, phases=cfg.phases, voltage_v=cfg.voltage_v,
                                  max_stack_level=cfg.max_stack_level, max_profiles=cfg.max_profiles,
                                  max_periods=cfg.max_periods, version=self.version)
        self.profiles: list[pf.Profile] = []
        self.settings: dict[str, Any] = {"meter_interval_s": cfg.meter_interval_s,
                                         "heartbeat_interval_s": cfg.heartbeat_interval_s}
        self.tx: LocalTx | None = None
        self.outbox: deque[OutMsg] = deque()
        self.reported_status: int | None = None
        self.silent = False
        self.corrupt_next = False
        self.boots = 0
        self._stop_reason: str | None = None
        self._pending_start_profile: Any = None  # a TxProfile given with a remote start
        self._remote_start_id: int | None = None  # 2.0.1 remoteStartId of the next transaction
        self._unavailable_after_tx = False
        self._last_sent_t = -math.inf
        self._ws: ClientConnection | None = None
        self.endpoint: Endpoint | None = None
        self._booted = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._last_meter_t: float | None = None
        self._last_heartbeat_t = 0.0
        self._rng = random.Random(cp_id)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"cp-{self.cp_id}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 2)
            except Exception:  # already gone
                pass
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self._ws = None
        self._booted.clear()

    @property
    def connected(self) -> bool:
        return self._booted.is_set() and self._ws is not None

    def open_connections(self) -> int:
        ws = self._ws
        return int(ws is not None and ws.state == websockets.protocol.State.OPEN)

    async def wait_booted(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._booted.wait(), timeout_s)

    async def _run(self) -> None:
        delay = self.backoff_s[0]
        url = self.csms_url.rstrip("/") + "/" + quote(self.cp_id, safe="")
        while not self._stopping:
            try:
                async with connect(url, subprotocols=[SUBPROTOCOL[self.version]], open_timeout=5,
                                   ping_interval=20, ping_timeout=20, close_timeout=2) as ws:
                    self._ws = ws
                    delay = self.backoff_s[0]
                    await self._session(ws)
            except asyncio.CancelledError:
                raise
            except (OSError, TimeoutError, websockets.exceptions.WebSocketException, ConnectionLost) as exc:
                log.info("%s: connection to %s failed or dropped: %s", self.cp_id, url, exc)
            finally:
                self._ws = None
                self._booted.clear()
                self.endpoint = None
                self._progress.set()
            if self._stopping:
                return
            # exponential backoff with jitter: a restarting CSMS is not hammered by all its stations at once
            await asyncio.sleep(delay * (0.75 + 0.5 * self._rng.random()))
            delay = min(delay * 2, self.backoff_s[1])

    async def _session(self, ws: ClientConnection) -> None:
        ep = Endpoint(self.cp_id, _FaultyConnection(ws, self), self.version, timeout_s=self.call_timeout_s)
        self._install_handlers(ep)
        receiver = asyncio.create_task(ep.run())
        sender: asyncio.Task | None = None
        try:
            while True:
                reply = await self._race(ep.request("BootNotification", self._boot_payload()), receiver)
                interval = int(reply.get("interval", 0))
                if reply["status"] == "Accepted":
                    if interval > 0:
                        self.settings["heartbeat_interval_s"] = interval
                    break
                await self._race(asyncio.sleep(interval if interval > 0 else 10), receiver)
            self.endpoint = ep
            self.boots += 1
            # stale statuses are superseded by the current one; transaction messages stay queued
            self.outbox = deque(m for m in self.outbox if m.persistent)
            self.reported_status = None
            self._booted.set()
            self._progress.set()
            self._send_status(self._now(), force=True)
            sender = asyncio.create_task(self._send_loop(ep))
            await receiver
        finally:
            self._booted.clear()
            self.endpoint = None
            for task in (sender, receiver):
                if task is not None:
                    task.cancel()
            await asyncio.gather(*(t for t in (sender, receiver) if t is not None), return_exceptions=True)
            self._progress.set()

    @staticmethod
    async def _race(coro: Any, receiver: asyncio.Task) -> Any:
        """Await ``coro`` unless the connection dies first."""
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ConnectionLost("connection closed")

    # -- outbox ----------------------------------------------------------------------------------------------
    def enqueue(self, msg: OutMsg) -> None:
        if not msg.persistent and not self.connected:
            return  # status and heartbeats are not buffered: the status after the next boot supersedes them
        self.outbox.append(msg)
        self._last_sent_t = float(self.bank.t_s)
        self._wake_sender.set()

    async def _send_loop(self, ep: Endpoint) -> None:
        while True:
            if not self.outbox:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            msg = self.outbox[0]
            try:
                reply = await ep.request(msg.action, msg.build())
            except (CallErrorReply, MalformedReply, ValueError) as exc:
                log.warning("%s: %s refused or answered badly, dropped: %s", self.cp_id, msg.action, exc)
                reply = None
            except TimeoutError:
                log.info("%s: %s not answered, retrying", self.cp_id, msg.action)
                continue
            if self.outbox and self.outbox[0] is msg:
                self.outbox.popleft()
            if reply is not None and msg.on_result is not None:
                msg.on_result(reply)
            self._progress.set()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until the CSMS has answered everything queued; returns at once when there is no connection
        (the outbox keeps the transaction messages). A connection that is still booting is waited for.
        False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.drain_timeout_s if timeout_s is None else timeout_s)
        while True:
            if self._ws is None:
                return True
            if self._booted.is_set() and not self.outbox:
                return True
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return False

    # -- clock and model -------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.clock()

    def _tx_context(self) -> pf.Tx:
        if self.tx is None:
            return pf.NO_TX
        return pf.Tx(id=self.tx.remote_id or self.tx.local_id, start=self.tx.start)

    def _phases_in_use(self) -> int:
        return int(self.bank.caps()[0][0])

    async def advance(self, t_s: int, dt_s: int, env: Mapping[str, float]) -> None:
        """One co-simulation step: EV plug/unplug, charging under the composite schedule, messages."""
        start = self._now_at(t_s)
        arrays = {k: np.array([v if v is not None else 0.0], dtype=float) for k, v in env.items()}
        self.bank.apply_env(t_s, arrays)
        self._emit_changes(start, trigger="CablePluggedIn")
        self._integrate(t_s, dt_s, start)
        end = self._now_at(t_s + dt_s)
        self._emit_changes(end, trigger="ChargingStateChanged")
        self._periodic(t_s + dt_s, end)
        await self.drain()

    def _now_at(self, t_s: float) -> datetime:
        return self.clock_at(t_s) if self.clock_at is not None else self._now()

    def _integrate(self, t_s: int, dt_s: int, start: datetime) -> None:
        """Charge over the step, re-evaluating the composite limit at every profile breakpoint inside it."""
        tx = self._tx_context()
        cuts = [c for c in pf.next_change(self.profiles, start, dt_s, tx) if 0 < c < dt_s]
        edges = [0.0, *cuts, float(dt_s)]
        for k, (a, b) in enumerate(zip(edges, edges[1:])):
            t = start + timedelta(seconds=a)
            limit_w = pf.limit_at(self.profiles, t, self.station, connector=CONNECTOR, tx=tx, unit="W",
                                  phases_in_use=self._phases_in_use())
            self.bank.setpoints["p_max_w"][0] = limit_w
            self.bank.setpoints["i_max_a"][0] = self.cfg.max_current_a
            self.bank.integrate(t_s + a, b - a, accumulate=k > 0)
        self.bank.t_s = t_s + dt_s

    def _periodic(self, t_end: float, when: datetime) -> None:
        interval = int(self.settings["meter_interval_s"])
        if self.tx is not None and interval > 0:
            if self._last_meter_t is None or t_end - self._last_meter_t >= interval - 1e-9:
                self._last_meter_t = t_end
                self._send_periodic_meter(when)
        hb = int(self.settings["heartbeat_interval_s"])
        # a heartbeat only when nothing else was sent within the interval (both versions allow skipping it)
        if self.connected and hb > 0 and t_end - max(self._last_heartbeat_t, self._last_sent_t) >= hb:
            self._last_heartbeat_t = t_end
            self.enqueue(OutMsg("Heartbeat", lambda: {}, persistent=False))

    def _emit_changes(self, when: datetime, trigger: str) -> None:
        """Report what changed in the model since the last report: transaction end/start, then status."""
        b = self.bank
        if self.tx is not None and (not b.tx_active[0] or int(b.sessions[0]) != self.tx.session):
            reason = self._stop_reason or "EVDisconnected"
            self._stop_reason = None
            self._stop_tx(when, reason)
            self.profiles = pf.end_transaction(self.profiles, CONNECTOR)
            if self._unavailable_after_tx:
                self._unavailable_after_tx = False
                b.set_available(0, False)
        if self.tx is None and b.tx_active[0]:
            self.tx = LocalTx(local_id=str(uuid.uuid4()), session=int(b.sessions[0]), start=when,
                              start_register_wh=float(b.e_wh[0]), id_tag=self.id_tag, trigger=trigger)
            self._last_meter_t = None
            self._start_tx(when)
        self._send_status(when)

    def _register(self) -> float:
        return float(self.bank.e_wh[0])

    def meter_snapshot(self) -> dict[str, float]:
        m = self.bank.measure()
        return {k: float(v[0]) for k, v in m.items()}

    # -- commands from the CSMS ------------------------------------------------------------------------------
    def set_profile(self, profile: pf.Profile) -> str:
        try:
            pf.check(profile, self.profiles, self.station, self._tx_context(), self._now())
        except pf.ProfileError as exc:
            log.info("%s: profile %s rejected: %s", self.cp_id, profile.id, exc)
            return "Rejected"
        self.profiles = pf.install(self.profiles, profile, self.version)
        return "Accepted"

    def composite(self, connector: int, duration_s: int, unit: str) -> tuple[datetime, list[pf.Period]]:
        now = self._now()
        periods = pf.composite(self.profiles, now, duration_s, self.station, connector=connector,
                               tx=self._tx_context(), unit=unit, phases_in_use=self._phases_in_use())
        return now, periods

    def remote_start(self, id_tag: str, profile_raw: Any = None) -> bool:
        if not self.bank.remote_start(0):
            return False
        self.id_tag = id_tag
        self._pending_start_profile = profile_raw
        return True

    def change_availability(self, operative: bool) -> str:
        """Inoperative while a transaction runs is scheduled for its end."""
        if not operative and self.tx is not None:
            self._unavailable_after_tx = True
            return "Scheduled"
        self._unavailable_after_tx = False
        self.bank.set_available(0, operative)
        return "Accepted"

    def remote_stop(self) -> None:
        if self.bank.remote_stop(0):
            self._stop_reason = "Remote"

    async def reset(self) -> None:
        """Reboot: stop the transaction, drop the connection; the run loop reconnects and boots again."""
        if self.bank.remote_stop(0):
            self._stop_reason = "SoftReset" if self.version == "1.6" else "ImmediateReset"
        self._emit_changes(self._now(), trigger="ResetCommand")
        self.bank.finished[0] = False
        if self.cfg.auto_start and self.bank.plugged[0]:
            self.bank.remote_start(0)  # free vend: the EV still plugged in starts a new transaction
            self._emit_changes(self._now(), trigger="CablePluggedIn")
        await asyncio.sleep(0)
        if self._ws is not None:
            await self._ws.close()

    # -- version-specific ------------------------------------------------------------------------------------
    def _install_handlers(self, ep: Endpoint) -> None:
        raise NotImplementedError

    def _boot_payload(self) -> Payload:
        raise NotImplementedError

    def _send_status(self, when: datetime, force: bool = False) -> None:
        raise NotImplementedError

    def _start_tx(self, when: datetime) -> None:
        raise NotImplementedError

    def _stop_tx(self, when: datetime, reason: str) -> None:
        raise NotImplementedError

    def _send_periodic_meter(self, when: datetime) -> None:
        raise NotImplementedError

    def _send_triggered_meter(self) -> None:
        raise NotImplementedError


# ======================================================================================================
class ChargePoint16(VirtualChargePoint):
    version = "1.6"

    CONFIG_READONLY = ("ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
                       "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled", "NumberOfConnectors",
                       "SupportedFeatureProfiles", "MeterValuesSampledData")

    def _config(self) -> dict[str, str]:
        return {
            "MeterValueSampleInterval": str(self.settings["meter_interval_s"]),
            "HeartbeatInterval": str(self.settings["heartbeat_interval_s"]),
            "ChargeProfileMaxStackLevel": str(self.station.max_stack_level),
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": str(self.station.max_periods),
            "MaxChargingProfilesInstalled": str(self.station.max_profiles),
            "NumberOfConnectors": "1",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import,"
                                      "Power.Offered,Current.Offered,SoC",
        }

    def _boot_payload(self) -> Payload:
        out = {"chargePointVendor": self.cfg.vendor[:20], "chargePointModel": self.cfg.model[:20],
               "firmwareVersion": self.cfg.firmware[:50]}
        out["chargePointSerialNumber"] = (self.cfg.serial or self.cp_id)[:25]
        return out

    def _samples(self, context: str, register: float | None = None) -> list[dict]:
        m = self.meter_snapshot()
        reg = m["e_wh"] if register is None else register
        sv = [{"value": fmt(reg), "context": context, "measurand": "Energy.Active.Import.Register",
               "location": "Outlet", "unit": "Wh"}]
        if context not in ("Transaction.Begin", "Transaction.End"):
            sv.append({"value": fmt(m["p_w"]), "context": context, "measurand": "Power.Active.Import",
                       "location": "Outlet", "unit": "W"})
            for ph, key in (("L1", "i_l1_a"), ("L2", "i_l2_a"), ("L3", "i_l3_a")):
                sv.append({"value": fmt(m[key]), "context": context, "measurand": "Current.Import",
                           "phase": ph, "location": "Outlet", "unit": "A"})
            sv.append({"value": fmt(m["p_max_w"]), "context": context, "measurand": "Power.Offered",
                       "location": "Outlet", "unit": "W"})
            sv.append({"value": fmt(m["i_max_a"]), "context": context, "measurand": "Current.Offered",
                       "location": "Outlet", "unit": "A"})
            if math.isfinite(m["soc"]):
                sv.append({"value": fmt(m["soc"] * 100.0), "context": context, "measurand": "SoC",
                           "location": "EV", "unit": "Percent"})
        return sv

    def _meter_value(self, when: datetime, context: str, register: float | None = None) -> dict:
        return {"timestamp": pf.format_time(when), "sampledValue": self._samples(context, register)}

    def _send_status(self, when: datetime, force: bool = False) -> None:
        code = int(self.bank.status[0])
        if code == self.reported_status and not force:
            return
        self.reported_status = code
        payload = {"connectorId": CONNECTOR, "errorCode": "OtherError" if code == FAULTED else "NoError",
                   "status": STATUS_NAMES[code], "timestamp": pf.format_time(when)}
        self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))

    def _tx_id_int(self, tx: LocalTx) -> int:
        return int(tx.remote_id) if tx.remote_id is not None else -1

    def _start_tx(self, when: datetime) -> None:
        tx = self.tx
        assert tx is not None
        begin = self._meter_value(when, "Transaction.Begin", tx.start_register_wh)

        def started(reply: Payload) -> None:
            tx.remote_id = str(reply["transactionId"])
            if reply["idTagInfo"]["status"] != "Accepted" and self.tx is tx:
                log.warning("%s: CSMS refused id tag %s: stopping", self.cp_id, tx.id_tag)
                self.remote_stop()
                self._stop_reason = "DeAuthorized"
                self._emit_changes(self._now(), trigger="Deauthorized")

        payload = {"connectorId": CONNECTOR, "idTag": tx.id_tag, "meterStart": int(round(tx.start_register_wh)),
                   "timestamp": pf.format_time(when)}
        self.enqueue(OutMsg("StartTransaction", lambda: payload, persistent=True, on_result=started))
        # full-resolution start register (meterStart is an integer)
        self.enqueue(OutMsg("MeterValues", lambda: {"connectorId": CONNECTOR, "transactionId": self._tx_id_int(tx),
                                                    "meterValue": [begin]}, persistent=True))
        if self._pending_start_profile:
            raw, self._pending_start_profile = self._pending_start_profile, None
            self.set_profile(pf.from_v16(CONNECTOR, raw))

    def _stop_tx(self, when: datetime, reason: str) -> None:
        tx = self.tx
        assert tx is not None
        self.tx = None
        reg = self._register()
        data = [self._meter_value(tx.start, "Transaction.Begin", tx.start_register_wh),
                self._meter_value(when, "Transaction.End", reg)]
        payload = {"meterStop": int(round(reg)), "timestamp": pf.format_time(when), "reason": reason,
                   "idTag": tx.id_tag, "transactionData": data}
        self.enqueue(OutMsg("StopTransaction", lambda: {**payload, "transactionId": self._tx_id_int(tx)},
                            persistent=True))

    def _send_periodic_meter(self, when: datetime) -> None:
        tx = self.tx
        assert tx is not None
        mv = self._meter_value(when, "Sample.Periodic")
        self.enqueue(OutMsg("MeterValues", lambda: {"connectorId": CONNECTOR, "transactionId": self._tx_id_int(tx),
                                                    "meterValue": [mv]}, persistent=True))

    def _send_triggered_meter(self) -> None:
        tx = self.tx
        payload: Payload = {"connectorId": CONNECTOR, "meterValue": [self._meter_value(self._now(), "Trigger")]}
        if tx is not None and tx.remote_id is not None:
            payload["transactionId"] = int(tx.remote_id)
        self.enqueue(OutMsg("MeterValues", lambda: payload, persistent=False))

    # handlers -------------------------------------------------------------------------------------------------
    def _install_handlers(self, ep: Endpoint) -> None:
        ep.handlers.update({
            "SetChargingProfile": self._on_set_profile, "ClearChargingProfile": self._on_clear_profile,
            "GetCompositeSchedule": self._on_composite, "RemoteStartTransaction": self._on_remote_start,
            "RemoteStopTransaction": self._on_remote_stop, "ChangeConfiguration": self._on_change_config,
            "GetConfiguration": self._on_get_config, "TriggerMessage": self._on_trigger, "Reset": self._on_reset,
            "DataTransfer": self._on_data_transfer, "ChangeAvailability": self._on_availability,
        })
        ep.after.update({"TriggerMessage": self._after_trigger, "RemoteStartTransaction": self._after_remote,
                         "RemoteStopTransaction": self._after_remote, "Reset": self._after_reset,
                         "ChangeAvailability": self._after_remote})

    async def _on_availability(self, p: Payload) -> Payload:
        if p["connectorId"] not in (0, CONNECTOR):
            return {"status": "Rejected"}
        return {"status": self.change_availability(p["type"] == "Operative")}

    async def _on_set_profile(self, p: Payload) -> Payload:
        try:
            profile = pf.from_v16(p["connectorId"], p["csChargingProfiles"])
        except pf.ProfileError as exc:
            raise OcppFault("PropertyConstraintViolation", str(exc)) from None
        return {"status": self.set_profile(profile)}

    async def _on_clear_profile(self, p: Payload) -> Payload:
        self.profiles, n = pf.clear(self.profiles, profile_id=p.get("id"), connector=p.get("connectorId"),
                                    purpose=p.get("chargingProfilePurpose"), stack_level=p.get("stackLevel"))
        return {"status": "Accepted" if n else "Unknown"}

    async def _on_composite(self, p: Payload) -> Payload:
        connector = int(p["connectorId"])
        if not 0 <= connector <= self.station.connectors:
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit") or "W"
        start, periods = self.composite(connector, int(p["duration"]), unit)
        return {"status": "Accepted", "connectorId": connector, "scheduleStart": pf.format_time(start),
                "chargingSchedule": {
                    "duration": int(p["duration"]), "startSchedule": pf.format_time(start), "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": q.start_s, "limit": floor1(q.limit),
                                                "numberPhases": int(q.phases or self.station.phases)}
                                               for q in periods]}}

    async def _on_remote_start(self, p: Payload) -> Payload:
        if p.get("connectorId", CONNECTOR) != CONNECTOR or self.tx is not None:
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        if prof is not None and prof.get("chargingProfilePurpose") != pf.TX:
            return {"status": "Rejected"}
        return {"status": "Accepted" if self.remote_start(p["idTag"], prof) else "Rejected"}

    async def _on_remote_stop(self, p: Payload) -> Payload:
        if self.tx is None or str(p["transactionId"]) != str(self.tx.remote_id):
            return {"status": "Rejected"}
        self.remote_stop()
        return {"status": "Accepted"}

    async def _after_remote(self, _: Payload) -> None:
        self._emit_changes(self._now(), trigger="RemoteStart")

    async def _on_change_config(self, p: Payload) -> Payload:
        key, value = p["key"], p["value"]
        if key not in self._config():
            return {"status": "NotSupported"}
        if key in self.CONFIG_READONLY:
            return {"status": "Rejected"}
        try:
            v = int(value)
        except ValueError:
            return {"status": "Rejected"}
        if v < 0:
            return {"status": "Rejected"}
        self.settings["meter_interval_s" if key == "MeterValueSampleInterval" else "heartbeat_interval_s"] = v
        return {"status": "Accepted"}

    async def _on_get_config(self, p: Payload) -> Payload:
        conf = self._config()
        keys = p.get("key") or list(conf)
        known = [{"key": k, "readonly": k in self.CONFIG_READONLY, "value": conf[k]} for k in keys if k in conf]
        unknown = [k for k in keys if k not in conf]
        return {"configurationKey": known, **({"unknownKey": unknown} if unknown else {})}

    async def _on_trigger(self, p: Payload) -> Payload:
        if p.get("connectorId") not in (None, 0, CONNECTOR):
            return {"status": "Rejected"}
        ok = p["requestedMessage"] in ("MeterValues", "StatusNotification", "Heartbeat", "BootNotification")
        return {"status": "Accepted" if ok else "NotImplemented"}

    async def _after_trigger(self, p: Payload) -> None:
        what = p["requestedMessage"]
        if what == "MeterValues":
            self._send_triggered_meter()
        elif what == "StatusNotification":
            self._send_status(self._now(), force=True)
        elif what == "Heartbeat":
            self.enqueue(OutMsg("Heartbeat", lambda: {}, persistent=False))
        elif what == "BootNotification":
            self.enqueue(OutMsg("BootNotification", self._boot_payload, persistent=False))

    async def _on_reset(self, p: Payload) -> Payload:
        return {"status": "Accepted"}

    async def _after_reset(self, p: Payload) -> None:
        await self.reset()

    async def _on_data_transfer(self, p: Payload) -> Payload:
        return {"status": "UnknownVendorId"}


def floor1(x: float) -> float:
    """Round a limit down to the 0.1 resolution of the schema (never report more than is allowed)."""
    if not math.isfinite(x):
        return 0.0
    return math.floor(x * 10 + 1e-6) / 10


# ======================================================================================================
_CHARGING_STATE = {CHARGING: "Charging", SUSPENDED_EV: "SuspendedEV", SUSPENDED_EVSE: "SuspendedEVSE",
                   PREPARING: "EVConnected", FINISHING: "EVConnected"}
_STOP_REASON_201 = {"EVDisconnected": "EVDisconnected", "Remote": "Remote", "DeAuthorized": "DeAuthorized",
                    "ImmediateReset": "ImmediateReset", "SoftReset": "ImmediateReset"}
_TRIGGER_OF_REASON = {"EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop",
                      "DeAuthorized": "Deauthorized", "ImmediateReset": "ResetCommand"}


def connector_status_201(code: int) -> str:
    if code == FAULTED:
        return "Faulted"
    if code == UNAVAILABLE:
        return "Unavailable"
    if code == RESERVED:
        return "Reserved"
    return "Available" if code == 0 else "Occupied"


class ChargePoint201(VirtualChargePoint):
    version = "2.0.1"

    VARIABLES = {  # (component, variable) -> (settings key or constant, readonly)
        ("SampledDataCtrlr", "TxUpdatedInterval"): ("meter_interval_s", False),
        ("OCPPCommCtrlr", "HeartbeatInterval"): ("heartbeat_interval_s", False),
        ("SmartChargingCtrlr", "Enabled"): ("true", True),
        ("SmartChargingCtrlr", "ProfileStackLevel"): ("max_stack_level", True),
        ("SmartChargingCtrlr", "RateUnit"): ("A,W", True),
        ("SmartChargingCtrlr", "PeriodsPerSchedule"): ("max_periods", True),
        ("SmartChargingCtrlr", "Entries"): ("max_profiles", True),
    }

    def _boot_payload(self) -> Payload:
        return {"chargingStation": {"model": self.cfg.model[:20], "vendorName": self.cfg.vendor[:50],
                                    "serialNumber": (self.cfg.serial or self.cp_id)[:25],
                                    "firmwareVersion": self.cfg.firmware[:50]},
                "reason": "PowerUp"}

    def _samples(self, context: str, register: float | None = None) -> list[dict]:
        m = self.meter_snapshot()
        reg = m["e_wh"] if register is None else register
        uom = lambda u: {"unitOfMeasure": {"unit": u}}  # noqa: E731
        sv = [{"value": round(reg, 3), "context": context, "measurand": "Energy.Active.Import.Register",
               "location": "Outlet", **uom("Wh")}]
        if context not in ("Transaction.Begin", "Transaction.End"):
            sv.append({"value": round(m["p_w"], 3), "context": context, "measurand": "Power.Active.Import",
                       "location": "Outlet", **uom("W")})
            for ph, key in (("L1", "i_l1_a"), ("L2", "i_l2_a"), ("L3", "i_l3_a")):
                sv.append({"value": round(m[key], 3), "context": context, "measurand": "Current.Import",
                           "phase": ph, "location": "Outlet", **uom("A")})
            sv.append({"value": round(m["p_max_w"], 3), "context": context, "measurand": "Power.Offered",
                       "location": "Outlet", **uom("W")})
            sv.append({"value": round(m["i_max_a"], 3), "context": context, "measurand": "Current.Offered",
                       "location": "Outlet", **uom("A")})
            if math.isfinite(m["soc"]):
                sv.append({"value": round(m["soc"] * 100.0, 3), "context": context, "measurand": "SoC",
                           "location": "EV", **uom("Percent")})
        return sv

    def _meter_value(self, when: datetime, context: str, register: float | None = None) -> dict:
        return {"timestamp": pf.format_time(when), "sampledValue": self._samples(context, register)}

    def _send_status(self, when: datetime, force: bool = False) -> None:
        code = int(self.bank.status[0])
        old = self.reported_status
        if code == old and not force:
            return
        self.reported_status = code
        if force or old is None or connector_status_201(code) != connector_status_201(old):
            payload = {"timestamp": pf.format_time(when), "connectorStatus": connector_status_201(code),
                       "evseId": CONNECTOR, "connectorId": CONNECTOR}
            self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))
        tx = self.tx
        state = _CHARGING_STATE.get(code)
        if tx is not None and state is not None and state != tx.charging_state:
            tx.charging_state = state
            self._tx_event(tx, "Updated", when, "ChargingStateChanged", {"chargingState": state})

    def _tx_event(self, tx: LocalTx, event: str, when: datetime, trigger: str, info: dict,
                  meter: list | None = None, extra: dict | None = None) -> None:
        payload: Payload = {"eventType": event, "timestamp": pf.format_time(when), "triggerReason": trigger,
                            "seqNo": tx.seq_no, "transactionInfo": {"transactionId": tx.local_id, **info},
                            "evse": {"id": CONNECTOR, "connectorId": CONNECTOR}}
        tx.seq_no += 1
        if meter:
            payload["meterValue"] = meter
        if not self.connected:
            payload["offline"] = True
        if extra:
            payload.update(extra)
        self.enqueue(OutMsg("TransactionEvent", lambda: payload, persistent=True))

    def _start_tx(self, when: datetime) -> None:
        tx = self.tx
        assert tx is not None
        tx.remote_id = tx.local_id
        code = int(self.bank.status[0])
        tx.charging_state = _CHARGING_STATE.get(code, "EVConnected")
        info: dict = {"chargingState": tx.charging_state}
        remote_id = self._remote_start_id
        trigger = "RemoteStart" if remote_id is not None else "CablePluggedIn"
        if remote_id is not None:
            info["remoteStartId"] = remote_id
            self._remote_start_id = None
        self._tx_event(tx, "Started", when, trigger, info,
                       meter=[self._meter_value(when, "Transaction.Begin", tx.start_register_wh)],
                       extra={"idToken": {"idToken": tx.id_tag, "type": "Central" if remote_id is not None
                                          else "Local"}})
        raw = self._pending_start_profile
        if raw:
            self._pending_start_profile = None
            self.set_profile(pf.from_v201(CONNECTOR, {**raw, "transactionId": tx.local_id}))

    def _stop_tx(self, when: datetime, reason: str) -> None:
        tx = self.tx
        assert tx is not None
        self.tx = None
        stopped = _STOP_REASON_201.get(reason, "Other")
        trigger = "EVDeparted" if reason == "EVDisconnected" else _TRIGGER_OF_REASON.get(reason, "AbnormalCondition")
        state = "Idle" if reason == "EVDisconnected" else "EVConnected"
        self._tx_event(tx, "Ended", when, trigger, {"chargingState": state, "stoppedReason": stopped},
                       meter=[self._meter_value(when, "Transaction.End", self._register())])

    def _send_periodic_meter(self, when: datetime) -> None:
        tx = self.tx
        assert tx is not None
        self._tx_event(tx, "Updated", when, "MeterValuePeriodic", {},
                       meter=[self._meter_value(when, "Sample.Periodic")])

    def _send_triggered_meter(self) -> None:
        payload = {"evseId": CONNECTOR, "meterValue": [self._meter_value(self._now(), "Trigger")]}
        self.enqueue(OutMsg("MeterValues", lambda: payload, persistent=False))

    # handlers -------------------------------------------------------------------------------------------------
    def _install_handlers(self, ep: Endpoint) -> None:
        ep.handlers.update({
            "SetChargingProfile": self._on_set_profile, "ClearChargingProfile": self._on_clear_profile,
            "GetCompositeSchedule": self._on_composite, "RequestStartTransaction": self._on_remote_start,
            "RequestStopTransaction": self._on_remote_stop, "GetVariables": self._on_get_variables,
            "SetVariables": self._on_set_variables, "TriggerMessage": self._on_trigger, "Reset": self._on_reset,
            "DataTransfer": self._on_data_transfer, "ChangeAvailability": self._on_availability,
        })
        ep.after.update({"TriggerMessage": self._after_trigger, "RequestStartTransaction": self._after_remote,
                         "RequestStopTransaction": self._after_remote, "Reset": self._after_reset,
                         "ChangeAvailability": self._after_remote})

    async def _on_availability(self, p: Payload) -> Payload:
        if (p.get("evse") or {}).get("id", 0) not in (0, CONNECTOR):
            return {"status": "Rejected"}
        return {"status": self.change_availability(p["operationalStatus"] == "Operative")}

    async def _on_set_profile(self, p: Payload) -> Payload:
        try:
            profile = pf.from_v201(p["evseId"], p["chargingProfile"])
        except pf.ProfileError as exc:
            raise OcppFault("PropertyConstraintViolation", str(exc)) from None
        status = self.set_profile(profile)
        out: Payload = {"status": status}
        if status == "Rejected":
            out["statusInfo"] = {"reasonCode": "InvalidProfile"}
        return out

    async def _on_clear_profile(self, p: Payload) -> Payload:
        crit = p.get("chargingProfileCriteria") or {}
        purpose = crit.get("chargingProfilePurpose")
        purpose = {"ChargingStationMaxProfile": pf.MAX}.get(purpose, purpose)
        self.profiles, n = pf.clear(self.profiles, profile_id=p.get("chargingProfileId"),
                                    connector=crit.get("evseId"), purpose=purpose, stack_level=crit.get("stackLevel"))
        return {"status": "Accepted" if n else "Unknown"}

    async def _on_composite(self, p: Payload) -> Payload:
        evse = int(p["evseId"])
        if not 0 <= evse <= self.station.connectors:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEVSE"}}
        unit = p.get("chargingRateUnit") or "W"
        start, periods = self.composite(evse, int(p["duration"]), unit)
        return {"status": "Accepted", "schedule": {
            "evseId": evse, "duration": int(p["duration"]), "scheduleStart": pf.format_time(start),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": q.start_s, "limit": floor1(q.limit),
                                        "numberPhases": int(q.phases or self.station.phases)} for q in periods]}}

    async def _on_remote_start(self, p: Payload) -> Payload:
        if p.get("evseId", CONNECTOR) != CONNECTOR or self.tx is not None:
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        if prof is not None and prof.get("chargingProfilePurpose") != pf.TX:
            return {"status": "Rejected"}
        if not self.remote_start(p["idToken"]["idToken"], prof):
            return {"status": "Rejected"}
        self._remote_start_id = int(p["remoteStartId"])
        return {"status": "Accepted"}

    async def _on_remote_stop(self, p: Payload) -> Payload:
        if self.tx is None or p["transactionId"] != self.tx.local_id:
            return {"status": "Rejected"}
        self.remote_stop()
        return {"status": "Accepted"}

    async def _after_remote(self, _: Payload) -> None:
        self._emit_changes(self._now(), trigger="RemoteStart")

    def _variable(self, comp: str, var: str) -> tuple[str, bool] | None:
        found = self.VARIABLES.get((comp, var))
        if found is None:
            return None
        key, ro = found
        if key in self.settings:
            return str(self.settings[key]), ro
        if hasattr(self.station, key):
            return str(getattr(self.station, key)), ro
        return key, ro

    async def _on_get_variables(self, p: Payload) -> Payload:
        results = []
        for item in p["getVariableData"]:
            comp, var = item["component"]["name"], item["variable"]["name"]
            found = self._variable(comp, var)
            res: Payload = {"component": item["component"], "variable": item["variable"]}
            if found is None:
                known_comp = any(c == comp for c, _ in self.VARIABLES)
                res["attributeStatus"] = "UnknownVariable" if known_comp else "UnknownComponent"
            else:
                res["attributeStatus"] = "Accepted"
                res["attributeValue"] = found[0]
            results.append(res)
        return {"getVariableResult": results}

    async def _on_set_variables(self, p: Payload) -> Payload:
        results = []
        for item in p["setVariableData"]:
            comp, var = item["component"]["name"], item["variable"]["name"]
            res: Payload = {"component": item["component"], "variable": item["variable"]}
            found = self.VARIABLES.get((comp, var))
            if found is None:
                known_comp = any(c == comp for c, _ in self.VARIABLES)
                res["attributeStatus"] = "UnknownVariable" if known_comp else "UnknownComponent"
            elif found[1]:
                res["attributeStatus"] = "Rejected"
            else:
                try:
                    v = int(item["attributeValue"])
                except ValueError:
                    v = -1
                if v < 0:
                    res["attributeStatus"] = "Rejected"
                else:
                    self.settings[found[0]] = v
                    res["attributeStatus"] = "Accepted"
            results.append(res)
        return {"setVariableResult": results}

    async def _on_trigger(self, p: Payload) -> Payload:
        evse = (p.get("evse") or {}).get("id", CONNECTOR)
        if evse not in (0, CONNECTOR):
            return {"status": "Rejected"}
        ok = p["requestedMessage"] in ("MeterValues", "StatusNotification", "Heartbeat", "BootNotification",
                                       "TransactionEvent")
        if p["requestedMessage"] == "TransactionEvent" and self.tx is None:
            return {"status": "Rejected"}
        return {"status": "Accepted" if ok else "NotImplemented"}

    async def _after_trigger(self, p: Payload) -> None:
        what = p["requestedMessage"]
        if what == "MeterValues":
            self._send_triggered_meter()
        elif what == "StatusNotification":
            code = int(self.bank.status[0])
            payload = {"timestamp": pf.format_time(self._now()), "connectorStatus": connector_status_201(code),
                       "evseId": CONNECTOR, "connectorId": CONNECTOR}
            self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))
        elif what == "Heartbeat":
            self.enqueue(OutMsg("Heartbeat", lambda: {}, persistent=False))
        elif what == "BootNotification":
            self.enqueue(OutMsg("BootNotification", self._boot_payload, persistent=False))
        elif what == "TransactionEvent" and self.tx is not None:
            self._tx_event(self.tx, "Updated", self._now(), "Trigger", {},
                           meter=[self._meter_value(self._now(), "Trigger")])

    async def _on_reset(self, p: Payload) -> Payload:
        return {"status": "Accepted"}

    async def _after_reset(self, p: Payload) -> None:
        await self.reset()

    async def _on_data_transfer(self, p: Payload) -> Payload:
        return {"status": "UnknownVendorId"}


CHARGE_POINTS: dict[str, type[VirtualChargePoint]] = {"1.6": ChargePoint16, "2.0.1": ChargePoint201}



__all__ = ["VirtualChargePoint", "ChargePoint16", "ChargePoint201", "CHARGE_POINTS", "OutMsg", "LocalTx", "floor1"]
