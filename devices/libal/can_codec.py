"""The LiBal BMS's CAN frames (libal_bms.dbc), encoded and decoded with cantools.

The BMS broadcasts the Pylontech/SMA "external BMS" set (0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E) plus one
LiBal extension frame (0x3C0: remaining energy and the echo of the EMS request counter); the EMS (our driver)
sends 0x3C8 with its charge/discharge enable requests (the mode switch) and a rolling counter. Signs: current
+ = charging, limits are magnitudes. See docs/devices/libal.md for the field tables.

Decoding is total: any payload either decodes or raises :class:`CanDecodeError` (a ProtocolError); a frame
whose identifier is not in the DBC gives ``None`` (a shared bus carries other traffic).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Mapping
from typing import cast

import cantools
import cantools.database

from devices.base import DeviceUnavailable, ProtocolError
from devices.libal.model import Alarm

DBC_PATH = Path(__file__).with_name("libal_bms.dbc")

LIMITS = 0x351
SOC_SOH = 0x355
MEASUREMENTS = 0x356
PROTECTION = 0x359
ALARMS = 0x35A
REQUEST_FLAGS = 0x35C
MANUFACTURER = 0x35E
STATUS = 0x3C0
EMS_REQUEST = 0x3C8

#: broadcast order: the status frame with the counter echo comes after every state frame, so a driver that sees
#: the echo has already received the state the BMS had when it answered
BROADCAST_ORDER = (LIMITS, SOC_SOH, MEASUREMENTS, PROTECTION, ALARMS, REQUEST_FLAGS, STATUS, MANUFACTURER)

#: signals a frame must carry to be usable (shorter payloads of real BMSes are accepted if these fit)
REQUIRED = {
    LIMITS: ("ChargeVoltageLimit", "ChargeCurrentLimit", "DischargeCurrentLimit", "DischargeVoltageLimit"),
    SOC_SOH: ("StateOfCharge", "StateOfHealth"),
    MEASUREMENTS: ("BatteryVoltage", "BatteryCurrent", "BatteryTemperature"),
    PROTECTION: ("ProtCellOverVoltage", "ProtSystemError", "AlarmCellHighVoltage", "AlarmInternalCommFail"),
    ALARMS: ("AlarmGeneral", "AlarmCellImbalance", "WarningGeneral", "WarningCellImbalance"),
    REQUEST_FLAGS: ("ChargeEnable", "DischargeEnable"),
    MANUFACTURER: (),
    STATUS: ("RemainingEnergy", "EmsCounterEcho"),
    EMS_REQUEST: ("ModeRequestValid", "ChargeEnableRequest", "DischargeEnableRequest", "Counter"),
}

#: model alarm bit <-> Pylontech 0x359 signal
PROTECTION_BITS = {
    Alarm.OVER_VOLTAGE: "ProtCellOverVoltage",
    Alarm.UNDER_VOLTAGE: "ProtCellUnderVoltage",
    Alarm.OVER_TEMPERATURE: "ProtOverTemperature",
    Alarm.UNDER_TEMPERATURE: "ProtUnderTemperature",
    Alarm.CHARGE_OVER_CURRENT: "ProtChargeOverCurrent",
    Alarm.DISCHARGE_OVER_CURRENT: "ProtDischargeOverCurrent",
    Alarm.SYSTEM_ERROR: "ProtSystemError",
    Alarm.WARN_HIGH_VOLTAGE: "AlarmCellHighVoltage",
    Alarm.WARN_LOW_VOLTAGE: "AlarmCellLowVoltage",
    Alarm.WARN_HIGH_TEMPERATURE: "AlarmHighTemperature",
    Alarm.WARN_LOW_TEMPERATURE: "AlarmLowTemperature",
    Alarm.WARN_CHARGE_HIGH_CURRENT: "AlarmChargeHighCurrent",
    Alarm.WARN_DISCHARGE_HIGH_CURRENT: "AlarmDischargeHighCurrent",
    Alarm.WARN_SYSTEM: "AlarmInternalCommFail",
}

#: SMA 0x35A item -> model bit when active (the item name is prefixed by "Alarm" or "Warning")
_SMA_ITEMS = {
    "HighVoltage": Alarm.OVER_VOLTAGE,
    "LowVoltage": Alarm.UNDER_VOLTAGE,
    "HighTemperature": Alarm.OVER_TEMPERATURE,
    "LowTemperature": Alarm.UNDER_TEMPERATURE,
    "HighTempCharge": Alarm.OVER_TEMPERATURE,
    "LowTempCharge": Alarm.UNDER_TEMPERATURE,
    "HighCurrent": Alarm.DISCHARGE_OVER_CURRENT,
    "HighChargeCurrent": Alarm.CHARGE_OVER_CURRENT,
    "Contactor": Alarm.SYSTEM_ERROR,
    "ShortCircuit": Alarm.SYSTEM_ERROR,
    "BmsInternal": Alarm.SYSTEM_ERROR,
    "CellImbalance": Alarm.SYSTEM_ERROR,
}
#: items the encoder sets from model bits (the others it reports as normal)
_SMA_ENCODED = ("HighVoltage", "LowVoltage", "HighTemperature", "LowTemperature", "HighCurrent",
                "HighChargeCurrent", "BmsInternal")
SMA_NORMAL, SMA_ACTIVE = 1, 2
_WARNING_SHIFT = 8  # model warning bit = alarm bit << 8 (WARN_SYSTEM pairs with SYSTEM_ERROR)


class CanDecodeError(ProtocolError):
    """A CAN frame with a known identifier whose payload does not decode."""


@functools.cache
def database() -> cantools.database.can.Database:
    return cast(cantools.database.can.Database, cantools.database.load_file(str(DBC_PATH), strict=True))


def _message(frame_id: int) -> cantools.database.can.Message:
    return database().get_message_by_frame_id(frame_id)


@dataclass(frozen=True)
class BmsState:
    """What the BMS says about itself, in framework units (SoC and SoH 0..1, current + = charging)."""

    charge_voltage_limit_v: float
    i_charge_max_a: float
    i_discharge_max_a: float
    discharge_voltage_limit_v: float
    soc: float
    soh: float
    v_v: float
    i_a: float
    t_c: float
    alarms: int
    charge_enable: bool
    discharge_enable: bool
    e_wh: float = math.nan
    ems_counter_echo: int = 0
    bms_state: int = 0
    module_count: int = 1
    manufacturer: str = "LIBAL"
    force_charge: bool = False
    full_charge: bool = False


def _q(value: float, step: float) -> float:
    """Round to the field resolution before handing the value to cantools (float noise never overflows)."""
    return round(value / step) * step


def sma_fields(alarms: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for prefix, shift in (("Alarm", 0), ("Warning", _WARNING_SHIFT)):
        bits = (alarms >> shift) & 0xFF
        for item in _SMA_ITEMS:
            flag = int(_SMA_ITEMS[item]) if item in _SMA_ENCODED else 0
            out[prefix + item] = SMA_ACTIVE if flag and bits & flag else SMA_NORMAL
        out[prefix + "General"] = SMA_ACTIVE if bits else SMA_NORMAL
    return out


def alarms_from_sma(signals: Mapping[str, float]) -> int:
    """Model bitmask from 0x35A; an item counts as active when its high bit is set (2 = active, 3 = reserved)."""
    out = 0
    for prefix, shift in (("Alarm", 0), ("Warning", _WARNING_SHIFT)):
        for item, flag in _SMA_ITEMS.items():
            if int(signals.get(prefix + item, 0)) & 0b10:
                out |= int(flag) << shift
    return out


def alarms_from_protection(signals: Mapping[str, float]) -> int:
    return sum(int(flag) for flag, name in PROTECTION_BITS.items() if int(signals.get(name, 0)))


def encode_bms_state(state: BmsState) -> list[tuple[int, bytes]]:
    """The broadcast batch, in :data:`BROADCAST_ORDER`; raises cantools' EncodeError for unrepresentable values."""
    name = (state.manufacturer.encode("ascii", "replace")[:8]).ljust(8, b" ")
    signals: dict[int, Mapping[str, int | float]] = {
        LIMITS: {
            "ChargeVoltageLimit": _q(state.charge_voltage_limit_v, 0.1),
            "ChargeCurrentLimit": _q(state.i_charge_max_a, 0.1),
            "DischargeCurrentLimit": _q(state.i_discharge_max_a, 0.1),
            "DischargeVoltageLimit": _q(state.discharge_voltage_limit_v, 0.1),
        },
        SOC_SOH: {
            "StateOfCharge": round(state.soc * 100.0),
            "StateOfHealth": round(state.soh * 100.0),
            "StateOfChargeHiRes": _q(state.soc * 100.0, 0.01),
        },
        MEASUREMENTS: {
            "BatteryVoltage": _q(state.v_v, 0.01),
            "BatteryCurrent": _q(state.i_a, 0.1),
            "BatteryTemperature": _q(state.t_c, 0.1),
        },
        PROTECTION: {
            **{sig: int(bool(state.alarms & int(flag))) for flag, sig in PROTECTION_BITS.items()},
            "ModuleCount": state.module_count, "MarkerP": ord("P"), "MarkerN": ord("N"),
        },
        ALARMS: sma_fields(state.alarms),
        REQUEST_FLAGS: {
            "ChargeEnable": int(state.charge_enable), "DischargeEnable": int(state.discharge_enable),
            "ForceChargeRequestI": int(state.force_charge), "ForceChargeRequestII": 0,
            "FullChargeRequest": int(state.full_charge),
        },
        STATUS: {
            "RemainingEnergy": max(0, round(state.e_wh)) if math.isfinite(state.e_wh) else 0,
            "EmsCounterEcho": state.ems_counter_echo & 0xFF, "BmsState": state.bms_state,
        },
        MANUFACTURER: {f"Name{i}": name[i] for i in range(8)},
    }
    return [(fid, bytes(_message(fid).encode(signals[fid], strict=True))) for fid in BROADCAST_ORDER]


