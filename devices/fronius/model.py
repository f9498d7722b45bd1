"""Fronius hybrid inverter with battery: physics and SunSpec model-124 storage control (no I/O).

The physics is :class:`~devices.pv_battery.model.PvBatteryBank` (PV behind an MPPT limit, inverter efficiency,
AC limit, battery) used by composition; this module adds what the real device does on top of it:

* **Self-consumption** (no active limits): the inverter regulates its smart meter (the grid connection point)
  toward zero, i.e. the battery takes the PV surplus or covers the deficit of the site's load. The load the
  meter sees without the inverter is the env input ``site_load_w`` (W, + = consumption).
* **Storage control as SunSpec model 124 on a Fronius** (values in physical units here; registers are
  :mod:`devices.fronius.sunspec_map`'s job): ``StorCtl_Mod`` bit 0 activates the charge limit ``InWRte``,
  bit 1 the discharge limit ``OutWRte``, both in % of ``WChaMax``. The battery power (+ = charge) is kept in
  the window ``[-OutWRte, +InWRte] * WChaMax`` (inactive side: the battery rating); inside the window the
  device still does self-consumption. A negative ``OutWRte`` therefore *forces* charging and a negative
  ``InWRte`` forces discharging, as Fronius documents. If the window is empty, the charge limit wins.
* ``InOutWRte_RvrtTms``: every write to the mode or the rates (re)arms a timer; when it runs out the limits
  fall back to their defaults (mode 0, rates 100 %) and the device returns to self-consumption. 0 = never.
* ``MinRsvPct``: the battery is not discharged below this SoC (on top of the BMS window of the battery).
* ``ChaGriSet``: 0 = the battery may only be charged from PV, 1 = grid charging allowed.

The family setpoint ``batt_p_w`` (W, + = charge, AC side) is a *command*, applied exactly as the SunSpec
driver writes it: ``StorCtl_Mod = 3`` with ``InWRte = -OutWRte = batt_p_w / WChaMax``, i.e. a window of one
point. NaN in the setpoint array means "no new command" (the bank consumes each command when it steps), so
a device nobody commands does self-consumption, on ``sim://`` and over the wire alike.

The battery's charge/discharge efficiencies include its DC/AC conversion (as in the pv_battery family), so
the battery's DC power at the inverter's battery terminal is reported equal to its AC-side power.
"""

from __future__ import annotations

import operator
import zlib
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
from pydantic import Field, model_validator

from devices.arrays import as_row, clip
from devices.base import Capabilities, Limit
from devices.battery.model import BatteryConfig
from devices.battery.params import ParamsModel
from devices.family import DeviceContext, Family, Input, ModelBank
from devices.pv.functions import SETPOINTS as FUNCTION_SETPOINTS
from devices.pv.functions import InverterControls, InverterFunctions, setpoint_limits, setpoint_rules
from devices.pv.model import ControlState, control_state
from devices.pv_battery.model import PvBatteryBank, PvBatteryConfig

#: SunSpec model 124 ChaSt enumeration
CHA_ST_OFF, CHA_ST_EMPTY, CHA_ST_DISCHARGING, CHA_ST_CHARGING, CHA_ST_FULL, CHA_ST_HOLDING = 1, 2, 3, 4, 5, 6
#: StorCtl_Mod bits
CHARGE_LIMIT, DISCHARGE_LIMIT = 1, 2
RATE_PCT_MAX = 100.0
RVRT_S_MAX = 65535
_FLOW_EPS_W = 0.5


def _default_battery() -> BatteryConfig:
    return BatteryConfig(capacity_wh=9600, p_charge_max_w=4800, p_discharge_max_w=4800, soc_min=0.05, soc_max=1.0)


