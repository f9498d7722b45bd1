"""The virtual charge point speaking OCPP 1.6J: message shapes and the handler table.

1.6 specifics: the CSMS assigns the transaction id in its StartTransaction answer; messages of that
transaction built before the answer get the id when they are sent (the outbox keeps them in order).
A StartTransaction the CSMS refuses for good leaves no transaction to refer to: its later MeterValues go
without ``transactionId`` (never -1) and its StopTransaction is skipped. Meter values are strings with units.
"""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Any, ClassVar

from devices.wallbox import profiles as pf
from devices.wallbox.chargepoint import CONNECTOR, LocalTx, VirtualChargePoint
from devices.wallbox.model import FAULTED, STATUS_NAMES
from devices.wallbox.outbox import OutMsg
from devices.wallbox.rpc import OcppFault, Payload
from devices.wallbox import certificates

log = logging.getLogger(__name__)

TRIGGERABLE = ("MeterValues", "StatusNotification", "Heartbeat", "BootNotification")


def fmt(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}"


class ChargePoint16(VirtualChargePoint):
    version = "1.6"

    HANDLERS: ClassVar[dict[str, str]] = {
        "SetChargingProfile": "_on_set_profile", "ClearChargingProfile": "_on_clear_profile",
        "GetCompositeSchedule": "_on_composite", "RemoteStartTransaction": "_on_remote_start",
        "RemoteStopTransaction": "_on_remote_stop", "ChangeConfiguration": "_on_change_config",
        "GetConfiguration": "_on_get_config", "TriggerMessage": "_on_trigger", "Reset": "_on_reset",
        "DataTransfer": "_on_data_transfer", "ChangeAvailability": "_on_availability",
        # the security extension (OCPP 1.6 security whitepaper, edition 3)
        "ExtendedTriggerMessage": "_on_extended_trigger", "CertificateSigned": "_on_certificate_signed",
        "InstallCertificate": "_on_install_certificate", "GetInstalledCertificateIds": "_on_get_installed_ids",
        "DeleteCertificate": "_on_delete_certificate",
    }
    AFTER: ClassVar[dict[str, str]] = {"TriggerMessage": "_after_trigger", "RemoteStartTransaction": "_after_remote",
             "RemoteStopTransaction": "_after_remote", "Reset": "_after_reset", "ChangeAvailability": "_after_remote",
             "ExtendedTriggerMessage": "_after_extended_trigger"}
    ROOT_TYPES = certificates.ROOT_TYPES["1.6"]
    INVALID_CERTIFICATE_EVENT = "InvalidChargePointCertificate"

    #: read-write configuration keys -> settings
    CONFIG_RW: ClassVar[dict[str, str]] = {
        "MeterValueSampleInterval": "meter_interval_s", "HeartbeatInterval": "heartbeat_interval_s",
        "TransactionMessageAttempts": "tx_attempts", "TransactionMessageRetryInterval": "tx_retry_interval_s"}
    #: security whitepaper keys: the password is write-only (listed without its value), the profile only goes up
    CONFIG_SECURITY: ClassVar[dict[str, str]] = {"AuthorizationKey": "authorization_key",
                                                  "SecurityProfile": "security_profile"}
    CONFIG_READONLY = ("ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit",
                       "ChargingScheduleMaxPeriods", "MaxChargingProfilesInstalled", "NumberOfConnectors",
                       "SupportedFeatureProfiles", "MeterValuesSampledData")

    def _config(self) -> dict[str, str | None]:
        out: dict[str, str | None] = {key: str(self.settings[name]) for key, name in self.CONFIG_RW.items()}
        out["SecurityProfile"] = str(self.settings["security_profile"])
        out["AuthorizationKey"] = None  # write-only
        out.update({
            "ChargeProfileMaxStackLevel": str(self.station.max_stack_level),
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": str(self.station.max_periods),
            "MaxChargingProfilesInstalled": str(self.station.max_profiles),
            "NumberOfConnectors": "1",
            "SupportedFeatureProfiles": "Core,SmartCharging,RemoteTrigger",
            "MeterValuesSampledData": "Energy.Active.Import.Register,Power.Active.Import,Current.Import,"
                                      "Power.Offered,Current.Offered,SoC",
        })
        return out

    def _boot_payload(self) -> Payload:
        out = {"chargePointVendor": self.cfg.vendor[:20], "chargePointModel": self.cfg.model[:20],
               "firmwareVersion": self.cfg.firmware[:50]}
        out["chargePointSerialNumber"] = (self.cfg.serial or self.cp_id)[:25]
        return out

    # -- messages --------------------------------------------------------------------------------------------
    def _samples(self, context: str, register: float | None = None) -> list[dict[str, Any]]:
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

    def _meter_value(self, when: datetime, context: str, register: float | None = None) -> dict[str, Any]:
        return {"timestamp": pf.format_time(when), "sampledValue": self._samples(context, register)}

    def _send_status(self, when: datetime, force: bool = False) -> None:
        code = int(self.bank.status[0])
        if code == self.reported_status and not force:
            return
        self.reported_status = code
        payload = {"connectorId": CONNECTOR, "errorCode": "OtherError" if code == FAULTED else "NoError",
                   "status": STATUS_NAMES[code], "timestamp": pf.format_time(when)}
        self.enqueue(OutMsg("StatusNotification", lambda: payload, persistent=False))

    @staticmethod
    def _tx_meter_values(tx: LocalTx, mv: dict[str, Any]) -> OutMsg:
        """MeterValues of a transaction: with the id the CSMS assigned, without one if it refused the start."""
        def build() -> Payload:
            out: Payload = {"connectorId": CONNECTOR, "meterValue": [mv]}
            if tx.remote_id is not None:
                out["transactionId"] = int(tx.remote_id)
            return out
        return OutMsg("MeterValues", build, persistent=True)

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
        self.enqueue(self._tx_meter_values(tx, begin))
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

        def build() -> Payload | None:
            if tx.remote_id is None:  # the CSMS refused the start: there is no transaction to stop
                return None
            return {**payload, "transactionId": int(tx.remote_id)}
        self.enqueue(OutMsg("StopTransaction", build, persistent=True))

    def _send_periodic_meter(self, when: datetime) -> None:
        tx = self.tx
        assert tx is not None
        self.enqueue(self._tx_meter_values(tx, self._meter_value(when, "Sample.Periodic")))

    def _send_triggered_meter(self) -> None:
        tx = self.tx
        payload: Payload = {"connectorId": CONNECTOR, "meterValue": [self._meter_value(self._now(), "Trigger")]}
        if tx is not None and tx.remote_id is not None:
            payload["transactionId"] = int(tx.remote_id)
        self.enqueue(OutMsg("MeterValues", lambda: payload, persistent=False))

    # -- handlers --------------------------------------------------------------------------------------------
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
        return {"status": self.clear_profiles(profile_id=p.get("id"), connector=p.get("connectorId"),
                                              purpose=p.get("chargingProfilePurpose"),
                                              stack_level=p.get("stackLevel"))}

    async def _on_composite(self, p: Payload) -> Payload:
        connector = int(p["connectorId"])
        duration = int(p["duration"])
        if not 0 <= connector <= self.station.connectors or duration < 0:
            return {"status": "Rejected"}
        unit = p.get("chargingRateUnit") or "W"
        start, periods = self.composite(connector, duration, unit)
        return {"status": "Accepted", "connectorId": connector, "scheduleStart": pf.format_time(start),
                "chargingSchedule": {
                    "duration": duration, "startSchedule": pf.format_time(start), "chargingRateUnit": unit,
                    "chargingSchedulePeriod": [{"startPeriod": q.start_s, "limit": pf.floor1(q.limit),
                                                "numberPhases": int(q.phases or self.station.phases)}
                                               for q in periods]}}

    async def _on_remote_start(self, p: Payload) -> Payload:
        if p.get("connectorId", CONNECTOR) != CONNECTOR or self.tx is not None:
            return {"status": "Rejected"}
        prof = p.get("chargingProfile")
        # the profile of a remote start is a TxProfile for the transaction about to start: no id yet
        if prof is not None and (prof.get("chargingProfilePurpose") != pf.TX or "transactionId" in prof):
            return {"status": "Rejected"}
        return {"status": "Accepted" if self.remote_start(p["idTag"], prof) else "Rejected"}

    async def _on_remote_stop(self, p: Payload) -> Payload:
        if self.tx is None or str(p["transactionId"]) != str(self.tx.remote_id):
            return {"status": "Rejected"}
        self.remote_stop()
        return {"status": "Accepted"}

    async def _on_change_config(self, p: Payload) -> Payload:
        key, value = p["key"], p["value"]
        conf = self._config()
        if key not in conf:
            return {"status": "NotSupported"}
        if key in self.CONFIG_READONLY:
            return {"status": "Rejected"}
        if key in self.CONFIG_SECURITY:
            return {"status": self.change_security(self.CONFIG_SECURITY[key], value)}
        try:
            v = float(value) if key == "TransactionMessageRetryInterval" else int(value)
        except ValueError:
            return {"status": "Rejected"}
        if v < 0 or not math.isfinite(v) or (key == "TransactionMessageAttempts" and v < 1):
            return {"status": "Rejected"}
        self.settings[self.CONFIG_RW[key]] = v
        return {"status": "Accepted"}

    async def _on_get_config(self, p: Payload) -> Payload:
        conf = self._config()
        keys = p.get("key") or list(conf)
        known = [{"key": k, "readonly": k in self.CONFIG_READONLY,
                  **({"value": conf[k]} if conf[k] is not None else {})} for k in keys if k in conf]
        unknown = [k for k in keys if k not in conf]
        return {"configurationKey": known, **({"unknownKey": unknown} if unknown else {})}

    async def _on_trigger(self, p: Payload) -> Payload:
        if p.get("connectorId") not in (None, 0, CONNECTOR):
            return {"status": "Rejected"}
        return {"status": "Accepted" if p["requestedMessage"] in TRIGGERABLE else "NotImplemented"}

    async def _on_extended_trigger(self, p: Payload) -> Payload:
        """ExtendedTriggerMessage: what TriggerMessage can trigger, and a certificate signing request."""
        if p["requestedMessage"] == "SignChargePointCertificate":
            return {"status": "Accepted" if self.security.certificates is not None else "Rejected"}
        if p["requestedMessage"] in ("LogStatusNotification", "FirmwareStatusNotification"):
            return {"status": "NotImplemented"}
        return await self._on_trigger(p)

    async def _after_extended_trigger(self, p: Payload) -> None:
        if p["requestedMessage"] == "SignChargePointCertificate":
            self._send_sign_request()
        elif p["requestedMessage"] in TRIGGERABLE:
            await self._after_trigger(p)

    async def _after_trigger(self, p: Payload) -> None:
        what = p["requestedMessage"]
        if what == "MeterValues":
            self._send_triggered_meter()
        elif what == "StatusNotification":
            self._send_status(self._now(), force=True)
        elif what == "Heartbeat":
            self.enqueue(OutMsg("Heartbeat", dict, persistent=False))
        elif what == "BootNotification":
            self.enqueue(OutMsg("BootNotification", self._boot_payload, persistent=False))

    async def _on_reset(self, p: Payload) -> Payload:
        return {"status": "Accepted"}

    async def _after_reset(self, p: Payload) -> None:
        await self.reset("HardReset" if p["type"] == "Hard" else "SoftReset")


__all__ = ["ChargePoint16", "fmt"]
