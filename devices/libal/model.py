"""LiBal grid battery physics: an LFP rack with its BMS behind a power conversion system (arrays, no I/O).

One device is a rack of ``cells_series`` LFP cells in series (``strings_parallel`` strings) with a BMS and a PCS.
The energy bookkeeping (SoC window, efficiencies, PCS power rating) is :class:`devices.battery.model.BatteryBank`;
this module adds what the BMS knows and decides:

- pack voltage ``v_v = Ns * OCV(SoC) + R * I`` from an LFP-like open-circuit-voltage curve (flat plateau, steep
  ends) and the pack resistance ``R = Ns * R_cell / Np``; the current ``I`` (+ = charging) follows from the DC power;
- temperature: one thermal mass heated by ``I^2 R`` and cooled towards the ambient temperature;
- charge/discharge current limits (CCL/DCL, A, quantised down to the 0.1 A the BMS reports) that derate linearly to
  zero near full/empty SoC and outside the charge/discharge temperature windows, and drop to zero on a protection alarm;
- alarms and warnings as a bitmask (:class:`Alarm`);
- ageing: the state of health (``soh_init`` minus a linear fade with throughput) scales the usable capacity, so an
  aged battery (e.g. ``soh_init`` from a lifetime study, devices/battery/ageing.py) stores less in a run.

The PCS follows its AC setpoint ``p_w`` (+ = charging, load arrow) within the BMS limits converted to power at the
present pack voltage (``CCL * V / eta_charge`` when charging, ``DCL * V * eta_discharge`` when discharging; the
driver checks setpoints with the same formula) and within the rating and the SoC window. Reactive power ``q_var``
gets what the apparent-power rating leaves. ``pcs_enabled`` and the EMS mode requests (``charge_request``,
``discharge_request``, set over CAN on a real or virtual rig) are state, not setpoints: ``sim://`` keeps all on.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.arrays import clip
from devices.battery.model import BatteryBank, BatteryConfig
from devices.battery.params import ParamsModel
from devices.family import DeviceContext, ModelBank

#: LFP cell open-circuit voltage (V) over SoC: a flat plateau between steep ends
OCV_SOC = np.array([0.0, 0.02, 0.05, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.90, 0.95, 0.98, 1.0])
OCV_CELL_V = np.array([2.80, 3.00, 3.12, 3.20, 3.25, 3.27, 3.285, 3.295, 3.30, 3.31, 3.325, 3.34, 3.36, 3.42, 3.50])

#: the widest pack voltage the BMS frame 0x356 can carry (unsigned 16 bit, 0.01 V)
V_FIELD_MAX = 655.35
#: the largest current the BMS frames 0x351/0x356 can carry (signed 16 bit, 0.1 A)
I_FIELD_MAX = 3276.7


class Alarm(enum.IntFlag):
    """Alarm (protection, bits 0-7) and warning (bits 8-15) flags of the BMS; ``alarms`` reports them as a float."""

    OVER_VOLTAGE = 1 << 0
    UNDER_VOLTAGE = 1 << 1
    OVER_TEMPERATURE = 1 << 2
    UNDER_TEMPERATURE = 1 << 3
    CHARGE_OVER_CURRENT = 1 << 4
    DISCHARGE_OVER_CURRENT = 1 << 5
    SYSTEM_ERROR = 1 << 6
    WARN_HIGH_VOLTAGE = 1 << 8
    WARN_LOW_VOLTAGE = 1 << 9
    WARN_HIGH_TEMPERATURE = 1 << 10
    WARN_LOW_TEMPERATURE = 1 << 11
    WARN_CHARGE_HIGH_CURRENT = 1 << 12
    WARN_DISCHARGE_HIGH_CURRENT = 1 << 13
    WARN_SYSTEM = 1 << 14


ALARM_MASK = 0x00FF
WARNING_MASK = 0xFF00
# the flags that stop currents, as plain ints once (enum arithmetic costs microseconds a step)
_STOP_ALL = int(Alarm.OVER_TEMPERATURE | Alarm.UNDER_TEMPERATURE | Alarm.SYSTEM_ERROR)
_STOP_CHARGE = int(Alarm.OVER_VOLTAGE | Alarm.CHARGE_OVER_CURRENT)
_STOP_DISCHARGE = int(Alarm.UNDER_VOLTAGE | Alarm.DISCHARGE_OVER_CURRENT)


def ocv_cell_v(soc: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, np.interp(soc, OCV_SOC, OCV_CELL_V))


def current_for_power(p_dc_w: np.ndarray, v_oc_v: np.ndarray, r_ohm: np.ndarray) -> np.ndarray:
    """Current (A, + = charging) that makes ``(V_oc + R I) I = P``; the stable root of the quadratic."""
    disc = np.maximum(v_oc_v**2 + 4.0 * r_ohm * p_dc_w, 0.0)
    return cast(np.ndarray, 2.0 * p_dc_w / (v_oc_v + np.sqrt(disc)))


class BmsSettings(BaseModel):
    """Thresholds of the BMS (per cell for voltages, pack temperature in degC)."""

    model_config = ConfigDict(extra="forbid")

    cell_v_charge: float = Field(3.55, description="charge voltage limit per cell (0x351)")
    cell_v_discharge: float = Field(2.90, description="discharge voltage limit per cell (0x351)")
    cell_v_max_alarm: float = 3.65
    cell_v_max_warn: float = 3.55
    cell_v_min_alarm: float = 2.50
    cell_v_min_warn: float = 2.90
    t_charge_min_c: float = Field(0.0, description="no charging below; full current from +t_derate_k above")
    t_charge_max_c: float = Field(50.0, description="no charging above; full current up to -t_derate_k below")
    t_discharge_min_c: float = -20.0
    t_discharge_max_c: float = 55.0
    t_derate_k: float = Field(10.0, gt=0, description="width of the linear temperature derating ramps")
    t_high_warn_c: float = 45.0
    t_high_alarm_c: float = 55.0
    t_low_warn_c: float = 0.0
    t_low_alarm_c: float = -20.0
    over_current_warn: float = Field(1.05, gt=1, description="warning above this multiple of the base current limit")
    over_current_alarm: float = Field(1.2, gt=1, description="protection above this multiple of the base limit")

    @model_validator(mode="after")
    def _order(self) -> BmsSettings:
        if not self.cell_v_min_alarm < self.cell_v_min_warn <= self.cell_v_max_warn < self.cell_v_max_alarm:
            raise ValueError("cell voltage thresholds must satisfy min_alarm < min_warn <= max_warn < max_alarm")
        if not self.t_low_alarm_c < self.t_low_warn_c < self.t_high_warn_c < self.t_high_alarm_c:
            raise ValueError("temperature thresholds must satisfy low_alarm < low_warn < high_warn < high_alarm")
        for lo, hi in ((self.t_charge_min_c, self.t_charge_max_c), (self.t_discharge_min_c, self.t_discharge_max_c)):
            if hi - lo < 2 * self.t_derate_k:
                raise ValueError("each temperature window must be at least twice t_derate_k wide")
        return self


class LibalConfig(ParamsModel):
    """One LiBal rack: battery energy and PCS rating (``battery``), pack build, BMS limits, thermal data."""

    battery: BatteryConfig = Field(description="energy, SoC window, efficiencies and the PCS active-power rating")
    s_max_va: float = Field(gt=0, description="PCS apparent-power rating")
    cells_series: int = Field(160, ge=1, description="LFP cells in series (160 -> 512 V nominal)")
    strings_parallel: int = Field(1, ge=1)
    cell_r_ohm: float = Field(0.0005, ge=0, description="internal resistance of one cell")
    i_charge_max_a: float = Field(gt=0, le=I_FIELD_MAX, description="BMS charge current limit before derating")
    i_discharge_max_a: float = Field(gt=0, le=I_FIELD_MAX, description="BMS discharge current limit before derating")
    soc_derate_band: float = Field(0.05, gt=0, le=0.5, description="currents fall linearly to 0 over this SoC band "
                                   "below soc_max (charge) and above soc_min (discharge)")
    soh_init: float = Field(1.0, gt=0, le=1)
    soh_eol: float = Field(0.8, gt=0, lt=1, description="SoH after cycle_life full equivalent cycles")
    cycle_life: float = Field(6000, gt=0)
    heat_capacity_j_per_k: float = Field(8.0e5, gt=0)
    heat_transfer_w_per_k: float = Field(40.0, gt=0, description="cooling to ambient (container HVAC)")
    t_ambient_c: float = 20.0
    t_init_c: float = 20.0
    bms: BmsSettings = Field(default_factory=BmsSettings)

    @model_validator(mode="after")
    def _check(self) -> LibalConfig:
        b = self.battery
        if max(b.p_charge_max_w, b.p_discharge_max_w) > self.s_max_va:
            raise ValueError("battery power ratings exceed the PCS rating s_max_va")
        if self.cells_series * self.bms.cell_v_max_alarm > V_FIELD_MAX:
            raise ValueError(f"cells_series={self.cells_series}: a pack above {V_FIELD_MAX} V does not fit the BMS "
                             "voltage field (0x356, 0.01 V unsigned 16 bit)")
        return self

    @property
    def r_pack_ohm(self) -> float:
        return self.cells_series * self.cell_r_ohm / self.strings_parallel

    @property
    def module_count(self) -> int:
        """Modules reported in 0x359 (16 cells per module, as in Pylontech-style racks)."""
        return max(1, round(self.cells_series / 16)) * self.strings_parallel


class LibalBank(ModelBank):
    setpoint_names = ("p_w", "q_var")

    def __init__(self, configs: list[LibalConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)

        def col(get: Callable[[LibalConfig], float]) -> np.ndarray:
            return np.array([get(c) for c in configs], dtype=float)

        self.battery = BatteryBank([c.battery for c in configs])
        self.s_max_va = col(lambda c: c.s_max_va)
        self.ns = col(lambda c: c.cells_series)
        self.r_ohm = col(lambda c: c.r_pack_ohm)
        self.i_charge_base_a = col(lambda c: c.i_charge_max_a)
        self.i_discharge_base_a = col(lambda c: c.i_discharge_max_a)
        self.soc_band = col(lambda c: c.soc_derate_band)
        self.soc_lo = col(lambda c: c.battery.soc_min)
        self.soc_hi = col(lambda c: c.battery.soc_max)
        self.soh_init = col(lambda c: c.soh_init)
        self.fade_per_wh = col(lambda c: (1.0 - c.soh_eol) / (2.0 * c.battery.capacity_wh * c.cycle_life))
        self.c_th = col(lambda c: c.heat_capacity_j_per_k)
        self.k_th = col(lambda c: c.heat_transfer_w_per_k)
        self.t_amb_c = col(lambda c: c.t_ambient_c)
        # mypy cannot type a lambda with a default argument
        self.bms = {name: col(lambda c, n=name: getattr(c.bms, n)) for name in BmsSettings.model_fields}  # type: ignore[misc]
        n = self.n
        self.pcs_enabled = np.ones(n, dtype=bool)
        self.charge_request = np.ones(n, dtype=bool)
        self.discharge_request = np.ones(n, dtype=bool)
        self.t_c = col(lambda c: c.t_init_c)
        self.throughput_wh = np.zeros(n)
        self.i_a = np.zeros(n)
        self.q_var = np.zeros(n)
        self.v_v = self.ns * ocv_cell_v(self.battery.soc)
        self.dt_s: float = 60
        self.capacity_rated_wh = self.battery.capacity_wh.copy()
        self._decay_memo: tuple[float, np.ndarray] | None = None
        # the over-current thresholds (A): the BMS settings and base currents are fixed at set-up
        s = self.bms
        self._over_current_a = (s["over_current_alarm"] * self.i_charge_base_a,
                                s["over_current_alarm"] * self.i_discharge_base_a,
                                s["over_current_warn"] * self.i_charge_base_a,
                                s["over_current_warn"] * self.i_discharge_base_a)
        self._age(start=True)
        self.alarms = self._alarms()
        self.i_charge_max_a, self.i_discharge_max_a = self._current_limits()

    def _age(self, start: bool = False) -> None:
        """Usable capacity = rated capacity x SoH (the SoC window scales with it); at the start the initial SoC
        applies to the aged capacity, later the stored energy is kept (clipped into the shrinking window)."""
        bat = self.battery
        soc0 = bat.soc
        bat.capacity_wh = self.capacity_rated_wh * np.maximum(self.soh, 1e-6)
        bat.e_min_wh = self.soc_lo * bat.capacity_wh
        bat.e_max_wh = self.soc_hi * bat.capacity_wh
        bat.e_wh = soc0 * bat.capacity_wh if start else clip(bat.e_wh, bat.e_min_wh, bat.e_max_wh)

    # -- BMS ----------------------------------------------------------------------------------------------
    @property
    def soh(self) -> np.ndarray:
        return np.maximum(self.soh_init - self.fade_per_wh * self.throughput_wh, 0.0)

    @property
    def charge_enable(self) -> np.ndarray:
        """What the BMS grants (0x35C): the EMS asked for it and the BMS allows a current now."""
        return self.charge_request & (self.i_charge_max_a > 0)

    @property
    def discharge_enable(self) -> np.ndarray:
        return self.discharge_request & (self.i_discharge_max_a > 0)

    @property
    def charge_voltage_limit_v(self) -> np.ndarray:
        return cast(np.ndarray, self.ns * self.bms["cell_v_charge"])

    @property
    def discharge_voltage_limit_v(self) -> np.ndarray:
        return cast(np.ndarray, self.ns * self.bms["cell_v_discharge"])

    def _alarms(self) -> np.ndarray:
        s = self.bms
        cell_v = self.v_v / self.ns
        t, i = self.t_c, self.i_a
        i_dis = -i
        oc_ch_alarm, oc_dis_alarm, oc_ch_warn, oc_dis_warn = self._over_current_a
        flags = np.zeros(self.n, dtype=np.int64)
        for mask, flag in (
            (cell_v > s["cell_v_max_alarm"], Alarm.OVER_VOLTAGE),
            (cell_v < s["cell_v_min_alarm"], Alarm.UNDER_VOLTAGE),
            (t > s["t_high_alarm_c"], Alarm.OVER_TEMPERATURE),
            (t < s["t_low_alarm_c"], Alarm.UNDER_TEMPERATURE),
            (i > oc_ch_alarm, Alarm.CHARGE_OVER_CURRENT),
            (i_dis > oc_dis_alarm, Alarm.DISCHARGE_OVER_CURRENT),
            (cell_v > s["cell_v_max_warn"], Alarm.WARN_HIGH_VOLTAGE),
            (cell_v < s["cell_v_min_warn"], Alarm.WARN_LOW_VOLTAGE),
            (t > s["t_high_warn_c"], Alarm.WARN_HIGH_TEMPERATURE),
            (t < s["t_low_warn_c"], Alarm.WARN_LOW_TEMPERATURE),
            (i > oc_ch_warn, Alarm.WARN_CHARGE_HIGH_CURRENT),
            (i_dis > oc_dis_warn, Alarm.WARN_DISCHARGE_HIGH_CURRENT),
        ):
            if mask.any():  # flags rarely raised: the test is cheaper than the masked write
                flags[mask] |= int(flag)
        return flags

    def _thermal_decay(self, dt_s: float) -> np.ndarray:
        """exp(-k dt / C): the same every step of the same length."""
        memo = self._decay_memo
        if memo is None or memo[0] != dt_s:
            memo = self._decay_memo = (dt_s, np.exp(-self.k_th * dt_s / self.c_th))
        return memo[1]

    def _current_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """CCL and DCL (A, >= 0) from SoC, temperature and alarms, rounded down to the BMS's 0.1 A."""
        s, soc, t = self.bms, self.battery.soc, self.t_c
        f_soc_ch = clip((self.soc_hi - soc) / self.soc_band, 0.0, 1.0)
        f_soc_dis = clip((soc - self.soc_lo) / self.soc_band, 0.0, 1.0)
        band = s["t_derate_k"]
        f_t_ch = clip(np.minimum(t - s["t_charge_min_c"], s["t_charge_max_c"] - t) / band, 0.0, 1.0)
        f_t_dis = clip(np.minimum(t - s["t_discharge_min_c"], s["t_discharge_max_c"] - t) / band, 0.0, 1.0)
        a = self.alarms
        stop_all = (a & _STOP_ALL) != 0
        stop_ch = stop_all | ((a & _STOP_CHARGE) != 0)
        stop_dis = stop_all | ((a & _STOP_DISCHARGE) != 0)
        ccl = np.where(stop_ch, 0.0, self.i_charge_base_a * f_soc_ch * f_t_ch)
        dcl = np.where(stop_dis, 0.0, self.i_discharge_base_a * f_soc_dis * f_t_dis)
        # The BMS reports 0.1 A steps; rounding down keeps what it grants exactly representable on the wire.
        return np.floor(ccl * 10.0 + 1e-9) / 10.0, np.floor(dcl * 10.0 + 1e-9) / 10.0

    def power_limits_w(self) -> tuple[np.ndarray, np.ndarray]:
        """AC charge and discharge power (>= 0) the BMS current limits allow now.

        From the open-circuit voltage, not the present terminal voltage: after a charge the terminal voltage is
        lifted by I·R, and a discharge limit taken from it would exceed the discharge current limit. Discharging
        at the limit current the pack sits at OCV - I·R (exact); charging, OCV is the conservative side.
        """
        ocv = self.ns * ocv_cell_v(self.battery.soc)
        charge = self.i_charge_max_a * ocv / self.battery.eta_charge
        v_dis = np.maximum(ocv - self.i_discharge_max_a * self.r_ohm, 0.0)
        discharge = self.i_discharge_max_a * v_dis * self.battery.eta_discharge
        return charge, discharge

    # -- ModelBank ------------------------------------------------------------------------------------------
    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self.dt_s = dt_s
        bat = self.battery
        ch_lim, dis_lim = self.power_limits_w()  # what the BMS broadcast at the start of the step
        ch_lim = np.where(self.charge_request, ch_lim, 0.0)
        dis_lim = np.where(self.discharge_request, dis_lim, 0.0)
        request = np.where(self.pcs_enabled, self.setpoints["p_w"], 0.0)
        soc0 = bat.soc
        p = bat.step(dt_s, clip(request, -dis_lim, ch_lim)).p_w
        soc1 = bat.soc
        p_dc = np.where(p >= 0, p * bat.eta_charge, p / bat.eta_discharge)
        v_oc_mid = self.ns * 0.5 * (ocv_cell_v(soc0) + ocv_cell_v(soc1))
        self.i_a = current_for_power(p_dc, v_oc_mid, self.r_ohm)
        self.v_v = self.ns * ocv_cell_v(soc1) + self.r_ohm * self.i_a
        # One thermal mass: exact solution of C dT/dt = I^2 R - k (T - T_amb) for a constant current.
        t_inf = self.t_amb_c + self.i_a**2 * self.r_ohm / self.k_th
        self.t_c = t_inf + (self.t_c - t_inf) * self._thermal_decay(dt_s)
        self.throughput_wh = self.throughput_wh + np.abs(p_dc) * dt_s / 3600.0
        self._age()
        q_room = np.sqrt(np.maximum(self.s_max_va**2 - p**2, 0.0))
        self.q_var = np.where(self.pcs_enabled, clip(self.setpoints["q_var"], -q_room, q_room), 0.0)
        self.alarms = self._alarms()
        self.i_charge_max_a, self.i_discharge_max_a = self._current_limits()

    def measure(self) -> dict[str, np.ndarray]:
        charge, discharge = self.battery.available_w(self.dt_s)
        bms_charge, bms_discharge = self.power_limits_w()
        return {
            "p_w": self.battery.p_w.copy(),
            "q_var": self.q_var.copy(),
            "batt_p_w": self.battery.p_w.copy(),
            "soc": self.battery.soc,
            "e_wh": self.battery.e_wh.copy(),
            "p_charge_avail_w": np.minimum(charge, bms_charge),
            "p_discharge_avail_w": np.minimum(discharge, bms_discharge),
            "v_v": self.v_v.copy(),
            "i_a": self.i_a.copy(),
            "t_c": self.t_c.copy(),
            "soh": self.soh,
            "alarms": self.alarms.astype(float),
            "i_charge_max_a": self.i_charge_max_a.copy(),
            "i_discharge_max_a": self.i_discharge_max_a.copy(),
        }