class FroniusConfig(ParamsModel):
    """One Fronius hybrid inverter with its battery (defaults: a 5 kW hybrid with a 9.6 kWh battery)."""

    pv_kwp: float = Field(5.0, ge=0, description="installed PV peak power")
    pv_mppt_max_w: float | None = Field(None, gt=0, description="DC limit of the MPPT inputs (default: none)")
    pv_strings: int = Field(2, ge=1, le=2, description="MPPT inputs reported in SunSpec model 160")
    ac_max_w: float = Field(5000.0, gt=0, description="inverter AC active-power rating (WRtg)")
    s_max_va: float | None = Field(None, gt=0, description="apparent-power rating (VARtg; default ac_max_w)")
    controls: InverterControls = Field(InverterControls(), description="start-up settings of models 123/126/132")
    eta_inverter: float = Field(0.97, gt=0, le=1, description="PV DC -> AC efficiency")
    battery: BatteryConfig = Field(default_factory=_default_battery)
    soc_reserve: float = Field(0.0, ge=0, le=1, description="SoC kept for backup, MinRsvPct / 100 at start-up")
    allow_grid_charging: bool = Field(True, description="ChaGriSet at start-up (False: charge from PV only)")
    revert_s: int = Field(0, ge=0, le=RVRT_S_MAX, description="InOutWRte_RvrtTms at start-up (0 = never)")
    v_nom_v: float = Field(230.0, gt=0, description="phase voltage the virtual device reports")
    f_nom_hz: float = Field(50.0, gt=0, description="frequency the virtual device reports")
    battery_v_nom_v: float = Field(400.0, gt=0, description="nominal battery voltage (InBatV, AhrRtg)")
    pv_string_v: float = Field(600.0, gt=0, description="MPPT voltage of the PV strings")
    model_name: str = Field("Symo GEN24 5.0 Plus", max_length=32, description="SunSpec Md / Solar API model")
    serial: str = Field("", max_length=32, description="SunSpec SN (default: derived from the device id)")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit id of the inverter")

    @model_validator(mode="after")
    def _ratings(self) -> FroniusConfig:
        self.pv_config()  # the pv_battery rules (battery ratings within ac_max_w) apply as they are
        if self.s_max_va is not None and self.s_max_va < self.ac_max_w:
            raise ValueError("s_max_va must be at least ac_max_w")
        return self

    @property
    def s_rating_va(self) -> float:
        return self.s_max_va or self.ac_max_w

    def pv_config(self) -> PvBatteryConfig:
        return PvBatteryConfig(pv_kwp=self.pv_kwp, pv_mppt_max_w=self.pv_mppt_max_w, ac_max_w=self.ac_max_w,
                               eta_inverter=self.eta_inverter, allow_grid_charging=True, battery=self.battery)

    @property
    def w_cha_max_w(self) -> float:
        """WChaMax, the reference of InWRte and OutWRte: the larger battery rating, so both fit in 100 %."""
        return max(self.battery.p_charge_max_w, self.battery.p_discharge_max_w)

    def serial_for(self, device_id: str) -> str:
        return self.serial or f"{zlib.crc32(device_id.encode()) % 100_000_000:08d}"


def validate_storage_control(fields: Mapping[str, float]) -> None:
    """Raise ValueError naming the first field outside what the device accepts (nothing is applied)."""
    for name, value in fields.items():
        if name == "stor_ctl_mod":
            ok = float(value).is_integer() and 0 <= value <= 3
        elif name in ("in_w_rte_pct", "out_w_rte_pct"):
            ok = -RATE_PCT_MAX <= value <= RATE_PCT_MAX
        elif name == "min_rsv_pct":
            ok = 0 <= value <= 100
        elif name == "rvrt_s":
            ok = float(value).is_integer() and 0 <= value <= RVRT_S_MAX
        elif name == "cha_gri_set":
            ok = value in (0, 1)
        else:
            raise ValueError(f"{name} is not a storage-control field")
        if not ok or np.isnan(value):
            raise ValueError(f"{name}={value!r} outside the accepted range")


