"""PV inverter physics with grid-support functions (no I/O).

PV available on the AC side is ``min(pv_kwp * w_per_kwp, pv_mppt_max_w) * eta_inverter``; the inverter delivers
``min(available, cap)`` where the cap comes from :class:`~devices.pv.functions.InverterFunctions` (AC rating,
active-power limit, volt-watt, what reactive power leaves of the apparent-power rating, connect). The difference is
``pv_curtail_w``. Reactive power follows the fixed power factor or the volt-var curve. Voltage functions see the
terminal voltage of the previous step (env ``v_pu``, an injecting family's point input), as a real inverter's
control loop sees its own measurement one cycle late.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.base import Capabilities
from devices.family import DeviceContext, Family, Input, ModelBank
from devices.pv.functions import SETPOINTS, InverterControls, InverterFunctions, setpoint_limits, setpoint_rules


class PvConfig(BaseModel):
    """One PV inverter (defaults: 5 kWp on a 5 kW inverter)."""

    model_config = ConfigDict(extra="forbid")

    pv_kwp: float = Field(5.0, ge=0, description="installed PV peak power")
    pv_mppt_max_w: float | None = Field(None, gt=0, description="DC limit of the MPPT inputs (default: none)")
    pv_strings: int = Field(2, ge=1, le=2, description="MPPT inputs reported in SunSpec model 160")
    ac_max_w: float = Field(5000.0, gt=0, description="AC active-power rating (WRtg, WMax)")
    s_max_va: float | None = Field(None, gt=0, description="apparent-power rating (VARtg; default ac_max_w)")
    eta_inverter: float = Field(0.97, gt=0, le=1, description="PV DC -> AC efficiency")
    controls: InverterControls = InverterControls()
    v_nom_v: float = Field(230.0, gt=0, description="nominal phase voltage (VRef)")
    f_nom_hz: float = Field(50.0, gt=0, description="frequency the virtual device reports")
    pv_string_v: float = Field(600.0, gt=0, description="MPPT voltage of the PV strings")
    model_name: str = Field("Symo 5.0-3-M", max_length=32, description="SunSpec Md")
    serial: str = Field("", max_length=32, description="SunSpec SN (default: derived from the device id)")
    unit_id: int = Field(1, ge=1, le=247, description="Modbus unit id of the inverter")

    @model_validator(mode="after")
    def _rating(self) -> PvConfig:
        if self.s_max_va is not None and self.s_max_va < self.ac_max_w:
            raise ValueError("s_max_va must be at least ac_max_w")
        return self

    @property
    def s_rating_va(self) -> float:
        return self.s_max_va or self.ac_max_w

    def serial_for(self, device_id: str) -> str:
        return self.serial or f"{zlib.crc32(device_id.encode()) % 100_000_000:08d}"


@dataclass(frozen=True)
class ControlState:
    """What the protocol servers report of the grid-support functions of one device (model units)."""

    conn: int
    conn_rvrt_s: int
    lim_pct: float
    lim_ena: int
    lim_ramp_s: int
    lim_rvrt_s: int
    pf: float
    pf_ena: int
    pf_rvrt_s: int
    vv_ena: int
    vv_npt: int
    vv_v_pu: tuple[float, ...]
    vv_q_pct: tuple[float, ...]
    vv_rsp_s: int
    vv_rvrt_s: int
    vw_ena: int
    vw_npt: int
    vw_v_pu: tuple[float, ...]
    vw_p_pct: tuple[float, ...]
    vw_rsp_s: int
    vw_rvrt_s: int
    p_avail_w: float  # AC power the PV could deliver now (SunSpec 122 WAval)
    active_bits: int  # SunSpec 122 StActCtl


def control_state(fn: InverterFunctions, i: int, p_avail_w: float) -> ControlState:
    r: Callable[[str], int] = lambda f: int(fn.rvrt_s[f][i])  # noqa: E731
    return ControlState(
        conn=int(fn.conn[i]), conn_rvrt_s=r("conn"), lim_pct=float(fn.lim_pct[i]), lim_ena=int(fn.lim_ena[i]),
        lim_ramp_s=int(fn.lim_ramp_s[i]), lim_rvrt_s=r("lim"), pf=float(fn.pf[i]), pf_ena=int(fn.pf_ena[i]),
        pf_rvrt_s=r("pf"), vv_ena=int(fn.vv_ena[i]), vv_npt=int(fn.vv_npt[i]),
        vv_v_pu=tuple(float(x) for x in fn.vv_v[i]), vv_q_pct=tuple(float(x) for x in fn.vv_q[i]),
        vv_rsp_s=int(fn.vv_rsp_s[i]), vv_rvrt_s=r("vv"), vw_ena=int(fn.vw_ena[i]), vw_npt=int(fn.vw_npt[i]),
        vw_v_pu=tuple(float(x) for x in fn.vw_v[i]), vw_p_pct=tuple(float(x) for x in fn.vw_p[i]),
        vw_rsp_s=int(fn.vw_rsp_s[i]), vw_rvrt_s=r("vw"), p_avail_w=float(p_avail_w),
        active_bits=int(fn.active()[i]))


MEASUREMENTS = ("p_w", "q_var", "pv_p_w", "pv_curtail_w", "v_v", "f_hz")


class PvBank(ModelBank):
    setpoint_names = SETPOINTS

    def __init__(self, configs: list[PvConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        for name in self.setpoint_names:
            self.setpoints[name][:] = np.nan  # no command yet: the start-up settings hold
        col: Callable[[Callable[[PvConfig], float]], np.ndarray] = (  # noqa: E731
            lambda f: np.array([f(c) for c in configs], dtype=float))
        self.pv_kwp = col(lambda c: c.pv_kwp)
        self.pv_mppt_max_w = col(lambda c: c.pv_mppt_max_w or np.inf)
        self.ac_max_w = col(lambda c: c.ac_max_w)
        self.eta_inverter = col(lambda c: c.eta_inverter)
        self.v_nom_v = col(lambda c: c.v_nom_v)
        self.f_nom_hz = col(lambda c: c.f_nom_hz)
        self.functions = InverterFunctions([c.controls for c in configs], self.ac_max_w,
                                           col(lambda c: c.s_rating_va))
        self.t_s = 0.0
        self.p_w = np.zeros(n)
        self.q_var = np.zeros(n)
        self.pv_avail_w = np.zeros(n)
        self.pv_curtail_w = np.zeros(n)
        self.v_pu = np.ones(n)
        self.e_ac_out_wh = np.zeros(n)
        self.e_pv_wh = np.zeros(n)

    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        fn = self.functions
        fn.apply_setpoints(self.setpoints, t_s)
        self.v_pu = np.broadcast_to(np.asarray(env.get("v_pu", 1.0), dtype=float), (self.n,)).copy()
        cap, q_vv = fn.step(t_s, dt_s, self.v_pu)
        w_per_kwp = np.maximum(np.asarray(env.get("pv_w_per_kwp", 0.0), dtype=float), 0.0)
        self.pv_avail_w = np.minimum(self.pv_kwp * w_per_kwp, self.pv_mppt_max_w) * self.eta_inverter
        used = np.minimum(self.pv_avail_w, cap)
        self.p_w = -used
        self.q_var = fn.q_var(self.p_w, q_vv)
        self.pv_curtail_w = self.pv_avail_w - used
        h = dt_s / 3600.0
        self.e_ac_out_wh += used * h
        self.e_pv_wh += used / self.eta_inverter * h
        self.t_s = float(t_s + dt_s)

    def measure(self) -> dict[str, np.ndarray]:
        v = np.where(np.isfinite(self.v_pu), self.v_pu, 1.0)
        return {"p_w": self.p_w.copy(), "q_var": self.q_var.copy(), "pv_p_w": self.p_w.copy(),
                "pv_curtail_w": self.pv_curtail_w.copy(), "v_v": v * self.v_nom_v, "f_hz": self.f_nom_hz.copy()}

    def controls(self, i: int) -> ControlState:
        return control_state(self.functions, i, float(self.pv_avail_w[i]))


def _capabilities(cfg: PvConfig) -> Capabilities:
    return Capabilities(measurements=MEASUREMENTS, setpoints=setpoint_limits(cfg.ac_max_w), rules=setpoint_rules)


FAMILY = Family(
    name="pv",
    config=PvConfig,
    bank=PvBank,
    measurements=MEASUREMENTS,
    capabilities=_capabilities,
    injects=True,
    inputs=(Input("pv_w_per_kwp", "site.pv_w_per_kwp"), Input("v_pu", "point.v_pu", required=False, default=1.0)),
    drivers={"sunspec+tcp": "devices.fronius.driver:SunSpecDriver"},  # the same driver: no storage asked for
    virtual={"sunspec+tcp": "devices.pv.virtual:PvSunSpecDevice"},
    # harmless on a bench: no output (limit 0 %); the ramp and revert settings still apply
    safe_setpoint={"p_limit_w": 0.0},
    description="PV inverter with active-power limit, power factor, volt-var and volt-watt (SunSpec 123/126/132)",
)
