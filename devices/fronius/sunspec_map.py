"""SunSpec information models as Fronius serves them (int+SF), and their register codec (no I/O).

Point order, types, sizes, scale factors and units are read from the SunSpec Alliance's model definitions (the
JSON files pysunspec2 ships, Apache-2.0) for the common model 1, the inverter models 101/102/103, nameplate 120,
basic settings 121, measurements/status 122, immediate controls 123, basic storage control 124, volt-var 126,
volt-watt 132 and the multiple-MPPT extension 160 (126, 132 and 160 are a fixed block plus one repeating group).
Offsets below count from the model's first register (``ID`` at offset 0, ``L`` at offset 1), as SunSpec documents them.

Addressing: the map starts with ``'SunS'`` at Modbus protocol address 40000 (0-based PDU address); Fronius
documents registers 1-based ("register 40001"), i.e. the same register.

Unimplemented values are the SunSpec ones: int16/sunssf 0x8000, uint16/enum16/bitfield16 0xFFFF, pad 0x8000,
uint32/bitfield32 0xFFFFFFFF, int32 0x80000000, acc32 0 ("not accumulated"), strings all zero.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from functools import cached_property
from typing import TYPE_CHECKING, Any, cast
from collections.abc import Callable, Mapping, Sequence

from devices.base import ProtocolError
from devices.fronius.model import RATE_PCT_MAX, FroniusConfig, FroniusState
from devices.pv.functions import NPT
from devices.pv.model import PvConfig

if TYPE_CHECKING:  # pragma: no cover
    from devices.pv.functions import InverterFunctions

BASE_ADDRESS = 40000
SUNS = (0x5375, 0x6E53)  # 'SunS'
END_MODEL_ID = 0xFFFF
MAX_READ_REGISTERS = 125  # Modbus limit of one read holding registers request

#: type -> (registers, value meaning "not implemented", signed)
_TYPES: dict[str, tuple[int, int, bool]] = {
    "uint16": (1, 0xFFFF, False), "enum16": (1, 0xFFFF, False), "bitfield16": (1, 0xFFFF, False),
    "int16": (1, 0x8000, True), "sunssf": (1, 0x8000, True), "pad": (1, 0x8000, False),
    "uint32": (2, 0xFFFFFFFF, False), "bitfield32": (2, 0xFFFFFFFF, False), "int32": (2, 0x80000000, True),
    "acc32": (2, 0, False), "acc64": (4, 0, False),
}
_ACC = ("acc32", "acc64")

Raw = int | str | None


@dataclass(frozen=True)
class Point:
    name: str
    type: str
    size: int = 1
    sf: str | None = None
    units: str = ""
    access: str = "R"

    def __post_init__(self) -> None:
        if self.type != "string" and _TYPES[self.type][0] != self.size:
            raise ValueError(f"{self.name}: {self.type} has {_TYPES[self.type][0]} registers, not {self.size}")


def _p(name: str, type_: str = "uint16", sf: str | None = None, units: str = "", access: str = "R",
       size: int | None = None) -> Point:
    return Point(name, type_, size if size is not None else (_TYPES[type_][0] if type_ != "string" else 1),
                 sf, units, access)


@dataclass(frozen=True)
class ModelDef:
    id: int
    name: str
    points: tuple[Point, ...]
    repeating: tuple[Point, ...] = ()

    @property
    def fixed_length(self) -> int:
        return sum(p.size for p in self.points)

    @property
    def repeat_length(self) -> int:
        return sum(p.size for p in self.repeating)

    def length(self, repeats: int = 0) -> int:
        """The model's L (registers after the ID/L header)."""
        return self.fixed_length + repeats * self.repeat_length

    def repeats_for(self, length: int) -> int:
        extra = length - self.fixed_length
        if extra < 0 or (extra and not self.repeat_length) or (self.repeat_length and extra % self.repeat_length):
            raise ProtocolError(f"model {self.id}: length {length} does not fit its definition "
                                f"(fixed {self.fixed_length} + n * {self.repeat_length})")
        return extra // self.repeat_length if self.repeat_length else 0

    def offsets(self) -> dict[str, int]:
        """Point name -> offset from the model start (ID = 0, L = 1) for the fixed block."""
        out, off = {}, 2
        for p in self.points:
            out[p.name] = off
            off += p.size
        return out

    def group_offsets(self, k: int = 0) -> dict[str, int]:
        """Point name -> offset from the model start of the points of repeating group ``k`` (0-based)."""
        out, off = {}, 2 + self.fixed_length + k * self.repeat_length
        for p in self.repeating:
            out[p.name] = off
            off += p.size
        return out

    @cached_property
    def _by_name(self) -> dict[str, Point]:
        return {p.name: p for p in (*self.points, *self.repeating)}

    def point(self, name: str) -> Point:
        return self._by_name[name]