@dataclass(frozen=True)
class FroniusState:
    """Everything the protocol servers report about one device (physical units, load arrow, W, Wh)."""

    t_s: float
    p_w: float
    q_var: float
    batt_p_w: float
    pv_p_w: float
    pv_dc_w: float
    pv_curtail_w: float
    site_load_w: float
    grid_p_w: float
    soc: float
    e_wh: float
    p_charge_avail_w: float
    p_discharge_avail_w: float
    cha_st: int
    stor_ctl_mod: int
    in_w_rte_pct: float
    out_w_rte_pct: float
    rvrt_s: int
    min_rsv_pct: float
    cha_gri_set: int
    e_ac_out_wh: float
    e_pv_wh: float
    e_batt_in_wh: float
    e_batt_out_wh: float
    e_grid_import_wh: float
    e_grid_export_wh: float
    v_v: float
    f_hz: float
    controls: ControlState | None = None  # models 122/123/126/132 (None: a state without them)


class FroniusBank(ModelBank):
    """N Fronius hybrids stepped as arrays; index i is one device."""

    setpoint_names = ("batt_p_w", *FUNCTION_SETPOINTS)
    # energy registers, set (with the other outputs) in __init__
    e_ac_out_wh: np.ndarray
    e_pv_wh: np.ndarray
    e_batt_in_wh: np.ndarray
    e_batt_out_wh: np.ndarray
    e_grid_import_wh: np.ndarray
    e_grid_export_wh: np.ndarray

    def __init__(self, configs: list[FroniusConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        for name in self.setpoint_names:
            self.setpoints[name][:] = np.nan  # no command yet: self-consumption, start-up settings
        # the functions' setpoints as rows of one block: a step sees with one call that none was written
        self._fn_block = np.full((len(FUNCTION_SETPOINTS), n), np.nan)
        self._fn_names = FUNCTION_SETPOINTS
        self._fn_rows = tuple(self._fn_block)  # the very row objects in ``setpoints`` (identity is checked)
        for name, row in zip(FUNCTION_SETPOINTS, self._fn_rows):
            self.setpoints[name] = row
        self.pv = PvBatteryBank([c.pv_config() for c in configs])
        self.battery = self.pv.battery  # every Fronius here has its battery: same indices
        col: Callable[[Callable[[FroniusConfig], float]], np.ndarray] = (  # noqa: E731
            lambda f: np.array([f(c) for c in configs], dtype=float))
        self.w_cha_max_w = col(lambda c: c.w_cha_max_w)
        self.eta_inverter = col(lambda c: c.eta_inverter)
        self.v_nom_v = col(lambda c: c.v_nom_v)
        self.f_nom_hz = col(lambda c: c.f_nom_hz)
        self.e_floor_bms_wh = col(lambda c: c.battery.soc_min * c.battery.capacity_wh)
        self.e_ceiling_wh = col(lambda c: c.battery.soc_max * c.battery.capacity_wh)
        # storage control (model 124), physical units
        self.stor_ctl_mod = np.zeros(n, dtype=int)
        self.in_w_rte_pct = np.full(n, RATE_PCT_MAX)
        self.out_w_rte_pct = np.full(n, RATE_PCT_MAX)
        self.rvrt_s = np.array([c.revert_s for c in configs], dtype=int)
        self.rvrt_deadline_s = np.full(n, np.inf)
        self.min_rsv_pct = col(lambda c: c.soc_reserve * 100.0)  # SunSpec's unit from here on
        self.cha_gri_set = np.array([int(c.allow_grid_charging) for c in configs], dtype=int)
        self.functions = InverterFunctions([c.controls for c in configs], col(lambda c: c.ac_max_w),
                                           col(lambda c: c.s_rating_va))
        self.v_pu = np.ones(n)
        self._no_import_cap = np.full(n, np.inf)
        self._no_import_cap.flags.writeable = False
        self.q_var = np.zeros(n)
        self.pv_avail_w = np.zeros(n)
        # outputs of the last step
        self.t_s = 0.0
        self.dt_s: float = 60
        for name in ("p_w", "batt_p_w", "pv_p_w", "pv_dc_w", "pv_curtail_w", "site_load_w", "grid_p_w",
                     "e_ac_out_wh", "e_pv_wh", "e_batt_in_wh", "e_batt_out_wh", "e_grid_import_wh",
                     "e_grid_export_wh"):
            setattr(self, name, np.zeros(n))

    # -- storage control ------------------------------------------------------------------------------
    def set_storage_control(self, i: int, t_s: float, **fields: float) -> None:
        """Apply a write to model 124 (physical units) at time ``t_s``; ValueError leaves everything as it was."""
        validate_storage_control(fields)
        for name, value in fields.items():
            getattr(self, name)[i] = value
        if fields.keys() & {"stor_ctl_mod", "in_w_rte_pct", "out_w_rte_pct", "rvrt_s"}:
            self._arm_revert(np.array([i]), t_s)

    def _arm_revert(self, idx: np.ndarray, t_s: float) -> None:
        self.rvrt_deadline_s[idx] = np.where(self.rvrt_s[idx] > 0, t_s + self.rvrt_s[idx], np.inf)

    def _consume_commands(self, t_s: float) -> None:
        sp = self.setpoints["batt_p_w"]
        idx = (~np.isnan(sp)).nonzero()[0]
        if idx.size:
            pct = clip(sp[idx] / self.w_cha_max_w[idx] * 100.0, -RATE_PCT_MAX, RATE_PCT_MAX)
            self.stor_ctl_mod[idx] = CHARGE_LIMIT | DISCHARGE_LIMIT
            self.in_w_rte_pct[idx] = pct
            self.out_w_rte_pct[idx] = -pct
            self._arm_revert(idx, t_s)
            sp[idx] = np.nan

    def _revert_due(self, t_s: float) -> None:
        if self.rvrt_deadline_s.min() > t_s:  # nothing due (the usual step; NaN takes the long way)
            return
        due = self.rvrt_deadline_s <= t_s
        if due.any():
            self.stor_ctl_mod[due] = 0
            self.in_w_rte_pct[due] = RATE_PCT_MAX
            self.out_w_rte_pct[due] = RATE_PCT_MAX
            self.rvrt_deadline_s[due] = np.inf

    def _no_function_setpoints(self) -> bool:
        """True if no grid-support setpoint is waiting (all NaN), so applying them would change nothing."""
        if not all(map(operator.is_, map(self.setpoints.get, self._fn_names), self._fn_rows)):
            return False  # an array was replaced: no shortcut
        return bool(np.isnan(self._fn_block).all())

    def _e_floor_wh(self) -> np.ndarray:
        return cast(np.ndarray, np.maximum(self.e_floor_bms_wh, self.min_rsv_pct / 100.0 * self.battery.capacity_wh))

    # -- physics ----------------------------------------------------------------------------------------
    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self._consume_commands(t_s)
        self._revert_due(t_s)
        fn = self.functions
        if not self._no_function_setpoints():
            fn.apply_setpoints(self.setpoints, t_s)
        self.dt_s = dt_s
        h = dt_s / 3600.0
        n = self.n
        self.v_pu = as_row(env.get("v_pu", 1.0), n).copy()
        cap, q_vv = fn.step(t_s, dt_s, self.v_pu)
        connected = fn.conn == 1
        all_connected = bool(connected.all())  # the usual case: the np.where's below would copy their input
        w_per_kwp = as_row(np.maximum(np.asarray(env.get("pv_w_per_kwp", 0.0), dtype=float), 0.0), n)
        load = as_row(env.get("site_load_w", 0.0), n)
        pv = self.pv
        self.pv_avail_w = np.minimum(pv.pv_kwp * w_per_kwp, pv.pv_mppt_max_w) * pv.eta_inverter
        # a disconnected inverter converts nothing
        pv_avail = self.pv_avail_w if all_connected else np.where(connected, self.pv_avail_w, 0.0)

        # Self-consumption target, kept inside the model-124 window.
        upper = np.where(self.stor_ctl_mod & CHARGE_LIMIT, self.in_w_rte_pct / 100.0 * self.w_cha_max_w,
                         self.battery.p_charge_max_w)
        lower = np.where(self.stor_ctl_mod & DISCHARGE_LIMIT, -self.out_w_rte_pct / 100.0 * self.w_cha_max_w,
                         -self.battery.p_discharge_max_w)
        request = np.minimum(np.maximum(pv_avail - load, lower), upper)
        request = np.where(self.cha_gri_set == 1, request, np.minimum(request, pv_avail))
        # The reserve: never discharge below MinRsvPct within this step.
        room_wh = np.maximum(self.battery.e_wh - self._e_floor_wh(), 0.0)
        request = np.maximum(request, -room_wh * self.battery.eta_discharge / h)

        pv.setpoints["batt_p_w"][:] = request
        if all_connected:
            pv.step(t_s, dt_s, {"pv_w_per_kwp": w_per_kwp}, export_cap_w=cap, import_cap_w=self._no_import_cap)
        else:
            pv.step(t_s, dt_s, {"pv_w_per_kwp": np.where(connected, w_per_kwp, 0.0)},
                    export_cap_w=cap, import_cap_w=np.where(connected, np.inf, 0.0))

        self.p_w = pv.p_w.copy()
        self.q_var = fn.q_var(self.p_w, q_vv)
        self.batt_p_w = pv.batt_p_w.copy()
        self.pv_p_w = pv.pv_p_w.copy()
        self.pv_curtail_w = self.pv_avail_w + self.pv_p_w  # clipped by the rating, limited, or disconnected
        self.pv_dc_w = -self.pv_p_w / self.eta_inverter
        self.site_load_w = np.array(load, dtype=float)
        self.grid_p_w = self.site_load_w + self.p_w
        self.e_ac_out_wh += np.maximum(-self.p_w, 0.0) * h
        self.e_pv_wh += self.pv_dc_w * h
        self.e_batt_in_wh += np.maximum(self.batt_p_w, 0.0) * h
        self.e_batt_out_wh += np.maximum(-self.batt_p_w, 0.0) * h
        self.e_grid_import_wh += np.maximum(self.grid_p_w, 0.0) * h
        self.e_grid_export_wh += np.maximum(-self.grid_p_w, 0.0) * h
        self.t_s = float(t_s + dt_s)

    def _available(self) -> tuple[np.ndarray, np.ndarray]:
        h = self.dt_s / 3600.0
        charge, _ = self.battery.available_w(self.dt_s)
        room_wh = np.maximum(self.battery.e_wh - self._e_floor_wh(), 0.0)
        discharge = np.minimum(self.battery.p_discharge_max_w, room_wh * self.battery.eta_discharge / h)
        return charge, discharge

    def charge_status(self) -> np.ndarray:
        e, cap = self.battery.e_wh, self.battery.capacity_wh
        st = np.full(self.n, CHA_ST_HOLDING)
        st[e <= self._e_floor_wh() + 1e-6 * cap] = CHA_ST_EMPTY
        st[e >= self.e_ceiling_wh - 1e-6 * cap] = CHA_ST_FULL
        st[self.batt_p_w > _FLOW_EPS_W] = CHA_ST_CHARGING
        st[self.batt_p_w < -_FLOW_EPS_W] = CHA_ST_DISCHARGING
        return st

    def measure(self) -> dict[str, np.ndarray]:
        charge, discharge = self._available()
        return {
            "p_w": self.p_w.copy(),
            "q_var": self.q_var.copy(),
            "pv_p_w": self.pv_p_w.copy(),
            "batt_p_w": self.batt_p_w.copy(),
            "soc": self.battery.soc.copy(),
            "e_wh": self.battery.e_wh.copy(),
            "pv_curtail_w": self.pv_curtail_w.copy(),
            "p_charge_avail_w": charge,
            "p_discharge_avail_w": discharge,
            "v_v": np.where(np.isfinite(self.v_pu), self.v_pu, 1.0) * self.v_nom_v,
            "f_hz": self.f_nom_hz.copy(),
        }

    def state(self, i: int) -> FroniusState:
        """A snapshot of device ``i`` for the protocol servers."""
        charge, discharge = self._available()
        f: Callable[[np.ndarray], float] = lambda a: float(a[i])  # noqa: E731
        return FroniusState(
            t_s=self.t_s, p_w=f(self.p_w), q_var=f(self.q_var), batt_p_w=f(self.batt_p_w), pv_p_w=f(self.pv_p_w),
            pv_dc_w=f(self.pv_dc_w), pv_curtail_w=f(self.pv_curtail_w), site_load_w=f(self.site_load_w),
            grid_p_w=f(self.grid_p_w), soc=f(self.battery.soc), e_wh=f(self.battery.e_wh),
            p_charge_avail_w=f(charge), p_discharge_avail_w=f(discharge), cha_st=int(self.charge_status()[i]),
            stor_ctl_mod=int(self.stor_ctl_mod[i]), in_w_rte_pct=f(self.in_w_rte_pct),
            out_w_rte_pct=f(self.out_w_rte_pct), rvrt_s=int(self.rvrt_s[i]), min_rsv_pct=f(self.min_rsv_pct),
            cha_gri_set=int(self.cha_gri_set[i]), e_ac_out_wh=f(self.e_ac_out_wh), e_pv_wh=f(self.e_pv_wh),
            e_batt_in_wh=f(self.e_batt_in_wh), e_batt_out_wh=f(self.e_batt_out_wh),
            e_grid_import_wh=f(self.e_grid_import_wh), e_grid_export_wh=f(self.e_grid_export_wh),
            v_v=f(np.where(np.isfinite(self.v_pu), self.v_pu, 1.0) * self.v_nom_v), f_hz=f(self.f_nom_hz),
            controls=control_state(self.functions, i, f(self.pv_avail_w)),
        )


MEASUREMENTS = ("p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "e_wh", "pv_curtail_w", "p_charge_avail_w",
                "p_discharge_avail_w", "v_v", "f_hz")


def _capabilities(cfg: FroniusConfig) -> Capabilities:
    return Capabilities(measurements=MEASUREMENTS,
                        setpoints={"batt_p_w": Limit(-cfg.battery.p_discharge_max_w, cfg.battery.p_charge_max_w),
                                   **setpoint_limits(cfg.ac_max_w)}, rules=setpoint_rules)


FAMILY = Family(
    name="fronius",
    config=FroniusConfig,
    bank=FroniusBank,
    measurements=MEASUREMENTS,
    capabilities=_capabilities,
    injects=True,
    # the inverter's own smart meter sees the household load of its site besides the inverter
    inputs=(Input("pv_w_per_kwp", "site.pv_w_per_kwp"), Input("site_load_w", "site.load_p_w"),
            Input("v_pu", "point.v_pu", required=False, default=1.0)),  # for volt-var / volt-watt
    safe_setpoint={"batt_p_w": 0.0},
    drivers={"sunspec+tcp": "devices.fronius.driver:SunSpecDriver",
             "fronius+http": "devices.fronius.solar_api_driver:SolarApiDriver"},
    virtual={"sunspec+tcp": "devices.fronius.virtual:FroniusSunSpecDevice",
             "fronius+http": "devices.fronius.solar_api:FroniusSolarApiDevice"},
    battery_setpoint="batt_p_w",
    description="Fronius hybrid inverter with battery (SunSpec Modbus TCP: storage 124, controls 123/126/132; "
                "Solar API v1)",
)