def decode_frame(frame_id: int, data: bytes, *, is_extended: bool = False) -> dict[str, float] | None:
    """Signals of one frame, or ``None`` if the identifier is not ours; CanDecodeError if the payload is bad."""
    if is_extended or frame_id not in REQUIRED:
        return None
    message = _message(frame_id)
    if len(data) > 8:
        raise CanDecodeError(f"CAN frame 0x{frame_id:03X} ({message.name}): {len(data)} data bytes (max 8)")
    try:
        # cantools types decode() for every message kind: ours are plain, decoded without choices: numbers
        signals = cast("dict[str, float]",
                       message.decode(bytes(data), decode_choices=False, scaling=True, allow_truncated=True))
    except Exception as exc:  # cantools raises several types for malformed payloads
        raise CanDecodeError(f"CAN frame 0x{frame_id:03X} ({message.name}) does not decode: {exc}") from exc
    missing = [s for s in REQUIRED[frame_id] if s not in signals]
    if missing:
        raise CanDecodeError(f"CAN frame 0x{frame_id:03X} ({message.name}) too short ({len(data)} bytes): "
                             f"missing {', '.join(missing)}")
    return {k: round(float(v), 9) for k, v in signals.items()}  # 358 * 0.1 reads as 35.8, not 35.800000000000004