#: Fronius accepts writes to these model-124 points; every other point is read-only on the device.
STORAGE_WRITABLE = ("StorCtl_Mod", "MinRsvPct", "OutWRte", "InWRte", "InOutWRte_RvrtTms", "ChaGriSet")
#: the grid-support points the virtual inverters implement and accept writes to (model 123, 126, 132); the
#: randomisation windows (*WinTms), the reactive-power percent mode and the curve ramp rates are not implemented
CONTROLS_WRITABLE = ("Conn_RvrtTms", "Conn", "WMaxLimPct", "WMaxLimPct_RvrtTms", "WMaxLimPct_RmpTms", "WMaxLim_Ena",
                     "OutPFSet", "OutPFSet_RvrtTms", "OutPFSet_Ena")
CURVE_FIXED_WRITABLE = ("ModEna", "RvrtTms")
VOLT_VAR_WRITABLE = (*CURVE_FIXED_WRITABLE, "ActPt", "DeptRef", "V1", "VAr1", "V2", "VAr2", "V3", "VAr3", "V4", "VAr4",
                     "RmpTms")
VOLT_WATT_WRITABLE = (*CURVE_FIXED_WRITABLE, "ActPt", "DeptRef", "V1", "W1", "V2", "W2", "V3", "W3", "V4", "W4",
                      "RmpPt1Tms")


def _official_point(raw: Mapping[str, Any], writable: tuple[str, ...] | None) -> Point:
    name, type_ = str(raw["name"]), str(raw["type"])
    if type_ == "count":  # model 160's N: a uint16 that counts the repeating groups
        type_ = "uint16"
    if writable is None:
        access = "RW" if raw.get("access") == "RW" else "R"
    else:
        access = "RW" if name in writable else "R"
    sf = raw.get("sf")
    return Point(name, type_, int(raw["size"]), str(sf) if sf is not None else None, str(raw.get("units", "")),
                 access)


def official_model(mid: int, writable: tuple[str, ...] | None = None) -> ModelDef:
    """A model's points in order, from the SunSpec Alliance's JSON definitions shipped with pysunspec2 (Apache-2.0).

    ``writable`` narrows write access to what a device really accepts (a Fronius takes fewer model-124 writes
    than the standard allows); the ID and L header points are implied by ModelDef.
    """
    text = (resources.files("sunspec2") / "models" / "json" / f"model_{mid}.json").read_text(encoding="utf-8")
    group = json.loads(text)["group"]
    header = [p["name"] for p in group["points"][:2]]
    if header != ["ID", "L"]:
        raise ValueError(f"SunSpec model {mid}: expected ID and L first, found {header}")
    points = tuple(_official_point(p, writable) for p in group["points"][2:])
    groups = group.get("groups", [])
    if len(groups) > 1:
        raise ValueError(f"SunSpec model {mid}: more than one repeating group is not supported here")
    repeating = tuple(_official_point(p, writable) for p in groups[0]["points"]) if groups else ()
    return ModelDef(mid, str(group["name"]), points, repeating)


COMMON = official_model(1)
#: 101 single phase, 102 split phase, 103 three phase: one layout
INVERTERS = {mid: official_model(mid) for mid in (101, 102, 103)}
NAMEPLATE = official_model(120)
SETTINGS = official_model(121, writable=())  # served read-only
STORAGE = official_model(124, writable=STORAGE_WRITABLE)
MPPT = official_model(160)
STATUS = official_model(122, writable=())  # measurements and status, read-only
CONTROLS = official_model(123, writable=CONTROLS_WRITABLE)
VOLT_VAR = official_model(126, writable=VOLT_VAR_WRITABLE)
VOLT_WATT = official_model(132, writable=VOLT_WATT_WRITABLE)

MODELS: dict[int, ModelDef] = {1: COMMON, **INVERTERS, 120: NAMEPLATE, 121: SETTINGS, 122: STATUS, 123: CONTROLS,
                               124: STORAGE, 126: VOLT_VAR, 132: VOLT_WATT, 160: MPPT}

# -- point codec ---------------------------------------------------------------------------------------------


def unimplemented(point: Point) -> list[int]:
    if point.type == "string":
        return [0] * point.size
    marker = _TYPES[point.type][1]
    return [(marker >> (16 * k)) & 0xFFFF for k in range(point.size - 1, -1, -1)]


def encode_point(point: Point, raw: Raw) -> list[int]:
    """Registers of one point; ``None`` -> the SunSpec "not implemented" value."""
    if raw is None:
        return unimplemented(point)
    if point.type == "string":
        data = str(raw).encode("ascii")[: point.size * 2].ljust(point.size * 2, b"\0")
        return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]
    bits = 16 * point.size
    value = int(raw) & ((1 << bits) - 1)  # two's complement for the signed types
    return [(value >> (16 * k)) & 0xFFFF for k in range(point.size - 1, -1, -1)]


