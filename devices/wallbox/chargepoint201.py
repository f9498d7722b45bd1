"""The virtual charge point speaking OCPP 2.0.1: message shapes and the handler table.

2.0.1 specifics: the charge point names its transactions (TransactionEvent Started/Updated/Ended with a
running ``seqNo`` and the ``offline`` flag for events produced without a connection), connector status and
charging state are separate, meter values are numbers with ``unitOfMeasure``, and configuration is the
device model (GetVariables / SetVariables, only the ``Actual`` attribute).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, ClassVar
from collections.abc import Callable

from devices.wallbox import profiles as pf
from devices.wallbox.chargepoint import CONNECTOR, LocalTx, VirtualChargePoint
from devices.wallbox.model import CHARGING, FAULTED, FINISHING, PREPARING, RESERVED, SUSPENDED_EV, SUSPENDED_EVSE, \
    UNAVAILABLE
from devices.wallbox.outbox import OutMsg
from devices.wallbox.rpc import OcppFault, Payload
from devices.wallbox import certificates

_CHARGING_STATE = {CHARGING: "Charging", SUSPENDED_EV: "SuspendedEV", SUSPENDED_EVSE: "SuspendedEVSE",
                   PREPARING: "EVConnected", FINISHING: "EVConnected"}
_STOP_REASON = {"EVDisconnected": "EVDisconnected", "Remote": "Remote", "DeAuthorized": "DeAuthorized",
                "ImmediateReset": "ImmediateReset", "SoftReset": "ImmediateReset", "HardReset": "ImmediateReset"}
_TRIGGER_OF_REASON = {"EVDisconnected": "EVCommunicationLost", "Remote": "RemoteStop",
                      "DeAuthorized": "Deauthorized", "ImmediateReset": "ResetCommand"}
TRIGGERABLE = ("MeterValues", "StatusNotification", "Heartbeat", "BootNotification", "TransactionEvent",
               "SignChargingStationCertificate")


def connector_status(code: int) -> str:
    if code == FAULTED:
        return "Faulted"
    if code == UNAVAILABLE:
        return "Unavailable"
    if code == RESERVED:
        return "Reserved"
    return "Available" if code == 0 else "Occupied"


class ChargePoint201(VirtualChargePoint):
    version = "2.0.1"

    HANDLERS: ClassVar[dict[str, str]] = {
        "SetChargingProfile": "_on_set_profile", "ClearChargingProfile": "_on_clear_profile",
        "GetCompositeSchedule": "_on_composite", "RequestStartTransaction": "_on_remote_start",
        "RequestStopTransaction": "_on_remote_stop", "GetVariables": "_on_get_variables",
        "SetVariables": "_on_set_variables", "TriggerMessage": "_on_trigger", "Reset": "_on_reset",
        "DataTransfer": "_on_data_transfer", "ChangeAvailability": "_on_availability",
        "CertificateSigned": "_on_certificate_signed", "InstallCertificate": "_on_install_certificate",
        "GetInstalledCertificateIds": "_on_get_installed_ids", "DeleteCertificate": "_on_delete_certificate",
    }
    AFTER: ClassVar[dict[str, str]] = {"TriggerMessage": "_after_trigger", "RequestStartTransaction": "_after_remote",
             "RequestStopTransaction": "_after_remote", "Reset": "_after_reset", "ChangeAvailability": "_after_remote"}
    ROOT_TYPES = certificates.ROOT_TYPES["2.0.1"]
    INVALID_CERTIFICATE_EVENT = "InvalidChargingStationCertificate"

    # (component, variable, instance) -> (settings key or constant, readonly)
    VARIABLES: ClassVar[dict[tuple[str, str, str | None], tuple[str, bool]]] = {
        ("SampledDataCtrlr", "TxUpdatedInterval", None): ("meter_interval_s", False),
        ("OCPPCommCtrlr", "HeartbeatInterval", None): ("heartbeat_interval_s", False),
        ("OCPPCommCtrlr", "MessageAttempts", "TransactionEvent"): ("tx_attempts", False),
        ("OCPPCommCtrlr", "MessageAttemptInterval", "TransactionEvent"): ("tx_retry_interval_s", False),
        ("SmartChargingCtrlr", "Enabled", None): ("true", True),
        ("SmartChargingCtrlr", "ProfileStackLevel", None): ("max_stack_level", True),
        ("SmartChargingCtrlr", "RateUnit", None): ("A,W", True),
        ("SmartChargingCtrlr", "PeriodsPerSchedule", None): ("max_periods", True),
        ("SmartChargingCtrlr", "Entries", None): ("max_profiles", True),
        # security (2.0.1 part 2, A00): the profile changes through NetworkConnectionProfiles, not SetVariables
        ("SecurityCtrlr", "SecurityProfile", None): ("security_profile", True),
        ("SecurityCtrlr", "BasicAuthPassword", None): ("authorization_key", False),  # write-only
    }
    WRITE_ONLY = frozenset({"authorization_key"})

    def _boot_payload(self) -> Payload:
        return {"chargingStation": {"model": self.cfg.model[:20], "vendorName": self.cfg.vendor[:50],
                                    "serialNumber": (self.cfg.serial or self.cp_id)[:25],
                                    "firmwareVersion": self.cfg.firmware[:50]},
                "reason": "PowerUp"}

    # -- messages --------------------------------------------------------------------------------------------
    def _samples(self, context: str, register: float | None = None) -> list[dict[str, Any]]:
        m = self.meter_snapshot()
        reg = m["e_wh"] if register is None else register
        uom: Callable[[str], dict[str, dict[str, str]]] = lambda u: {"unitOfMeasure": {"unit": u}}  # noqa: E731
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

    def _meter_value(self, when: datetime, context: str, register: float | None = None) -> dict[str, Any]:
        return {"timestamp": pf.format_time(when), "sampledValue": self._samples(context, register)}

    def _status_payload(self, when: datetime, code: int) -> Payload:
        return {"timestamp": pf.format_time(when), "connectorStatus": connector_status(code),
                "evseId": CONNECTOR, "connectorId": CONNECTOR}

    def _send_status(self, when: datetime, force: bool = False) -> None:
        code = int(self.bank.status[0])
        old = self.reported_status
        if code == old and not force:
            return
        self.reported_status = code
        if force or old is None or connector_status(code) != connector_status(old):
            payload = self._status_payload(when, code)
            self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))
        tx = self.tx
        state = _CHARGING_STATE.get(code)
        if tx is not None and state is not None and state != tx.charging_state:
            tx.charging_state = state
            self._tx_event(tx, "Updated", when, "ChargingStateChanged", {"chargingState": state})

    def _tx_event(self, tx: LocalTx, event: str, when: datetime, trigger: str, info: dict[str, Any],
                  meter: list[Any] | None = None, extra: dict[str, Any] | None = None) -> None:
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
        info: dict[str, Any] = {"chargingState": tx.charging_state}
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
        stopped = _STOP_REASON.get(reason, "Other")
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

    # -- handlers --------------------------------------------------------------------------------------------
    async def _on_availability(self, p: Payload) -> Payload:
        if (p.get("evse") or {}).get("id", 0) not in (0, CONNECTOR):
            return {"status": "Rejected"}
        return {"status": self.change_availability(p["operationalStatus"] == "Operative")}

    async def _on_set_profile(self, p: Payload) -> Payload:
        try:
            profile = pf.from_v201(p["evseId"], p["chargingProfile"])
        except pf.ProfileError as exc:
            raise OcppFault("PropertyConstraintViolation", str(exc)) from None
        if profile.purpose == pf.EXTERNAL:  # K01.FR.22: set by an external system, never by the CSMS
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidValue",
                                                         "additionalInfo": "ExternalConstraintsNotSettable"}}
        status = self.set_profile(profile)
        out: Payload = {"status": status}
        if status == "Rejected":
            out["statusInfo"] = {"reasonCode": "InvalidProfile"}
        return out

    async def _on_clear_profile(self, p: Payload) -> Payload:
        crit = p.get("chargingProfileCriteria") or {}
        purpose = crit.get("chargingProfilePurpose")
        if purpose == pf.EXTERNAL:  # K10.FR.06: external constraints are not the CSMS's to clear
            return {"status": "Unknown", "statusInfo": {"reasonCode": "InvalidValue"}}
        purpose = pf.MAX if purpose == "ChargingStationMaxProfile" else purpose
        return {"status": self.clear_profiles(profile_id=p.get("chargingProfileId"), connector=crit.get("evseId"),
                                              purpose=purpose, stack_level=crit.get("stackLevel"))}

    async def _on_composite(self, p: Payload) -> Payload:
        evse = int(p["evseId"])
        duration = int(p["duration"])
        if not 0 <= evse <= self.station.connectors:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnknownEVSE"}}
        if duration < 0:
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidValue"}}
        unit = p.get("chargingRateUnit") or "W"
        start, periods = self.composite(evse, duration, unit)
        return {"status": "Accepted", "schedule": {
            "evseId": evse, "duration": duration, "scheduleStart": pf.format_time(start),
            "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": q.start_s, "limit": pf.floor1(q.limit),
                                        "numberPhases": int(q.phases or self.station.phases)} for q in periods]}}

    async def _on_remote_start(self, p: Payload) -> Payload:
        if p.get("evseId", CONNECTOR) != CONNECTOR or self.tx is not None:
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        # a TxProfile for the transaction about to start: the charge point gives it the id
        if prof is not None and (prof.get("chargingProfilePurpose") != pf.TX or "transactionId" in prof):
            return {"status": "Rejected", "statusInfo": {"reasonCode": "InvalidProfile"}}
        if not self.remote_start(p["idToken"]["idToken"], prof):
            return {"status": "Rejected"}
        self._remote_start_id = int(p["remoteStartId"])
        return {"status": "Accepted"}

    async def _on_remote_stop(self, p: Payload) -> Payload:
        if self.tx is None or p["transactionId"] != self.tx.local_id:
            return {"status": "Rejected"}
        self.remote_stop()
        return {"status": "Accepted"}

    def _lookup(self, item: Payload) -> tuple[str, tuple[str, bool] | None]:
        """(attribute status if not found, (settings key or constant, readonly)) of a GetVariables/SetVariables
        item."""
        comp, var = item["component"]["name"], item["variable"]["name"]
        key = (comp, var, item["variable"].get("instance"))
        found = self.VARIABLES.get(key)
        if found is None:
            known_comp = any(c == comp for c, _, _ in self.VARIABLES)
            return ("UnknownVariable" if known_comp else "UnknownComponent"), None
        if item.get("attributeType", "Actual") != "Actual":
            return "NotSupportedAttributeType", None
        return "Accepted", found

    def _value(self, key: str) -> str:
        if key in self.settings:
            return str(self.settings[key])
        if hasattr(self.station, key):
            return str(getattr(self.station, key))
        return key

    async def _on_get_variables(self, p: Payload) -> Payload:
        results = []
        for item in p["getVariableData"]:
            status, found = self._lookup(item)
            res: Payload = {"component": item["component"], "variable": item["variable"], "attributeStatus": status}
            if "attributeType" in item:
                res["attributeType"] = item["attributeType"]
            if found is not None and found[0] in self.WRITE_ONLY:
                res["attributeStatus"] = "Rejected"  # a write-only variable is never read back
            elif found is not None:
                res["attributeValue"] = self._value(found[0])
            results.append(res)
        return {"getVariableResult": results}

    async def _on_set_variables(self, p: Payload) -> Payload:
        results = []
        for item in p["setVariableData"]:
            status, found = self._lookup(item)
            if found is not None:
                key, readonly = found
                status = "Rejected" if readonly else self._set_setting(key, item["attributeValue"])
            res: Payload = {"component": item["component"], "variable": item["variable"], "attributeStatus": status}
            if "attributeType" in item:
                res["attributeType"] = item["attributeType"]
            results.append(res)
        return {"setVariableResult": results}

    def _set_setting(self, key: str, text: str) -> str:
        if key == "authorization_key":
            return self.change_security(key, text)
        try:
            v = float(text) if key == "tx_retry_interval_s" else int(text)
        except ValueError:
            return "Rejected"
        if v < 0 or not math.isfinite(v) or (key == "tx_attempts" and v < 1):
            return "Rejected"
        self.settings[key] = v
        return "Accepted"

    async def _on_trigger(self, p: Payload) -> Payload:
        evse = (p.get("evse") or {}).get("id", CONNECTOR)
        if evse not in (0, CONNECTOR):
            return {"status": "Rejected"}
        if p["requestedMessage"] == "TransactionEvent" and self.tx is None:
            return {"status": "Rejected"}
        if p["requestedMessage"] == "SignChargingStationCertificate" and self.security.certificates is None:
            return {"status": "Rejected"}  # no certificate of ours to renew (not on security profile 3)
        return {"status": "Accepted" if p["requestedMessage"] in TRIGGERABLE else "NotImplemented"}

    async def _after_trigger(self, p: Payload) -> None:
        what = p["requestedMessage"]
        if what == "MeterValues":
            self._send_triggered_meter()
        elif what == "StatusNotification":
            payload = self._status_payload(self._now(), int(self.bank.status[0]))
            self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))
        elif what == "Heartbeat":
            self.enqueue(OutMsg("Heartbeat", dict, persistent=False))
        elif what == "BootNotification":
            self.enqueue(OutMsg("BootNotification", self._boot_payload, persistent=False))
        elif what == "SignChargingStationCertificate":
            self._send_sign_request()
        elif what == "TransactionEvent" and self.tx is not None:
            self._tx_event(self.tx, "Updated", self._now(), "Trigger", {},
                           meter=[self._meter_value(self._now(), "Trigger")])

    async def _on_reset(self, p: Payload) -> Payload:
        if p.get("evseId") is not None:  # resetting a single EVSE is not supported (the station has one)
            return {"status": "Rejected", "statusInfo": {"reasonCode": "UnsupportedRequest"}}
        if p["type"] == "OnIdle" and self.tx is not None:
            self._reset_after_tx = True
            return {"status": "Scheduled"}
        return {"status": "Accepted"}

    async def _after_reset(self, p: Payload) -> None:
        if not self._reset_after_tx and p.get("evseId") is None:
            await self.reset("ImmediateReset")


__all__ = ["ChargePoint201", "connector_status"]
