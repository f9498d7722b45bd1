"""Values our CSMS refuses although the schema lets them through: they cannot describe a real charge point.

A schema-valid call can still be impossible: a connector the station does not have, a 1.6 meter value that
is not a number, a negative energy register, a SoC of 250 %, a StopTransaction for a transaction we never
started. Accepting them would put nonsense into the station's state (and the run's results); the station
gets the protocol's answer for "a field has an invalid value", PropertyConstraintViolation, and, for a
transaction message, retries and finally skips it (see :mod:`devices.wallbox.outbox`). Timestamps are
checked by the schema validator (:func:`devices.wallbox.schemas.is_date_time`).
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Callable, Iterable, Mapping

from devices.wallbox.rpc import OcppFault, Payload
from devices.wallbox.station_state import StationState, sample_value

#: measurands that cannot be negative (Power.Factor and Temperature can; the rest of 2.0.1's list has a sign
#: convention of its own)
NON_NEGATIVE_PREFIXES = ("Energy.", "Current.", "Power.Active.", "Power.Reactive.", "Power.Offered", "Voltage",
                         "Frequency", "SoC", "RPM")
MAX_MULTIPLIER = 9  # 2.0.1 unitOfMeasure.multiplier: giga at most, for one wallbox


def _fault(text: str) -> OcppFault:
    return OcppFault("PropertyConstraintViolation", text[:300])


def _check_connector(value: Any, state: StationState, what: str, allow_zero: bool = True) -> None:
    if value is None:
        return
    low = 0 if allow_zero else 1
    if not low <= int(value) <= state.connectors:
        raise _fault(f"{what} {value} does not exist on this charge point ({low}..{state.connectors})")


def _meter_values(items: Iterable[Mapping[str, Any]] | None, where: str) -> None:
    for i, mv in enumerate(items or []):
        for j, sv in enumerate(mv.get("sampledValue") or []):
            path = f"{where}/{i}/sampledValue/{j}"
            if sv.get("format") == "SignedData":
                continue
            if abs(int((sv.get("unitOfMeasure") or {}).get("multiplier", 0))) > MAX_MULTIPLIER:
                raise _fault(f"{path}: multiplier outside -{MAX_MULTIPLIER}..{MAX_MULTIPLIER}")
            v = sample_value(sv)
            if not math.isfinite(v):
                raise _fault(f"{path}: value {str(sv.get('value'))[:40]!r} is not a finite number")
            measurand = str(sv.get("measurand", "Energy.Active.Import.Register"))
            if v < 0 and measurand.startswith(NON_NEGATIVE_PREFIXES):
                raise _fault(f"{path}: {measurand} cannot be negative ({v:g})")
            if measurand == "SoC" and v > 100:
                raise _fault(f"{path}: SoC {v:g} % above 100")


def check_call(action: str, p: Payload, state: StationState,
               tx_issued: Callable[[int], bool] = lambda tx: False) -> None:
    """Raise :class:`OcppFault` (PropertyConstraintViolation) if a schema-valid call from the station is
    impossible for it. ``tx_issued`` says whether our CSMS may have issued a 1.6 transaction id before it knew
    this station (a restart)."""
    v16 = state.version == "1.6"
    if action == "StatusNotification":
        if v16:
            _check_connector(p.get("connectorId"), state, "connectorId")
        else:
            _check_connector(p.get("evseId"), state, "evseId")
            _check_connector(p.get("connectorId"), state, "connectorId")
    elif action == "MeterValues":
        _check_connector(p.get("connectorId") if v16 else p.get("evseId"), state, "connector")
        _meter_values(p.get("meterValue"), "meterValue")
    elif action == "StartTransaction":
        _check_connector(p.get("connectorId"), state, "connectorId", allow_zero=False)
        if p["meterStart"] < 0:
            raise _fault(f"meterStart {p['meterStart']} is negative")
    elif action == "StopTransaction":
        if p["meterStop"] < 0:
            raise _fault(f"meterStop {p['meterStop']} is negative")
        if str(p["transactionId"]) not in state.known_tx and not tx_issued(int(p["transactionId"])):
            raise _fault(f"transactionId {p['transactionId']} is not a transaction of this charge point")
        _meter_values(p.get("transactionData"), "transactionData")
    elif action == "TransactionEvent":
        _check_connector((p.get("evse") or {}).get("id"), state, "evse/id", allow_zero=False)
        _check_connector((p.get("evse") or {}).get("connectorId"), state, "evse/connectorId", allow_zero=False)
        _meter_values(p.get("meterValue"), "meterValue")


__all__ = ["NON_NEGATIVE_PREFIXES", "check_call"]