def decode_point(point: Point, regs: Sequence[int]) -> Raw:
    """Raw value of one point from its registers; ``None`` when the device marks it not implemented."""
    if len(regs) != point.size or any(not 0 <= r <= 0xFFFF for r in regs):
        raise ProtocolError(f"{point.name}: expected {point.size} registers of 16 bits, got {list(regs)!r}")
    if point.type == "string":
        data = b"".join(r.to_bytes(2, "big") for r in regs).split(b"\0", 1)[0]
        if not data:
            return None
        return data.decode("ascii", errors="replace").strip()
    value = 0
    for r in regs:
        value = (value << 16) | r
    size, marker, signed = _TYPES[point.type]
    if value == marker and point.type not in _ACC:
        return None
    if signed and value >= 1 << (16 * size - 1):
        value -= 1 << (16 * size)
    return value


def representable(point: Point) -> tuple[int, int]:
    """Smallest and largest raw value a point can carry besides its "not implemented" marker."""
    size, _marker, signed = _TYPES[point.type]
    bits = 16 * size
    if signed:
        return -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1
    return (0, (1 << bits) - 1) if point.type in _ACC else (0, (1 << bits) - 2)


def to_raw(point: Point, value: float | None, sf: int | None) -> int | None:
    """Engineering value -> raw with the point's scale factor; saturates at what the type can carry."""
    if value is None or sf is None or not math.isfinite(value):
        return None
    raw = round(value / 10.0 ** sf)
    if point.type in _ACC:
        return raw % (1 << (16 * point.size))  # an accumulator rolls over
    lo, hi = representable(point)
    return max(lo, min(hi, raw))


def scaled(raw: Raw, sf: Raw) -> float | None:
    """Raw value times 10**sf; None when the point is not implemented. A bad scale factor is a ProtocolError."""
    if raw is None:
        return None
    if not isinstance(raw, int):
        raise ProtocolError(f"expected a number, got {raw!r}")
    if sf is None:
        raise ProtocolError("value present but its scale factor is not implemented")
    if not isinstance(sf, int) or not -10 <= sf <= 10:
        raise ProtocolError(f"scale factor {sf!r} outside -10..10")
    return raw * 10.0 ** sf


def choose_sf(max_abs: float, point_type: str, finest: int = -2) -> int:
    """The finest scale factor (>= ``finest``) at which ``max_abs`` still fits the point type."""
    signed = _TYPES[point_type][2]
    limit = 32767 if signed else 65534
    for sf in range(finest, 11):
        if max_abs / 10.0 ** sf <= limit:
            return sf
    raise ValueError(f"{max_abs} does not fit a {point_type}")


# -- model codec -----------------------------------------------------------------------------------------------


@dataclass
class ModelValues:
    """Raw point values of one model read from a device (``repeats``: one dict per repeating group)."""

    id: int
    fixed: dict[str, Raw]
    repeats: list[dict[str, Raw]] = field(default_factory=list)

    def __getitem__(self, name: str) -> Raw:
        return self.fixed[name]

    def value(self, name: str, group: Mapping[str, Raw] | None = None) -> float | None:
        """Scaled engineering value of a point (from ``group`` for repeating points)."""
        mdef = MODELS[self.id]
        point = mdef.point(name)
        raw = (group if group is not None else self.fixed)[name]
        if point.sf is None:
            return None if raw is None else float(raw)
        return scaled(raw, self.fixed[point.sf])


def _encode_points(points: Sequence[Point], values: Mapping[str, Raw]) -> list[int]:
    regs: list[int] = []
    for p in points:
        regs += encode_point(p, values.get(p.name))
    return regs


def encode_model(mdef: ModelDef, values: Mapping[str, Raw], repeats: Sequence[Mapping[str, Raw]] = ()) -> list[int]:
    """ID, L and every point of a model; missing points are "not implemented"."""
    body = _encode_points(mdef.points, values)
    for group in repeats:
        body += _encode_points(mdef.repeating, group)
    return [mdef.id, len(body), *body]


def _decode_points(points: Sequence[Point], regs: Sequence[int]) -> dict[str, Raw]:
    out, off = {}, 0
    for p in points:
        out[p.name] = decode_point(p, regs[off:off + p.size])
        off += p.size
    return out


def decode_model(regs: Sequence[int], expected_id: int | None = None) -> ModelValues:
    """Decode one model from its registers, header included; anything inconsistent is a ProtocolError."""
    if len(regs) < 2:
        raise ProtocolError(f"a model needs at least its ID and L registers, got {len(regs)}")
    mid, length = regs[0], regs[1]
    if expected_id is not None and mid != expected_id:
        raise ProtocolError(f"expected model {expected_id}, found {mid}")
    mdef = MODELS.get(mid)
    if mdef is None:
        raise ProtocolError(f"model {mid} has no definition here")
    if length != len(regs) - 2:
        raise ProtocolError(f"model {mid}: L={length} but {len(regs) - 2} registers follow")
    n = mdef.repeats_for(length)
    body = regs[2:]
    fixed = _decode_points(mdef.points, body[:mdef.fixed_length])
    repeats = []
    for k in range(n):
        start = mdef.fixed_length + k * mdef.repeat_length
        repeats.append(_decode_points(mdef.repeating, body[start:start + mdef.repeat_length]))
    if mdef is MPPT and fixed["N"] is not None and fixed["N"] != n:
        raise ProtocolError(f"model 160: N={fixed['N']} but its length holds {n} modules")
    return ModelValues(mid, fixed, repeats)