@dataclass(frozen=True)
class EmsRequest:
    """EMS -> BMS (0x3C8). ``mode_valid`` False makes the frame a keep-alive/poll that changes nothing."""

    counter: int
    mode_valid: bool = False
    charge: bool = False
    discharge: bool = False


def encode_ems_request(req: EmsRequest) -> bytes:
    return bytes(_message(EMS_REQUEST).encode({
        "ModeRequestValid": int(req.mode_valid), "ChargeEnableRequest": int(req.charge),
        "DischargeEnableRequest": int(req.discharge), "Counter": req.counter & 0xFF}, strict=True))


def decode_ems_request(data: bytes) -> EmsRequest:
    signals = decode_frame(EMS_REQUEST, data)
    assert signals is not None
    return EmsRequest(counter=int(signals["Counter"]), mode_valid=bool(signals["ModeRequestValid"]),
                      charge=bool(signals["ChargeEnableRequest"]), discharge=bool(signals["DischargeEnableRequest"]))


#: frames a driver needs to have seen (recently) to report the BMS state
NEEDED = (LIMITS, SOC_SOH, MEASUREMENTS, REQUEST_FLAGS)


class BmsView:
    """The latest decoded frame per identifier, as the EMS side sees the bus.

    ``update`` records each frame with its arrival time (monotonic s); a malformed frame is remembered as the
    latest of its identifier until a good one replaces it, so ``snapshot`` reports it as a ProtocolError.
    """

    def __init__(self) -> None:
        self.frames: dict[int, tuple[float, dict[str, float]]] = {}
        self.errors: dict[int, CanDecodeError] = {}

    def update(self, frame_id: int, data: bytes, t: float, *, is_extended: bool = False) -> dict[str, float] | None:
        try:
            signals = decode_frame(frame_id, data, is_extended=is_extended)
        except CanDecodeError as exc:
            self.errors[frame_id] = exc
            raise
        if signals is not None:
            self.frames[frame_id] = (t, signals)
            self.errors.pop(frame_id, None)
        return signals

    def clear(self) -> None:
        self.frames.clear()
        self.errors.clear()

    def age_s(self, now: float) -> float:
        """Age of the oldest needed frame (inf if one is missing)."""
        return max((now - self.frames[f][0]) if f in self.frames else math.inf for f in NEEDED)

    def snapshot(self, now: float, max_age_s: float) -> BmsState:
        errors = [self.errors[f] for f in (*NEEDED, ALARMS, PROTECTION, STATUS) if f in self.errors]
        if errors:
            raise errors[0]
        missing = [f"0x{f:03X}" for f in NEEDED if f not in self.frames]
        if missing:
            raise DeviceUnavailable(f"no BMS frame {', '.join(missing)} received")
        stale = [f"0x{f:03X} ({now - self.frames[f][0]:.1f} s)" for f in NEEDED if now - self.frames[f][0] > max_age_s]
        if stale:
            raise DeviceUnavailable(f"BMS frames older than {max_age_s:g} s: {', '.join(stale)}")
        lim, soc, meas, req = (self.frames[f][1] for f in NEEDED)
        alarms = 0
        if ALARMS in self.frames:
            alarms |= alarms_from_sma(self.frames[ALARMS][1])
        if PROTECTION in self.frames:
            alarms |= alarms_from_protection(self.frames[PROTECTION][1])
        status = self.frames.get(STATUS, (0.0, {}))[1]
        prot = self.frames.get(PROTECTION, (0.0, {}))[1]
        soc_pct = soc.get("StateOfChargeHiRes", soc["StateOfCharge"])
        name = self.frames.get(MANUFACTURER, (0.0, {}))[1]
        text = bytes(int(name.get(f"Name{i}", 32)) for i in range(8)).decode("ascii", "replace").strip()
        return BmsState(
            charge_voltage_limit_v=lim["ChargeVoltageLimit"],
            i_charge_max_a=abs(lim["ChargeCurrentLimit"]),
            i_discharge_max_a=abs(lim["DischargeCurrentLimit"]),
            discharge_voltage_limit_v=lim["DischargeVoltageLimit"],
            soc=soc_pct / 100.0,
            soh=soc["StateOfHealth"] / 100.0,
            v_v=meas["BatteryVoltage"],
            i_a=meas["BatteryCurrent"],
            t_c=meas["BatteryTemperature"],
            alarms=alarms,
            charge_enable=bool(req["ChargeEnable"]),
            discharge_enable=bool(req["DischargeEnable"]),
            e_wh=status.get("RemainingEnergy", math.nan),
            ems_counter_echo=int(status.get("EmsCounterEcho", 0)),
            bms_state=int(status.get("BmsState", 0)),
            module_count=int(prot.get("ModuleCount", 1)),
            manufacturer=text,
            force_charge=bool(req.get("ForceChargeRequestI", 0)),
            full_charge=bool(req.get("FullChargeRequest", 0)),
        )
