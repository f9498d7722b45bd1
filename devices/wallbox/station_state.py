"""What a charge point has told us, kept across its reconnects: boot data, status, transaction, meter values.

Our CSMS and the proxy observe the station's calls and our (or the upstream's) answers with the same
:class:`StationState`; the driver reads its measurements from it. Units: meter values are converted to W,
Wh and A whatever prefix the station uses (``k``: 1000), 2.0.1 multipliers applied.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from collections.abc import Callable, Mapping

from devices.wallbox import profiles as pf
from devices.wallbox.model import STATUS_NAMES
from devices.wallbox.rpc import Payload

_STATUS_CODE = {name: i for i, name in enumerate(STATUS_NAMES)}
_STATE_201 = {"Charging": 2, "SuspendedEVSE": 3, "SuspendedEV": 4, "EVConnected": 1, "Idle": 1}
_CONNECTOR_201 = {"Available": 0, "Reserved": 6, "Unavailable": 7, "Faulted": 8}


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return v


def sample_unit(sv: Mapping[str, Any]) -> str:
    """The unit of a sampled value (1.6 ``unit``, 2.0.1 ``unitOfMeasure.unit``; default Wh)."""
    return str(sv.get("unit") or (sv.get("unitOfMeasure") or {}).get("unit") or "Wh")


def sample_value(sv: Mapping[str, Any]) -> float:
    """A sampled value in base units (W, Wh, A, var, ...): the 1.6 prefix ``k`` and the 2.0.1 multiplier
    applied (bounded: a multiplier of 10^60 is no measurement, and must not cost a huge power). NaN if the
    value is not a number (1.6 values are strings)."""
    m = int((sv.get("unitOfMeasure") or {}).get("multiplier", 0))
    v = _num(sv.get("value")) * 10.0 ** max(min(m, 300), -300)
    unit = sample_unit(sv)
    return v * 1000.0 if len(unit) > 1 and unit[0] == "k" else v


@dataclass
class StationState:
    """Everything a charge point has told us; survives reconnects."""

    cp_id: str
    version: str
    connected: bool = False
    booted: bool = False
    boots: int = 0
    epoch: int = 0  # moves on at every boot and when someone else changes the profiles (proxy upstream)
    boot: dict[str, Any] = field(default_factory=dict)
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
    connectors: int = 1  # connectors (1.6) / EVSEs (2.0.1) the station may name; more is an impossible value
    tls_serial: str = ""  # serial (hex) of the client certificate of the current connection (profile 3)
    #: certificate renewals by request: the serial signed last and how it ended (pending, installed, refused)
    renewal_serial: str = ""
    renewal: str = ""
    #: 1.6: the transaction ids we assigned (the last 256, oldest first), True while running; a repeated
    #: StopTransaction (its answer was lost) is fine, a stop of an id we never gave is not
    known_tx: dict[str, bool] = field(default_factory=dict)
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

    def _meter(self, meter_values: list[dict[str, Any]], tx_match: bool = True) -> None:
        for mv in meter_values or []:
            self._seen_time(mv.get("timestamp"))
            for sv in mv.get("sampledValue", []):
                if sv.get("format") == "SignedData":
                    continue  # a signed blob, not a number
                measurand = sv.get("measurand", "Energy.Active.Import.Register")
                context = sv.get("context", "Sample.Periodic")
                v = sample_value(sv)
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
            # the transaction exists once the CSMS has answered (observe_result)
        elif action == "StopTransaction":
            self._seen_time(p.get("timestamp"))
            end = float(p["meterStop"])
            start = self.tx_start_wh
            for mv in p.get("transactionData") or []:
                for sv in mv.get("sampledValue", []):
                    if sv.get("format") == "SignedData":
                        continue
                    if sv.get("measurand", "Energy.Active.Import.Register") == "Energy.Active.Import.Register":
                        if sv.get("context") == "Transaction.End":
                            end = sample_value(sv)
                        elif sv.get("context") == "Transaction.Begin" and not math.isfinite(start):
                            start = sample_value(sv)
            first_stop = self.known_tx.get(str(p["transactionId"]), False)
            self.known_tx[str(p["transactionId"])] = False
            if self.tx_id is not None and str(p["transactionId"]) == self.tx_id:
                self.last_session_wh = end - start if math.isfinite(start) else math.nan
                self.tx_id = None
                self.tx_start_wh = math.nan
            self.e_wh = end
            self.transactions_stopped += first_stop
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
            self.known_tx[self.tx_id] = True
            while len(self.known_tx) > 256:
                del self.known_tx[next(iter(self.known_tx))]
            self.tx_start_wh = float(request["meterStart"])
            self.transactions_started += 1


__all__ = ["StationState", "sample_unit", "sample_value"]