# -- the map a virtual Fronius (or PV inverter) serves ------------------------------------------------------

#: the order a Fronius GEN24 Plus lists its models in, then volt-var 126 and volt-watt 132 (a GEN24 does not
#: serve those two; the drivers find every model by scanning, so their place does not matter)
SERVED_MODELS = (1, 103, 120, 121, 122, 123, 160, 124, 126, 132)
#: a PV inverter without storage: the same without 124 (and without the battery modules of 160)
SERVED_MODELS_PV = (1, 103, 120, 121, 122, 123, 160, 126, 132)
#: SunSpec 126 DeptRef 2 = % of VArMax, 132 DeptRef 1 = % of WMax: the only references served
VV_DEPT_REF, VW_DEPT_REF = 2, 1
CURVE_NAMES = {126: "IEEE1547 B VV", 132: "IEEE1547 B VW"}
CURVE_Y = {126: "VAr", 132: "W"}


def battery_voltage(cfg: FroniusConfig, soc: float) -> float:
    """A plausible DC voltage of the battery at a SoC (cosmetic: InBatV, module DCV/DCA)."""
    return cfg.battery_v_nom_v * (0.92 + 0.16 * soc)


class FroniusRegisterMap:
    """Register image of one virtual Fronius hybrid (or, with a :class:`PvConfig`, a PV-only inverter), holding
    registers from 40000, built from a :class:`FroniusState`."""

    def __init__(self, cfg: FroniusConfig | PvConfig, device_id: str = "device",
                 served: tuple[int, ...] | None = None) -> None:
        """``served``: the models in order (default SERVED_MODELS, or SERVED_MODELS_PV without storage); 1, 103,
        120, 121 and 160 (and 124 with storage) are always needed, 122, 123, 126 and 132 may be left out."""
        self.cfg = cfg
        self.storage = isinstance(cfg, FroniusConfig)
        self.served = served or (SERVED_MODELS if self.storage else SERVED_MODELS_PV)
        self.serial = cfg.serial_for(device_id)
        # PV strings, then StCha and StDisCha as a GEN24 Plus reports them
        self.n_modules = cfg.pv_strings + (2 if self.storage else 0)
        s_rating = cfg.s_rating_va
        pv_dc_max = max(cfg.pv_kwp * 1000.0 * 1.25, 1.0)
        if cfg.pv_mppt_max_w:
            pv_dc_max = min(pv_dc_max, cfg.pv_mppt_max_w * 1.25)
        hybrid = cast(FroniusConfig, cfg)  # read only with storage
        b = hybrid.battery if self.storage else None
        self.ahr_rtg = b.capacity_wh / hybrid.battery_v_nom_v if b else 0.0
        batt_w = max(b.p_charge_max_w, b.p_discharge_max_w) if b else 0.0
        self.sf = {
            "A": -2, "V": -1, "W": choose_sf(s_rating * 1.25, "int16", 0), "Hz": -2, "PF": -1, "WH": 0,
            "DCA": -2, "DCV": -1, "DCW103": choose_sf(pv_dc_max, "int16", 0), "Tmp": -1,
            "WRtg": choose_sf(s_rating, "uint16", 0), "ARtg": -2, "PFRtg": -3,
            "WHRtg": choose_sf(b.capacity_wh, "uint16", 0) if b else 0,
            "AhrRtg": choose_sf(self.ahr_rtg, "uint16") if b else 0,
            "ChaRte": choose_sf(batt_w, "uint16", 0) if b else 0, "ECPNomHz": -2,
            "WChaMax": choose_sf(hybrid.w_cha_max_w, "uint16", 0) if b else 0, "Pct": -2,
            "StorAval": choose_sf(self.ahr_rtg, "uint16") if b else 0, "InBatV": -1,
            "DCW160": choose_sf(max(pv_dc_max, batt_w) * 1.25, "uint16", 0), "DCWH": 0,
            "WAval": choose_sf(pv_dc_max, "uint16", 0), "OutPFSet": -3, "CurveV": -2, "CurveY": -2,
        }
        self.addr: dict[int, int] = {}
        self.lengths: dict[int, int] = {}
        addr = BASE_ADDRESS + 2
        for mid in self.served:
            self.addr[mid] = addr
            repeats = self.n_modules if mid == 160 else (1 if mid in (126, 132) else 0)
            self.lengths[mid] = MODELS[mid].length(repeats)
            addr += 2 + self.lengths[mid]
        self.end_address = addr  # the end marker's ID register
        self.size = addr + 2 - BASE_ADDRESS
        #: writable register -> (model id, point name)
        self.writable: dict[int, tuple[int, str]] = {}
        if self.storage:
            st_off = STORAGE.offsets()
            self.writable |= {self.addr[124] + st_off[n]: (124, n) for n in STORAGE_WRITABLE}
        if 123 in self.addr:
            ctl_off = CONTROLS.offsets()
            self.writable |= {self.addr[123] + ctl_off[n]: (123, n) for n in CONTROLS_WRITABLE}
        for mid, names in ((126, VOLT_VAR_WRITABLE), (132, VOLT_WATT_WRITABLE)):
            if mid not in self.addr:
                continue
            offs = MODELS[mid].offsets() | MODELS[mid].group_offsets(0)
            self.writable |= {self.addr[mid] + offs[n]: (mid, n) for n in names}
        # the common, nameplate and settings models never change: encoded once
        self._static = {1: encode_model(COMMON, self._common()), 120: encode_model(NAMEPLATE, self._nameplate()),
                        121: encode_model(SETTINGS, self._settings())}

    # static models
    def _common(self) -> dict[str, Raw]:
        return {"Mn": "Fronius", "Md": self.cfg.model_name, "Opt": "s4g virtual", "Vr": "1.0.0",
                "SN": self.serial, "DA": self.cfg.unit_id}

    def _nameplate(self) -> dict[str, Raw]:
        cfg, s = self.cfg, self.sf
        s_rating = cfg.s_rating_va
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(NAMEPLATE.point(name), v, sf))
        out: dict[str, Raw] = {
            "DERTyp": 82 if self.storage else 4, "WRtg": tr("WRtg", cfg.ac_max_w, s["WRtg"]), "WRtg_SF": s["WRtg"],
            "VARtg": tr("VARtg", s_rating, s["WRtg"]), "VARtg_SF": s["WRtg"],
            "VArRtgQ1": tr("VArRtgQ1", s_rating, s["W"]), "VArRtgQ2": tr("VArRtgQ2", s_rating, s["W"]),
            "VArRtgQ3": tr("VArRtgQ3", -s_rating, s["W"]), "VArRtgQ4": tr("VArRtgQ4", -s_rating, s["W"]),
            "VArRtg_SF": s["W"], "ARtg": tr("ARtg", s_rating / (3 * cfg.v_nom_v), s["ARtg"]),
            "ARtg_SF": s["ARtg"], "PFRtgQ1": 800, "PFRtgQ2": -800, "PFRtgQ3": 800, "PFRtgQ4": -800,
            "PFRtg_SF": s["PFRtg"],
        }
        if self.storage:
            b = cast(FroniusConfig, cfg).battery
            out |= {"WHRtg": tr("WHRtg", b.capacity_wh, s["WHRtg"]), "WHRtg_SF": s["WHRtg"],
                    "AhrRtg": tr("AhrRtg", self.ahr_rtg, s["AhrRtg"]), "AhrRtg_SF": s["AhrRtg"],
                    "MaxChaRte": tr("MaxChaRte", b.p_charge_max_w, s["ChaRte"]), "MaxChaRte_SF": s["ChaRte"],
                    "MaxDisChaRte": tr("MaxDisChaRte", b.p_discharge_max_w, s["ChaRte"]),
                    "MaxDisChaRte_SF": s["ChaRte"]}
        return out

    def _settings(self) -> dict[str, Raw]:
        cfg, s = self.cfg, self.sf
        return {"WMax": to_raw(SETTINGS.point("WMax"), cfg.ac_max_w, s["WRtg"]), "WMax_SF": s["WRtg"],
                "VRef": to_raw(SETTINGS.point("VRef"), cfg.v_nom_v, s["V"]), "VRef_SF": s["V"],
                "VRefOfs": 0, "VRefOfs_SF": s["V"],
                "VAMax": to_raw(SETTINGS.point("VAMax"), cfg.s_rating_va, s["WRtg"]), "VAMax_SF": s["WRtg"],
                "ECPNomHz": to_raw(SETTINGS.point("ECPNomHz"), cfg.f_nom_hz, s["ECPNomHz"]),
                "ECPNomHz_SF": s["ECPNomHz"]}

    # dynamic models
    def _inverter(self, st: FroniusState) -> dict[str, Raw]:
        cfg, s = self.cfg, self.sf
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(INVERTERS[103].point(name), v, sf))
        w = -st.p_w  # SunSpec W: + = AC power delivered by the inverter
        var = -st.q_var  # + = reactive power delivered (over-excited)
        va = math.hypot(w, var)
        a_ph = va / (3 * st.v_v)
        dcv = cfg.pv_string_v if st.pv_dc_w > 0.5 else 0.0
        producing = abs(w) > 0.5 or abs(st.batt_p_w) > 0.5
        state = 5 if st.pv_curtail_w > 1.0 else (4 if producing else 2)  # THROTTLED, MPPT, SLEEPING
        pf = 100.0 * abs(w) / va if va > 0 else 100.0
        if w * var < 0:
            pf = -pf  # absorbing while delivering (or the reverse): under-excited, negative
        return {
            "A": tr("A", 3 * a_ph, s["A"]), "AphA": tr("AphA", a_ph, s["A"]), "AphB": tr("AphB", a_ph, s["A"]),
            "AphC": tr("AphC", a_ph, s["A"]), "A_SF": s["A"],
            **{k: tr(k, st.v_v * math.sqrt(3), s["V"]) for k in ("PPVphAB", "PPVphBC", "PPVphCA")},
            **{k: tr(k, st.v_v, s["V"]) for k in ("PhVphA", "PhVphB", "PhVphC")}, "V_SF": s["V"],
            "W": tr("W", w, s["W"]), "W_SF": s["W"], "Hz": tr("Hz", st.f_hz, s["Hz"]), "Hz_SF": s["Hz"],
            "VA": tr("VA", va, s["W"]), "VA_SF": s["W"], "VAr": tr("VAr", var, s["W"]), "VAr_SF": s["W"],
            "PF": tr("PF", pf, s["PF"]), "PF_SF": s["PF"],
            "WH": tr("WH", st.e_ac_out_wh, s["WH"]), "WH_SF": s["WH"],
            "DCA": tr("DCA", st.pv_dc_w / dcv if dcv else 0.0, s["DCA"]), "DCA_SF": s["DCA"],
            "DCV": tr("DCV", dcv, s["DCV"]), "DCV_SF": s["DCV"],
            "DCW": tr("DCW", st.pv_dc_w, s["DCW103"]), "DCW_SF": s["DCW103"],
            "TmpCab": tr("TmpCab", 35.0, s["Tmp"]), "Tmp_SF": s["Tmp"], "St": state,
            "Evt1": 0, "Evt2": 0, "EvtVnd1": 0, "EvtVnd2": 0, "EvtVnd3": 0, "EvtVnd4": 0,
        }

    def _mppt(self, st: FroniusState) -> tuple[dict[str, Raw], list[dict[str, Raw]]]:
        cfg, s = self.cfg, self.sf
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(MPPT.point(name), v, sf))
        modules = []

        def module(mid: int, label: str, w: float, v: float, wh: float, active: int, idle: int) -> dict[str, Raw]:
            v = v if w > 0.5 else 0.0
            return {"ID": mid, "IDStr": f"{label} {mid}", "DCA": tr("DCA", w / v if v else 0.0, s["DCA"]),
                    "DCV": tr("DCV", v, s["DCV"]), "DCW": tr("DCW", w, s["DCW160"]), "DCWH": tr("DCWH", wh, 0),
                    "DCSt": active if w > 0.5 else idle, "DCEvt": 0}

        for k in range(cfg.pv_strings):
            modules.append(module(k + 1, "String", st.pv_dc_w / cfg.pv_strings, cfg.pv_string_v,
                                  st.e_pv_wh / cfg.pv_strings, 4, 2))
        if self.storage:
            n = cfg.pv_strings
            vbat = battery_voltage(cast(FroniusConfig, cfg), st.soc)
            modules.append(module(n + 1, "StCha", max(st.batt_p_w, 0.0), vbat, st.e_batt_in_wh, 4, 8))
            modules.append(module(n + 2, "StDisCha", max(-st.batt_p_w, 0.0), vbat, st.e_batt_out_wh, 4, 8))
        fixed: dict[str, Raw] = {"DCA_SF": s["DCA"], "DCV_SF": s["DCV"], "DCW_SF": s["DCW160"], "DCWH_SF": s["DCWH"],
                                 "Evt": 0, "N": len(modules)}
        return fixed, modules

    def _storage(self, st: FroniusState) -> dict[str, Raw]:
        cfg, s = cast(FroniusConfig, self.cfg), self.sf  # model 124 is served only with storage
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(STORAGE.point(name), v, sf))
        cha_state = st.soc * 100.0
        return {
            "WChaMax": tr("WChaMax", cfg.w_cha_max_w, s["WChaMax"]), "WChaGra": 100, "WDisChaGra": 100,
            "StorCtl_Mod": st.stor_ctl_mod, "MinRsvPct": tr("MinRsvPct", st.min_rsv_pct, s["Pct"]),
            "ChaState": tr("ChaState", cha_state, s["Pct"]),
            "StorAval": tr("StorAval", max(cha_state - st.min_rsv_pct, 0.0) / 100.0 * self.ahr_rtg, s["StorAval"]),
            "InBatV": tr("InBatV", battery_voltage(cfg, st.soc), s["InBatV"]), "ChaSt": st.cha_st,
            "OutWRte": tr("OutWRte", st.out_w_rte_pct, s["Pct"]), "InWRte": tr("InWRte", st.in_w_rte_pct, s["Pct"]),
            "InOutWRte_RvrtTms": st.rvrt_s, "ChaGriSet": st.cha_gri_set,
            "WChaMax_SF": s["WChaMax"], "WChaDisChaGra_SF": 0, "MinRsvPct_SF": s["Pct"], "ChaState_SF": s["Pct"],
            "StorAval_SF": s["StorAval"], "InBatV_SF": s["InBatV"], "InOutWRte_SF": s["Pct"],
        }

    def _status(self, st: FroniusState) -> dict[str, Raw]:
        c, s = st.controls, self.sf
        assert c is not None
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(STATUS.point(name), v, sf))
        on = c.conn == 1
        w = -st.p_w
        return {"PVConn": 0b111 if on else 0b010, "StorConn": (0b111 if on else 0b010) if self.storage else 0,
                "ECPConn": int(on), "ActWh": tr("ActWh", st.e_ac_out_wh, 0),
                "VArAval": tr("VArAval", math.sqrt(max(self.cfg.s_rating_va ** 2 - w * w, 0.0)), s["W"]),
                "VArAval_SF": s["W"], "WAval": tr("WAval", c.p_avail_w, s["WAval"]), "WAval_SF": s["WAval"],
                "StSetLimMsk": 0, "StActCtl": c.active_bits}

    def _controls(self, st: FroniusState) -> dict[str, Raw]:
        c, s = st.controls, self.sf
        assert c is not None
        tr: Callable[[str, float | None, int | None], int | None] = (  # noqa: E731
            lambda name, v, sf: to_raw(CONTROLS.point(name), v, sf))
        return {"Conn_RvrtTms": c.conn_rvrt_s, "Conn": c.conn,
                "WMaxLimPct": tr("WMaxLimPct", c.lim_pct, s["Pct"]), "WMaxLimPct_RvrtTms": c.lim_rvrt_s,
                "WMaxLimPct_RmpTms": c.lim_ramp_s, "WMaxLim_Ena": c.lim_ena,
                "OutPFSet": tr("OutPFSet", c.pf, s["OutPFSet"]), "OutPFSet_RvrtTms": c.pf_rvrt_s,
                "OutPFSet_Ena": c.pf_ena, "VArPct_Ena": 0,
                "WMaxLimPct_SF": s["Pct"], "OutPFSet_SF": s["OutPFSet"]}

    def _curve(self, mid: int, st: FroniusState) -> tuple[dict[str, Raw], list[dict[str, Raw]]]:
        c, s = st.controls, self.sf
        assert c is not None
        mdef = MODELS[mid]
        if mid == 126:
            ena, npt, vs, ys, rsp, rvrt = c.vv_ena, c.vv_npt, c.vv_v_pu, [-q for q in c.vv_q_pct], c.vv_rsp_s, \
                c.vv_rvrt_s  # SunSpec VAr: + = injecting; ours: + = absorbing
        else:
            ena, npt, vs, ys, rsp, rvrt = c.vw_ena, c.vw_npt, c.vw_v_pu, list(c.vw_p_pct), c.vw_rsp_s, c.vw_rvrt_s
        y = CURVE_Y[mid]
        fixed: dict[str, Raw] = {"ActCrv": 1, "ModEna": ena, "RvrtTms": rvrt, "NCrv": 1, "NPt": NPT,
                                 "V_SF": s["CurveV"], "DeptRef_SF": s["CurveY"]}
        group: dict[str, Raw] = {"ActPt": npt, "DeptRef": VV_DEPT_REF if mid == 126 else VW_DEPT_REF,
                                 "CrvNam": CURVE_NAMES[mid], "ReadOnly": 0,
                                 ("RmpTms" if mid == 126 else "RmpPt1Tms"): rsp}
        for k in range(npt):
            group[f"V{k + 1}"] = to_raw(mdef.point(f"V{k + 1}"), 100.0 * vs[k], s["CurveV"])
            group[f"{y}{k + 1}"] = to_raw(mdef.point(f"{y}{k + 1}"), ys[k], s["CurveY"])
        return fixed, [group]

    def registers(self, st: FroniusState) -> list[int]:
        """The whole image, from register 40000 ('SunS') to the end marker."""
        regs = list(SUNS)
        for mid in self.served:
            if mid == 103:
                regs += encode_model(INVERTERS[103], self._inverter(st))
            elif mid == 160:
                fixed, modules = self._mppt(st)
                regs += encode_model(MPPT, fixed, modules)
            elif mid == 124:
                regs += encode_model(STORAGE, self._storage(st))
            elif mid == 122:
                regs += encode_model(STATUS, self._status(st))
            elif mid == 123:
                regs += encode_model(CONTROLS, self._controls(st))
            elif mid in (126, 132):
                regs += encode_model(MODELS[mid], *self._curve(mid, st))
            else:
                regs += self._static[mid]
        regs += [END_MODEL_ID, 0]
        return regs

    def written(self, address: int, values: Sequence[int]) -> dict[int, dict[str, float]]:
        """Registers written -> {model id: {point name: value in engineering units}} (NaN: "not implemented"
        written, which no point accepts). KeyError for a register that is not writable."""
        out: dict[int, dict[str, float]] = {}
        for k, reg in enumerate(values):
            mid, name = self.writable[address + k]
            point = MODELS[mid].point(name)
            raw = decode_point(point, [reg])
            if name in ("InOutWRte_RvrtTms", "Conn_RvrtTms", "WMaxLimPct_RvrtTms", "OutPFSet_RvrtTms", "RvrtTms",
                        "WMaxLimPct_RmpTms", "RmpTms", "RmpPt1Tms"):
                value = float(0xFFFF if raw is None else raw)  # 0xFFFF is a time here, refused as out of range
            elif raw is None:
                value = math.nan
            elif point.sf is None:
                value = float(raw)
            else:
                value = float(raw) * 10.0 ** self._sf_of(mid, point.sf)
            out.setdefault(mid, {})[name] = value
        return out

    def _sf_of(self, mid: int, sf_point: str) -> int:
        s = self.sf
        return {"InOutWRte_SF": s["Pct"], "MinRsvPct_SF": s["Pct"], "WMaxLimPct_SF": s["Pct"],
                "OutPFSet_SF": s["OutPFSet"], "V_SF": s["CurveV"], "DeptRef_SF": s["CurveY"]}[sf_point]

    def storage_fields(self, address: int, values: Sequence[int]) -> dict[str, float]:
        """Registers written into model 124 -> storage-control fields in physical units (model.py names)."""
        out: dict[str, float] = {}
        for name, value in self.written(address, values).get(124, {}).items():
            if (124, name) not in self.writable.values():
                raise KeyError(name)
            key = {"StorCtl_Mod": "stor_ctl_mod", "MinRsvPct": "min_rsv_pct", "OutWRte": "out_w_rte_pct",
                   "InWRte": "in_w_rte_pct", "InOutWRte_RvrtTms": "rvrt_s", "ChaGriSet": "cha_gri_set"}[name]
            if key in ("stor_ctl_mod", "cha_gri_set") and math.isnan(value):
                value = float(0xFFFF)
            out[key] = value
        return out


