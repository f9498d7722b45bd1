"""Smart Metrology Meter (SMM): an electricity meter at a connection point, as registers (no I/O).

The meter reads the connection point it sits on (the solution of the grid simulator, load arrow: + = the
site draws power from the grid) and keeps what a real meter keeps:

* **Instantaneous registers** (per phase and total): voltage, current, active power import/export, reactive
  power import/export, power factor, frequency. Each is an integer in the register's resolution
  (``10**scaler`` of its unit, see :data:`REGISTERS`), rounded half away from zero; ``measure`` returns exactly
  these integers times their resolution, so ``sim://`` and the DLMS/COSEM path report the same numbers.
* **Energy registers**: active import/export (total and per tariff) and reactive import/export. They
  integrate exactly: the power is quantised to 1 mW, each step adds ``p_mW * seconds`` to an integer
  accumulator in mW·s, and the register is ``accumulator // (resolution in mW·s)``; the remainder stays in
  the accumulator, so a year of 1 s steps loses nothing. A register holds ``energy_digits`` decimal digits
  and rolls over to 0 as a real register does (the accumulator is kept modulo the register's range).
  Import and export follow the net (vector) sum of the phases, as meters measuring total power do.
* **Tariffs**: T2 between ``tariff2_hours`` (local meter time, [from, to), may wrap midnight), else T1. A
  step is split at tariff switches and profile captures, so energy is booked to the right tariff exactly.
* **Load profile** (15 min by default): at every multiple of ``profile_period_s`` of the meter clock the
  energy registers are captured into a ring buffer of ``profile_entries`` entries (oldest dropped first).
  Inside a step the power is constant, so a capture falling inside a step is exact too.
* **Clock**: the scenario start (the build context), or ``clock_start`` if the config sets one, + simulated
  seconds (UTC; ``utc_offset_min`` is the meter's local time zone); measured as ``clock_unix_s``.

Inputs are named after the connection point (``point_p_w`` in, ``p_w`` out) because they share the entity.
A non-finite input (a dead bus in the power flow) counts as 0 (no voltage, no flow).
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from dataclasses import dataclass
from typing import Literal, cast
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from devices.base import Capabilities
from devices.family import DeviceContext, Input, ModelBank

# DLMS unit codes (Blue Book, enumeration of the scaler_unit's unit)
UNIT_W, UNIT_VAR, UNIT_WH, UNIT_VARH, UNIT_A, UNIT_V, UNIT_HZ, UNIT_NONE = 27, 29, 30, 32, 33, 35, 44, 255
UNIT_NAMES = {UNIT_W: "W", UNIT_VAR: "var", UNIT_WH: "Wh", UNIT_VARH: "varh", UNIT_A: "A", UNIT_V: "V",
              UNIT_HZ: "Hz", UNIT_NONE: "-"}
# A-XDR types the registers use
U16, U32 = "long-unsigned", "double-long-unsigned"
U16_MAX, U32_MAX = 0xFFFF, 0xFFFF_FFFF
MW_S_PER_WH = 3_600_000  # 1 Wh = 3600 J = 3.6e6 mW·s
PHASES = ("a", "b", "c")


@dataclass(frozen=True)
class Reg:
    """One register the meter serves: key (its integer array in the bank), OBIS, unit, scaler, type."""

    key: str
    obis: str
    unit: int
    scaler: int | None  # None: the energy scaler of the configuration
    axdr: str
    phase: str | None = None  # a/b/c: served by a three-phase meter, or a single-phase meter on that phase


def _instant(key: str, obis: str, unit: int, scaler: int, axdr: str = U32, phase: str | None = None) -> Reg:
    return Reg(key, obis, unit, scaler, axdr, phase)


#: every register, in the order of the object list; the OBIS codes are those of IEC 62056-61 / the Blue Book
REGISTERS: tuple[Reg, ...] = (
    _instant("p_import_w", "1.0.1.7.0.255", UNIT_W, 0),
    _instant("p_export_w", "1.0.2.7.0.255", UNIT_W, 0),
    _instant("q_import_var", "1.0.3.7.0.255", UNIT_VAR, 0),
    _instant("q_export_var", "1.0.4.7.0.255", UNIT_VAR, 0),
    _instant("pf", "1.0.13.7.0.255", UNIT_NONE, -3, U16),
    _instant("f_hz", "1.0.14.7.0.255", UNIT_HZ, -2, U16),
    *(r for ph, c in zip(PHASES, (20, 40, 60)) for r in (
        _instant(f"p_{ph}_import_w", f"1.0.{c + 1}.7.0.255", UNIT_W, 0, phase=ph),
        _instant(f"p_{ph}_export_w", f"1.0.{c + 2}.7.0.255", UNIT_W, 0, phase=ph),
        _instant(f"i_{ph}_a", f"1.0.{c + 11}.7.0.255", UNIT_A, -2, phase=ph),
        _instant(f"v_{ph}_v", f"1.0.{c + 12}.7.0.255", UNIT_V, -1, phase=ph),
    )),
    Reg("e_import_wh", "1.0.1.8.0.255", UNIT_WH, None, U32),
    Reg("e_import_t1_wh", "1.0.1.8.1.255", UNIT_WH, None, U32),
    Reg("e_import_t2_wh", "1.0.1.8.2.255", UNIT_WH, None, U32),
    Reg("e_export_wh", "1.0.2.8.0.255", UNIT_WH, None, U32),
    Reg("e_export_t1_wh", "1.0.2.8.1.255", UNIT_WH, None, U32),
    Reg("e_export_t2_wh", "1.0.2.8.2.255", UNIT_WH, None, U32),
    Reg("e_q_import_varh", "1.0.3.8.0.255", UNIT_VARH, None, U32),
    Reg("e_q_export_varh", "1.0.4.8.0.255", UNIT_VARH, None, U32),
)
ENERGY_KEYS = tuple(r.key for r in REGISTERS if r.scaler is None)
#: the energy registers a load-profile entry captures (after the clock), in this order
PROFILE_KEYS = ("e_import_wh", "e_export_wh", "e_q_import_varh", "e_q_export_varh")

MEASUREMENTS = ("p_w", "q_var", "p_import_w", "p_export_w", "q_import_var", "q_export_var",
                "p_a_w", "p_b_w", "p_c_w", "v_a_v", "v_b_v", "v_c_v", "v_v", "i_a_a", "i_b_a", "i_c_a",
                "pf", "f_hz", *ENERGY_KEYS, "clock_unix_s")

#: the inputs: the connection point's solution (``point.*``, read after the power flow of the same step); named
#: ``point_*`` because inputs and measurements share one entity. NaN defaults = not given: a per-phase voltage
#: falls back to ``point_v_pu``, per-phase power to an equal split of ``point_p_w``.
INPUTS: tuple[Input, ...] = (
    Input("point_p_w", "point.p_w"),
    Input("point_q_var", "point.q_var"),
    Input("point_v_pu", "point.v_pu", default=1.0),
    *(Input(f"point_v_{ph}_pu", f"point.v_{ph}_pu", required=False, default=math.nan) for ph in PHASES),
    *(Input(f"point_p_{ph}_w", f"point.p_{ph}_w", required=False, default=math.nan) for ph in PHASES),
)
INPUT_DEFAULTS = {i.name: i.default for i in INPUTS}


class MeterConfig(BaseModel):
    """One meter (defaults: a three-phase 230/400 V meter with Wh registers and a 15 min load profile)."""

    model_config = ConfigDict(extra="forbid")

    phases: Literal[1, 3] = Field(3, description="three-phase or single-phase meter")
    phase: Literal["a", "b", "c"] = Field("a", description="the phase a single-phase meter is on")
    v_nom_v: float = Field(230.0, gt=0, le=100_000, description="nominal phase-to-neutral voltage")
    f_nom_hz: float = Field(50.0, gt=0, le=400, description="frequency the meter reports")
    energy_scaler: int = Field(0, ge=-3, le=3, description="energy register resolution: 10**scaler Wh / varh")
    energy_digits: int = Field(9, ge=4, le=9, description="decimal digits of an energy register (then rollover)")
    tariff2_hours: tuple[int, int] = Field((22, 6), description="T2 (night) [from, to) in local hours")
    utc_offset_min: int = Field(0, ge=-720, le=840, description="local time zone of the meter, minutes east")
    profile_period_s: int = Field(900, description="load-profile capture period (divides one hour)")
    profile_entries: int = Field(2880, ge=1, le=100_000, description="load-profile capacity (ring buffer)")
    clock_start: dt.datetime | None = Field(None, description="meter clock at t = 0 (timezone-aware); default: "
                                                              "the scenario start (a meter whose clock is right)")
    serial: str = Field("", max_length=16, pattern=r"^[0-9A-Za-z]*$",
                        description="serial number, 0.0.96.1.0.255 (default: derived from the device id)")
    manufacturer: str = Field("S4G", pattern=r"^[A-Z]{3}$", description="three-letter FLAG id")
    model_name: str = Field("SMM", max_length=8, pattern=r"^[0-9A-Za-z-]*$", description="meter type")
    password: str | None = Field("00000000", min_length=1, max_length=32,
                                 description="low-level-security password (None: LLS not offered)")
    public_client: int = Field(16, ge=1, le=127, description="client SAP allowed without authentication")
    logical_device: int = Field(1, ge=1, le=0x3FFF, description="server logical device address (wrapper wPort)")
    hdlc_physical_address: int = Field(17, ge=16, le=0x3FFD, description="HDLC lower (physical) address")
    max_pdu_size: int = Field(512, ge=64, le=0xFFFF, description="largest APDU the meter sends or accepts")

    @field_validator("clock_start")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("clock_start must be timezone-aware (e.g. 2024-01-01T00:00:00+00:00)")
        return v.astimezone(dt.UTC).replace(microsecond=0)

    @field_validator("tariff2_hours")
    @classmethod
    def _hours(cls, v: tuple[int, int]) -> tuple[int, int]:
        if not all(0 <= h <= 23 for h in v):
            raise ValueError("tariff2_hours are hours 0..23")
        return v

    @model_validator(mode="after")
    def _periods(self) -> MeterConfig:
        if self.profile_period_s < 60 or self.profile_period_s % 60 or 3600 % self.profile_period_s:
            raise ValueError("profile_period_s must be whole minutes dividing one hour (60, 300, 900, 3600, ...)")
        if self.utc_offset_min % 15:
            raise ValueError("utc_offset_min must be a multiple of 15")
        return self

    def serial_for(self, device_id: str) -> str:
        return self.serial or f"{zlib.crc32(device_id.encode()) % 100_000_000:08d}"

    def served(self, reg: Reg) -> bool:
        """Whether this meter has the register (a single-phase meter has one phase's)."""
        return reg.phase is None or self.phases == 3 or reg.phase == self.phase

    def scaler(self, reg: Reg) -> int:
        return self.energy_scaler if reg.scaler is None else reg.scaler


def quantise(x: np.ndarray, scaler: int, top: int) -> np.ndarray:
    """Finite value -> register integer (round half away from zero, clipped to 0..top)."""
    return cast(np.ndarray, np.minimum(np.floor(np.abs(x) / 10.0 ** scaler + 0.5), top).astype(np.int64))


def _finite(x: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(x), x, 0.0)


class MeterBank(ModelBank):
    """N meters as arrays; index i is one meter. All registers are int64 arrays in ``self.reg``."""

    setpoint_names = ()

    def __init__(self, configs: list[MeterConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        col: Callable[..., np.ndarray] = lambda f, dtype=float: np.array([f(c) for c in configs], dtype=dtype)  # noqa: E731
        self.v_nom_v = col(lambda c: c.v_nom_v)
        self.f_nom_hz = col(lambda c: c.f_nom_hz)
        self.three_phase = col(lambda c: c.phases == 3, bool)
        self.phase_index = col(lambda c: PHASES.index(c.phase), int)
        # the meter's clock: its own clock_start if the config sets one, else the scenario start (build context)
        self.epoch_s = np.array([int((c.clock_start or ctx.start).timestamp()) for c, ctx in
                                 zip(configs, self.contexts)], dtype=np.int64)
        self.offset_s = col(lambda c: 60 * c.utc_offset_min, np.int64)
        self.t2_from = col(lambda c: c.tariff2_hours[0], np.int64)
        self.t2_to = col(lambda c: c.tariff2_hours[1], np.int64)
        self.period_s = col(lambda c: c.profile_period_s, np.int64)
        # energy: resolution in mW·s and the register range (rollover)
        self.e_unit = col(lambda c: MW_S_PER_WH * 10 ** (c.energy_scaler + 3) // 1000, np.int64)  # exact
        self.e_mod = self.e_unit * col(lambda c: 10 ** c.energy_digits, np.int64)
        self.acc = {key: np.zeros(n, dtype=np.int64) for key in ENERGY_KEYS}
        self.reg: dict[str, np.ndarray] = {r.key: np.zeros(n, dtype=np.int64) for r in REGISTERS}
        self.served = {r.key: col(lambda c, r=r: c.served(r), bool) for r in REGISTERS}
        # 10.0 ** scaler as Python computes it: the driver scales wire integers with the same floats
        self.resolution = {r.key: col(lambda c, r=r: 10.0 ** c.scaler(r)) for r in REGISTERS}
        self.reg["f_hz"][:] = quantise(self.f_nom_hz, -2, U16_MAX)
        self.reg["pf"][:] = 1000
        # load profile: ring buffers (capture time in unix s, then PROFILE_KEYS registers)
        self.capacity = int(max(c.profile_entries for c in configs)) if configs else 1
        self.entries_max = col(lambda c: c.profile_entries, np.int64)
        self.profile_t = np.zeros((n, self.capacity), dtype=np.int64)
        self.profile_v = np.zeros((n, self.capacity, len(PROFILE_KEYS)), dtype=np.int64)
        self.profile_head = np.zeros(n, dtype=np.int64)  # next slot to write
        self.profile_count = np.zeros(n, dtype=np.int64)
        self.t_s = 0  # simulated seconds since the clock's start (end of the last step)

    # -- clock ------------------------------------------------------------------------------------------
    def clock_s(self, i: int) -> int:
        """Meter clock of meter ``i`` as unix seconds (UTC)."""
        return int(self.epoch_s[i] + self.t_s)

    # -- physics ----------------------------------------------------------------------------------------
    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        n = self.n
        t_s, dt_s = int(t_s), int(dt_s)

        def inp(name: str) -> np.ndarray:
            value = env.get(name)
            if value is None:
                return np.full(n, INPUT_DEFAULTS[name])
            return np.broadcast_to(np.asarray(value, dtype=float), (n,))

        p = np.clip(_finite(inp("point_p_w")), -U32_MAX, U32_MAX)
        q = np.clip(_finite(inp("point_q_var")), -U32_MAX, U32_MAX)
        v_pu = np.maximum(_finite(inp("point_v_pu")), 0.0)
        v_ph = []
        for ph in PHASES:
            x = inp(f"point_v_{ph}_pu")
            v_ph.append(np.where(np.isnan(x), v_pu, np.maximum(_finite(x), 0.0)))
        p_in = [inp(f"point_p_{ph}_w") for ph in PHASES]
        have_phases = ~(np.isnan(p_in[0]) | np.isnan(p_in[1]) | np.isnan(p_in[2]))
        if have_phases.any():
            p_ph = [np.where(have_phases, np.clip(_finite(x), -U32_MAX, U32_MAX), p / 3.0) for x in p_in]
        else:
            p_ph = [p / 3.0] * 3
        q_ph = [q / 3.0] * 3
        single = ~self.three_phase
        any_single = single.any()
        for k, ph in enumerate(PHASES):
            if any_single:  # a single-phase meter: all of the point on its phase
                on = single & (self.phase_index == k)
                p_ph[k] = np.where(on, p, p_ph[k])
                q_ph[k] = np.where(on, q, q_ph[k])
            v_k = v_ph[k] * self.v_nom_v
            s_k = np.hypot(p_ph[k], q_ph[k])
            i_k = np.divide(s_k, v_k, out=np.zeros(n), where=v_k > 0)
            served = self.served[f"v_{ph}_v"]
            self._set(f"v_{ph}_v", np.where(served, v_k, 0.0), -1, U32_MAX)
            self._set(f"i_{ph}_a", np.where(served, i_k, 0.0), -2, U32_MAX)
            self._set(f"p_{ph}_import_w", np.where(served, np.maximum(p_ph[k], 0.0), 0.0), 0, U32_MAX)
            self._set(f"p_{ph}_export_w", np.where(served, np.maximum(-p_ph[k], 0.0), 0.0), 0, U32_MAX)
        self._set("p_import_w", np.maximum(p, 0.0), 0, U32_MAX)
        self._set("p_export_w", np.maximum(-p, 0.0), 0, U32_MAX)
        self._set("q_import_var", np.maximum(q, 0.0), 0, U32_MAX)
        self._set("q_export_var", np.maximum(-q, 0.0), 0, U32_MAX)
        s = np.hypot(p, q)
        self._set("pf", np.divide(np.abs(p), s, out=np.ones(n), where=s > 0), -3, U16_MAX)
        self._set("f_hz", np.where(v_pu > 0, self.f_nom_hz, 0.0), -2, U16_MAX)
        self._integrate(t_s, dt_s, np.round(p * 1000.0).astype(np.int64), np.round(q * 1000.0).astype(np.int64))
        self.t_s = t_s + dt_s

    def _set(self, key: str, value: np.ndarray, scaler: int, top: int) -> None:
        self.reg[key][:] = quantise(value, scaler, top)

    def _integrate(self, t_s: int, dt_s: int, p_mw: np.ndarray, q_mvar: np.ndarray) -> None:
        """Add [t_s, t_s + dt_s) to the energy accumulators, segment by segment (quarter hours, profile
        periods), capturing a load-profile entry at each period end."""
        end = self.epoch_s + (t_s + dt_s)
        now = self.epoch_s + t_s
        flows = {"e_import": np.maximum(p_mw, 0), "e_export": np.maximum(-p_mw, 0),
                 "e_q_import": np.maximum(q_mvar, 0), "e_q_export": np.maximum(-q_mvar, 0)}
        while True:
            left = end - now
            if not (left > 0).any():
                break
            local_s = (now + self.offset_s) % 86_400
            to_switch = np.minimum((self.t2_from * 3600 - local_s - 1) % 86_400, (self.t2_to * 3600 - local_s - 1)
                                   % 86_400) + 1  # next tariff switch, 1 .. 86400 s ahead
            step = np.minimum(np.minimum(to_switch, self.period_s - now % self.period_s), np.maximum(left, 0))
            local_h = local_s // 3600
            t2 = np.where(self.t2_from <= self.t2_to, (local_h >= self.t2_from) & (local_h < self.t2_to),
                          (local_h >= self.t2_from) | (local_h < self.t2_to))
            for prefix, flow in flows.items():
                add = flow * step
                self._add(f"{prefix}_wh" if "q" not in prefix else f"{prefix}_varh", add)
                if "q" not in prefix:
                    self._add(f"{prefix}_t1_wh", np.where(t2, 0, add))
                    self._add(f"{prefix}_t2_wh", np.where(t2, add, 0))
            now = now + step
            due = (step > 0) & (now % self.period_s == 0)
            if due.any():
                self._capture(np.flatnonzero(due), now)

    def _add(self, key: str, add: np.ndarray) -> None:
        acc = self.acc[key]
        np.mod(acc + add, self.e_mod, out=acc)
        self.reg[key][:] = acc // self.e_unit

    def _capture(self, idx: np.ndarray, when: np.ndarray) -> None:
        slot = self.profile_head[idx]
        self.profile_t[idx, slot] = when[idx]
        for k, key in enumerate(PROFILE_KEYS):
            self.profile_v[idx, slot, k] = self.reg[key][idx]
        self.profile_head[idx] = (slot + 1) % self.entries_max[idx]
        self.profile_count[idx] = np.minimum(self.profile_count[idx] + 1, self.entries_max[idx])

    # -- readings ---------------------------------------------------------------------------------------
    def value(self, key: str) -> np.ndarray:
        """A register in its unit (integer times resolution); NaN where the meter does not have it."""
        return np.where(self.served[key], self.reg[key] * self.resolution[key], np.nan)

    def measure(self) -> dict[str, np.ndarray]:
        return derive({key: self.value(key) for key in self.reg}, (self.epoch_s + self.t_s).astype(float))

    def profile(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Load profile of meter ``i``, oldest first: capture times (unix s) and register integers."""
        count, head, cap = int(self.profile_count[i]), int(self.profile_head[i]), int(self.entries_max[i])
        order = (head - count + np.arange(count)) % cap
        return self.profile_t[i, order].copy(), self.profile_v[i, order].copy()


def derive(v: Mapping[str, np.ndarray], clock_unix_s: np.ndarray) -> dict[str, np.ndarray]:
    """Register values (by key, NaN where absent) and the meter clock (unix s) -> the measurements, load arrow
    (+ = import). The one mapping: the bank uses it on its registers, the DLMS driver on what it read from the
    wire. The meter's clock is a measurement (a meter's clock may be off); ``Measurement.t_s`` is the time base."""
    out = {key: v[key] for key in ("p_import_w", "p_export_w", "q_import_var", "q_export_var", "pf", "f_hz",
                                   *ENERGY_KEYS)}
    out["clock_unix_s"] = clock_unix_s
    out["p_w"] = v["p_import_w"] - v["p_export_w"]
    out["q_var"] = v["q_import_var"] - v["q_export_var"]
    volts = []
    for ph in PHASES:
        out[f"p_{ph}_w"] = v[f"p_{ph}_import_w"] - v[f"p_{ph}_export_w"]
        out[f"v_{ph}_v"] = v[f"v_{ph}_v"]
        out[f"i_{ph}_a"] = v[f"i_{ph}_a"]
        volts.append(v[f"v_{ph}_v"])
    present = sum((~np.isnan(x)).astype(float) for x in volts)
    total = sum(np.nan_to_num(x) for x in volts)
    out["v_v"] = np.divide(total, present, out=np.full(np.shape(total), np.nan), where=present > 0)
    return {name: out[name] for name in MEASUREMENTS}


def capabilities(cfg: MeterConfig) -> Capabilities:
    """A meter measures and accepts no setpoint."""
    return Capabilities(measurements=MEASUREMENTS, setpoints={})
