"""OCPP 1.6J / 2.0.1: the frames of a charging session, and bad frames with the CALLERROR each must get.

``bad_frames(v)`` is what a hostile charge point sends our CSMS, ``bad_calls(v)`` what a hostile CSMS sends our
charge point; in both, ``UID`` in a frame stands for the frame's unique id."""

from __future__ import annotations

import json

NOW = "2024-05-06T10:00:00Z"
SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
FRAMEWORK = {"1.6": "FormationViolation", "2.0.1": "RpcFrameworkError"}  # unreadable frame, id "-1"
FORMAT = {"1.6": "FormationViolation", "2.0.1": "FormatViolation"}


def boot(v: str) -> tuple[str, dict]:
    if v == "1.6":
        return "BootNotification", {"chargePointVendor": "X", "chargePointModel": "Y"}
    return "BootNotification", {"chargingStation": {"model": "Y", "vendorName": "X"}, "reason": "PowerUp"}


def status(v: str, connector: int = 1, ts: str = NOW) -> tuple[str, dict]:
    if v == "1.6":
        return "StatusNotification", {"connectorId": connector, "errorCode": "NoError", "status": "Charging",
                                      "timestamp": ts}
    return "StatusNotification", {"timestamp": ts, "connectorStatus": "Occupied", "evseId": connector,
                                  "connectorId": 1}


def meter(v: str, value: float | str, measurand: str = "Energy.Active.Import.Register", tx=None) -> tuple[str, dict]:
    sv: dict = {"value": str(value) if v == "1.6" else float(value), "measurand": measurand}
    payload: dict = {"meterValue": [{"timestamp": NOW, "sampledValue": [sv]}]}
    if v == "1.6":
        payload["connectorId"] = 1
        if tx is not None:
            payload["transactionId"] = int(tx)
    else:
        payload["evseId"] = 1
    return "MeterValues", payload


def start(v: str, seq_tx: str = "T1") -> tuple[str, dict]:
    if v == "1.6":
        return "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 100, "timestamp": NOW}
    return "TransactionEvent", {"eventType": "Started", "timestamp": NOW, "triggerReason": "CablePluggedIn",
                                "seqNo": 0, "transactionInfo": {"transactionId": seq_tx},
                                "evse": {"id": 1, "connectorId": 1}}


def stop(v: str, tx) -> tuple[str, dict]:
    if v == "1.6":
        return "StopTransaction", {"transactionId": int(tx), "meterStop": 2000, "timestamp": NOW}
    return "TransactionEvent", {"eventType": "Ended", "timestamp": NOW, "triggerReason": "EVDeparted", "seqNo": 1,
                                "transactionInfo": {"transactionId": str(tx), "stoppedReason": "EVDisconnected"},
                                "evse": {"id": 1, "connectorId": 1}}


def frame(uid: str, call: tuple[str, dict]) -> str:
    return json.dumps([2, uid, call[0], call[1]])


def bad_frames(v: str) -> dict[str, tuple[object, str | None, bool]]:
    """Frames a hostile charge point sends: name -> (frame, expected CALLERROR code (None: no reply), answered by
    UID (else by the anonymous id "-1"))."""
    b_action, b_payload = boot(v)
    vendor_wrong = ({"chargePointVendor": 5, "chargePointModel": "Y"} if v == "1.6"
                    else {"chargingStation": {"model": "Y", "vendorName": 5}, "reason": "PowerUp"})
    missing = {"chargePointModel": "Y"} if v == "1.6" else {"reason": "PowerUp"}
    return {
        "not_json": ("this is not json {", FRAMEWORK[v], False),
        "deep_call": ('[2,"UID","Heartbeat",' + "[" * 5000 + "]" * 5000 + "]", FORMAT[v], True),
        "deep_anonymous": ("[" * 100_000, FRAMEWORK[v], False),
        "binary": (b"\x00\xffOCPP", FRAMEWORK[v], False),
        "wrong_type": (json.dumps([2, "UID", b_action, vendor_wrong]), "TypeConstraintViolation", True),
        "missing_field": (json.dumps([2, "UID", b_action, missing]),
                          "ProtocolError" if v == "1.6" else "OccurrenceConstraintViolation", True),
        "extra_field": (json.dumps([2, "UID", b_action, {**b_payload, "extra": 1}]), FORMAT[v], True),
        "payload_not_object": (json.dumps([2, "UID", b_action, [1, 2]]), "TypeConstraintViolation", True),
        "unknown_action": ('[2,"UID","Teleport",{}]', "NotImplemented", True),
        "unhandled_action": (json.dumps([2, "UID", "GetCompositeSchedule", {}]), "NotSupported", True),
        "bad_message_type": ('[7,"UID","Heartbeat",{}]', "ProtocolError" if v == "1.6" else "MessageTypeNotSupported",
                             True),
        "non_iso_timestamp": (frame("UID", status(v, ts="yesterday at noon")), "TypeConstraintViolation", True),
        "impossible_date": (frame("UID", status(v, ts="2024-13-45T99:00:00Z")), "TypeConstraintViolation", True),
        "negative_meter": (frame("UID", meter(v, -5)), "PropertyConstraintViolation", True),
        "negative_current": (frame("UID", meter(v, -3, "Current.Import")), "PropertyConstraintViolation", True),
        "soc_250": (frame("UID", meter(v, 250, "SoC")), "PropertyConstraintViolation", True),
        "connector_99": (frame("UID", status(v, connector=99)), "PropertyConstraintViolation", True),
        "stop_unknown_tx": (frame("UID", stop(v, 2_000_000_000) if v == "1.6" else
                                  ("TransactionEvent", {**stop(v, "X")[1], "evse": {"id": 99}})),
                            "PropertyConstraintViolation", True),
        "result_unknown_id": ('[3,"UID",{"status":"Accepted"}]', None, False),
        "error_unknown_id": ('[4,"UID","GenericError","x",{}]', None, False),
    }


def bad_calls(v: str) -> dict[str, tuple[object, str, bool]]:
    """Calls a hostile CSMS sends a charge point: name -> (frame, expected CALLERROR code, answered by UID)."""
    comp = {"connectorId": 1, "duration": 60} if v == "1.6" else {"evseId": 1, "duration": 60}
    return {
        "not_json": ("{{ definitely not json", FRAMEWORK[v], False),
        "binary": (b"\x00\x01\x02", FRAMEWORK[v], False),
        "deep": ('[2,"UID","DataTransfer",' + "[" * 50_000 + "]" * 50_000 + "]", FORMAT[v], True),
        "deep_anonymous": ("[" * 200_000, FRAMEWORK[v], False),
        "wrong_type": (json.dumps([2, "UID", "GetCompositeSchedule", {**comp, "duration": "long"}]),
                       "TypeConstraintViolation", True),
        "unknown_action": ('[2,"UID","Teleport",{}]', "NotImplemented", True),
        "unhandled_action": ('[2,"UID","StatusNotification",{}]', "NotSupported", True),
        "bad_message_type": ('[9,"UID"]', "ProtocolError" if v == "1.6" else "MessageTypeNotSupported", True),
        "not_an_array": ('{"hello": "world"}', "ProtocolError" if v == "1.6" else "RpcFrameworkError", False),
    }


TX_ACTIONS = ("StartTransaction", "StopTransaction", "TransactionEvent")


def is_tx_message(action: str, payload: dict) -> bool:
    """A transaction message (queued until confirmed): starts, stops, events and transaction meter values."""
    return action in TX_ACTIONS or (action == "MeterValues" and (
        "transactionId" in payload or payload["meterValue"][0]["sampledValue"][0].get("context") != "Trigger"))