def control_fields(mid: int, values: Mapping[str, float]) -> tuple[str, dict[str, object]]:
    """A write to model 123, 126 or 132 (engineering units, SunSpec names) -> (function, fields) in the names of
    :meth:`devices.pv.functions.InverterFunctions.write`. A write to 123 touching several functions is split by
    :func:`split_controls` first."""
    if mid in (126, 132):
        y = CURVE_Y[mid]
        f: dict[str, object] = {}
        points_v, points_y = {}, {}
        for name, value in values.items():
            if name == "ModEna":
                f["ena"] = value
            elif name == "RvrtTms":
                f["rvrt_s"] = value
            elif name in ("RmpTms", "RmpPt1Tms"):
                f["rsp_s"] = value
            elif name == "ActPt":
                f["npt"] = value
            elif name == "DeptRef":
                f["dept_ref_ok"] = value == (VV_DEPT_REF if mid == 126 else VW_DEPT_REF)
            elif name.startswith("V") and name[1:].isdigit():
                points_v[int(name[1:]) - 1] = value / 100.0
            elif name.startswith(y) and name[len(y):].isdigit():
                points_y[int(name[len(y):]) - 1] = -value if mid == 126 else value
        if points_v:
            f["v_pu"] = points_v
        if points_y:
            f["y"] = points_y
        return ("vv" if mid == 126 else "vw"), f
    raise ValueError(f"model {mid} has no curve")


#: model-123 point -> (function, field)
_CONTROLS_FIELDS = {"Conn": ("conn", "conn"), "Conn_RvrtTms": ("conn", "rvrt_s"),
                    "WMaxLimPct": ("lim", "pct"), "WMaxLimPct_RvrtTms": ("lim", "rvrt_s"),
                    "WMaxLimPct_RmpTms": ("lim", "ramp_s"), "WMaxLim_Ena": ("lim", "ena"),
                    "OutPFSet": ("pf", "pf"), "OutPFSet_RvrtTms": ("pf", "rvrt_s"), "OutPFSet_Ena": ("pf", "ena")}


def split_controls(values: Mapping[str, float]) -> dict[str, dict[str, object]]:
    """A write to model 123 -> {function: fields}."""
    out: dict[str, dict[str, object]] = {}
    for name, value in values.items():
        func, key = _CONTROLS_FIELDS[name]
        out.setdefault(func, {})[key] = value
    return out


def apply_controls(fn: InverterFunctions, i: int, t_s: float, mid: int, values: Mapping[str, float]) -> None:
    """Apply a write to model 123, 126 or 132 to inverter ``i``: checked as a whole on a copy first, so a refused
    write (ValueError) changes nothing, even when it touches several functions of model 123."""
    writes = list(split_controls(values).items()) if mid == 123 else [control_fields(mid, values)]
    trial = copy.deepcopy(fn)
    for func, fields in writes:
        trial.write(i, t_s, func, fields)
    for func, fields in writes:
        fn.write(i, t_s, func, fields)


def rate_raw(p_w: float, w_cha_max_w: float, sf: int) -> int:
    """batt_p_w (W) -> InWRte/OutWRte raw value in % of WChaMax at scale factor ``sf``."""
    pct = p_w / w_cha_max_w * 100.0
    if abs(pct) > RATE_PCT_MAX + 1e-9:
        raise ValueError(f"{p_w:g} W is {pct:.1f} % of WChaMax={w_cha_max_w:g} W, beyond +-100 %")
    return round(pct / 10.0 ** sf)
