"""Grid-support functions of a PV (or hybrid) inverter, as SunSpec models 123, 126 and 132 expose them (no I/O).

What an inverter does with its active and reactive power besides converting PV, vectorised over N inverters:

* **Active-power limit** (model 123 ``WMaxLimPct`` + ``WMaxLim_Ena``): output at most ``WMaxLimPct`` % of ``WMax``
  (the AC rating). A new limit is approached linearly over ``WMaxLimPct_RmpTms`` seconds (0 = at once).
* **Connect / disconnect** (123 ``Conn``): disconnected, the inverter neither produces nor absorbs anything.
* **Fixed power factor** (123 ``OutPFSet`` + ``OutPFSet_Ena``): ``|Q| = |P| tan(acos |PF|)``; a negative PF is
  under-excited (absorbing reactive power, which lowers the voltage), the sign SunSpec's power factors carry.
* **Volt-var** (model 126) and **volt-watt** (model 132): piecewise-linear curves of the terminal voltage (pu of
  ``VRef``); volt-var gives Q in % of ``VArMax`` (= the apparent-power rating here), volt-watt caps the active
  output in % of ``WMax``. Each answers as a first-order lag whose 95 % time is the curve's response time
  (``RmpTms`` / ``RmpPt1Tms``), the "open-loop response time" of IEEE 1547-2018.
* **Sampled loop.** A real inverter measures its voltage continuously and settles within seconds; here it sees
  the voltage of the previous co-simulation step (one minute, say). With a response time shorter than the step the
  sampled loop "inverter -> grid -> inverter" has a gain far above one on a weak feeder (every inverter of a phase
  reacts to the same voltage) and would flip between full and reduced output every step. So a curve's response
  moves at most ``step_gain_max`` (default 0.3) of the remaining way per step: the iteration converges to the same
  equilibrium the continuous loop settles at (curve output = curve(voltage it causes)) as long as the collective
  loop gain stays below 2 / 0.3 - 1 = 5.7; the price is a settling over a few steps instead of seconds.
* **Revert timers** (``*_RvrtTms``, 126/132 ``RvrtTms``): each write (re)arms the timer of what it touched; when
  it runs out that function returns to its start-up setting (the device's ``controls`` config). 0 = never.

Reactive power has priority over active power (IEEE 1547-2018 asks for the reactive capability at full output):
the active cap includes ``sqrt(S^2 - Q^2)``. A fixed power factor wins over volt-var; writing one through the
family setpoints switches the other off (as the SunSpec driver does), so only one reactive mode is ever active.

Units here are the framework's (W, var, pu; curve Q with the load arrow: + = absorbing), SunSpec's signs and
percentages are :mod:`devices.fronius.sunspec_map`'s business. The family setpoints (shared by ``pv`` and
``fronius``) and their limits are :data:`SETPOINTS` / :func:`setpoint_limits`; NaN in a setpoint array means
"no new command".
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from typing import cast

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from devices.arrays import clip
from devices.base import Limit, SetpointRejected

NPT = 4  # curve points a device supports (SunSpec NPt); IEEE 1547 volt-var uses 4, volt-watt 2
RVRT_S_MAX = 65534  # 0xFFFF is "not implemented" in a uint16
V_PU_RANGE = (0.5, 1.5)
PF_MIN = 0.8  # |PF| a device accepts (SunSpec PFRtgQ1..4 of the nameplate)
TAN_PHI_MAX = math.tan(math.acos(PF_MIN))  # 0.75
_TAU_PER_T95 = 1.0 / math.log(20.0)  # a first-order lag reaches 95 % after ln(20) ~ 3 time constants


class VoltVarCurve(BaseModel):
    """Volt-var (SunSpec 126), defaults of IEEE 1547-2018 category B (Table 8): 0.92 / 0.98 / 1.02 / 1.08 VN,
    44 % of the rating injected at V1, absorbed at V4. ``q_pct`` with the load arrow: + = absorbing."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    v_pu: tuple[float, ...] = (0.92, 0.98, 1.02, 1.08)
    q_pct: tuple[float, ...] = (-44.0, 0.0, 0.0, 44.0)
    response_s: int = Field(5, ge=0, le=RVRT_S_MAX, description="open-loop response time (95 %), s")

    @model_validator(mode="after")
    def _curve(self) -> VoltVarCurve:
        check_curve(self.v_pu, self.q_pct, -100.0, 100.0, "q_pct")
        return self


class VoltWattCurve(BaseModel):
    """Volt-watt (SunSpec 132), IEEE 1547-2018 category B (Table 10): full output up to 1.06 VN, down to P2 at
    1.10 VN. The standard's P2 is the lesser of 0.2 Prated and the DER's minimum output; 20 % is used here."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    v_pu: tuple[float, ...] = (1.06, 1.10)
    p_pct: tuple[float, ...] = (100.0, 20.0)
    response_s: int = Field(10, ge=0, le=RVRT_S_MAX, description="open-loop response time (95 %), s")

    @model_validator(mode="after")
    def _curve(self) -> VoltWattCurve:
        check_curve(self.v_pu, self.p_pct, 0.0, 100.0, "p_pct")
        if any(b > a for a, b in zip(self.p_pct, self.p_pct[1:])):
            raise ValueError("a volt-watt curve may not rise with the voltage (p_pct non-increasing)")
        return self


def check_curve(v: tuple[float, ...], y: tuple[float, ...], y_min: float, y_max: float, y_name: str) -> None:
    """ValueError unless 2..NPT points, voltages strictly rising within V_PU_RANGE, values within range."""
    if not 2 <= len(v) <= NPT or len(v) != len(y):
        raise ValueError(f"a curve has 2..{NPT} points with one v_pu and one {y_name} each")
    if any(not math.isfinite(x) or not V_PU_RANGE[0] <= x <= V_PU_RANGE[1] for x in v):
        raise ValueError(f"curve voltages must lie in {V_PU_RANGE[0]}..{V_PU_RANGE[1]} pu, got {list(v)}")
    if any(b <= a for a, b in itertools.pairwise(v)):
        raise ValueError(f"curve voltages must rise strictly, got {list(v)}")
    if any(not math.isfinite(x) or not y_min <= x <= y_max for x in y):
        raise ValueError(f"{y_name} must lie in {y_min:g}..{y_max:g}, got {list(y)}")


class InverterControls(BaseModel):
    """Start-up settings of the grid-support functions (what a revert timer returns to)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_limit_pct: float = Field(100.0, ge=0, le=100, description="WMaxLimPct, % of the AC rating")
    p_limit_enabled: bool = Field(False, description="WMaxLim_Ena")
    p_limit_ramp_s: int = Field(0, ge=0, le=RVRT_S_MAX, description="WMaxLimPct_RmpTms: time to reach a new limit")
    pf: float = Field(1.0, description="OutPFSet, signed: < 0 under-excited (absorbing)")
    pf_enabled: bool = Field(False, description="OutPFSet_Ena")
    revert_s: int = Field(0, ge=0, le=RVRT_S_MAX, description="every *_RvrtTms at start-up (0 = never)")
    step_gain_max: float = Field(0.3, gt=0, le=1, description="largest share of the remaining change a curve "
                                 "response makes in one co-simulation step (stability of the sampled loop)")
    volt_var: VoltVarCurve = VoltVarCurve()
    volt_watt: VoltWattCurve = VoltWattCurve()

    @model_validator(mode="after")
    def _pf(self) -> InverterControls:
        if not PF_MIN <= abs(self.pf) <= 1.0:
            raise ValueError(f"pf must satisfy {PF_MIN} <= |pf| <= 1")
        return self


# -- family setpoints (shared by the pv and fronius families) ------------------------------------------------

VV_V = tuple(f"vv_v{k}_pu" for k in range(1, NPT + 1))
VV_Q = tuple(f"vv_q{k}_pct" for k in range(1, NPT + 1))
VW_V = ("vw_v1_pu", "vw_v2_pu")
VW_P = ("vw_p1_pct", "vw_p2_pct")
#: p_limit_w: output cap (W, 0..rating); conn: 1 connect / 0 disconnect; tan_phi: fixed power factor as
#: q_var = tan_phi * |p_w| (load arrow: + = absorbing); vv_/vw_ena: curve on/off; then the curve points
SETPOINTS = ("p_limit_w", "conn", "tan_phi", "vv_ena", "vw_ena", *VV_V, *VV_Q, *VW_V, *VW_P)


def setpoint_limits(ac_max_w: float) -> dict[str, Limit]:
    lim = {"p_limit_w": Limit(0.0, ac_max_w), "conn": Limit(0, 1, integer=True),
           "tan_phi": Limit(-TAN_PHI_MAX, TAN_PHI_MAX), "vv_ena": Limit(0, 1, integer=True),
           "vw_ena": Limit(0, 1, integer=True)}
    lim |= {n: Limit(*V_PU_RANGE) for n in (*VV_V, *VW_V)}
    lim |= {n: Limit(-100.0, 100.0) for n in VV_Q}
    lim |= {n: Limit(0.0, 100.0) for n in VW_P}
    return lim


_CURVE_SETPOINTS = frozenset((*VV_V, *VV_Q, *VW_V, *VW_P))


def setpoint_rules(values: Mapping[str, float]) -> None:
    """A curve is written as a whole (all its point setpoints at once) and must be a valid curve."""
    if _CURVE_SETPOINTS.isdisjoint(values):  # the usual write: no curve point in it
        return
    for names, v_names, y_names, kind in (((*VV_V, *VV_Q), VV_V, VV_Q, "volt-var"),
                                          ((*VW_V, *VW_P), VW_V, VW_P, "volt-watt")):
        given = [n for n in names if n in values]
        if not given:
            continue
        if len(given) != len(names):
            missing = sorted(set(names) - set(given))
            raise SetpointRejected(f"a {kind} curve is written whole: missing {missing}")
        try:
            if kind == "volt-var":
                VoltVarCurve(v_pu=tuple(values[n] for n in v_names), q_pct=tuple(values[n] for n in y_names))
            else:
                VoltWattCurve(v_pu=tuple(values[n] for n in v_names), p_pct=tuple(values[n] for n in y_names))
        except ValidationError as exc:
            raise SetpointRejected(f"{kind} curve refused: {exc.errors()[0]['msg']}") from None


def pf_from_tan_phi(tan_phi: float) -> float:
    """Load-arrow tan(phi) (+ = absorbing) -> signed power factor (- = under-excited)."""
    pf = 1.0 / math.sqrt(1.0 + tan_phi * tan_phi)
    return -pf if tan_phi > 0 else pf


def tan_phi_from_pf(pf: float) -> float:
    a = min(abs(pf), 1.0)
    t = math.sqrt(max(1.0 - a * a, 0.0)) / a
    return t if pf < 0 else -t


# -- the physics ----------------------------------------------------------------------------------------------

def _pad(points: tuple[float, ...], n: int = NPT) -> list[float]:
    return list(points) + [points[-1]] * (n - len(points))


def piecewise(v: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Row-wise piecewise-linear curves, flat beyond the ends; padded points repeat the last one."""
    out = ys[:, 0].copy()
    for j in range(xs.shape[1] - 1):
        w = xs[:, j + 1] - xs[:, j]
        ok = w > 0
        frac = np.where(ok, clip((v - xs[:, j]) / np.where(ok, w, 1.0), 0.0, 1.0), 0.0)
        out += frac * (ys[:, j + 1] - ys[:, j])
    return out


class InverterFunctions:
    """State and response of the grid-support functions of N inverters (arrays, index = device)."""

    def __init__(self, controls: list[InverterControls], ac_max_w: np.ndarray, s_max_va: np.ndarray) -> None:
        self.start = controls
        self.n = n = len(controls)
        self.w_max = np.asarray(ac_max_w, dtype=float)
        self.s_max = np.asarray(s_max_va, dtype=float)
        self.gain_max = np.array([c.step_gain_max for c in controls], dtype=float)
        self.conn = np.ones(n, dtype=int)
        self.lim_pct = np.zeros(n)
        self.lim_ena = np.zeros(n, dtype=int)
        self.lim_ramp_s = np.zeros(n)
        self.lim_from_pct = np.full(n, 100.0)  # where the current ramp started
        self.lim_t0 = np.zeros(n)
        self.pf = np.ones(n)
        self.pf_ena = np.zeros(n, dtype=int)
        self.vv_ena = np.zeros(n, dtype=int)
        self.vv_npt = np.zeros(n, dtype=int)
        self.vv_v = np.zeros((n, NPT))
        self.vv_q = np.zeros((n, NPT))
        self.vv_rsp_s = np.zeros(n)
        self.vw_ena = np.zeros(n, dtype=int)
        self.vw_npt = np.zeros(n, dtype=int)
        self.vw_v = np.zeros((n, NPT))
        self.vw_p = np.zeros((n, NPT))
        self.vw_rsp_s = np.zeros(n)
        # revert timers per function: seconds and deadline
        self.rvrt_s = {f: np.array([c.revert_s for c in controls], dtype=int) for f in FUNCTIONS}
        # one block (a row per function) so that a step sees at once whether any timer ran out
        self._deadlines = np.full((len(FUNCTIONS), n), np.inf)
        self.deadline = {f: self._deadlines[k] for k, f in enumerate(FUNCTIONS)}
        self._lag_memo: dict[str, tuple[tuple[float, bytes, bytes], np.ndarray]] = {}
        self._q_per_p: tuple[bytes, np.ndarray] = (b"", np.zeros(n))
        for i in range(n):
            self._reset(i, "conn")
            self._reset(i, "lim")
            self._reset(i, "pf")
            self._reset(i, "vv")
            self._reset(i, "vw")
        # responses (outputs of the lags), generator convention inside: + = injecting / producing
        self.q_vv_var = np.zeros(n)  # load arrow
        self.vw_cap_w = self.w_max.copy()
        self.lim_now_pct = np.full(n, 100.0)

    # -- settings ------------------------------------------------------------------------------------------
    def _reset(self, i: int, func: str) -> None:
        """Start-up setting of one function of device ``i``."""
        c = self.start[i]
        if func == "conn":
            self.conn[i] = 1
        elif func == "lim":
            self.lim_pct[i], self.lim_ena[i], self.lim_ramp_s[i] = (c.p_limit_pct, int(c.p_limit_enabled),
                                                                    c.p_limit_ramp_s)
        elif func == "pf":
            self.pf[i], self.pf_ena[i] = c.pf, int(c.pf_enabled)
        elif func == "vv":
            vv = c.volt_var
            self.vv_ena[i], self.vv_npt[i], self.vv_rsp_s[i] = int(vv.enabled), len(vv.v_pu), vv.response_s
            self.vv_v[i], self.vv_q[i] = _pad(vv.v_pu), _pad(vv.q_pct)
        elif func == "vw":
            vw = c.volt_watt
            self.vw_ena[i], self.vw_npt[i], self.vw_rsp_s[i] = int(vw.enabled), len(vw.v_pu), vw.response_s
            self.vw_v[i], self.vw_p[i] = _pad(vw.v_pu), _pad(vw.p_pct)

    def arm(self, i: int, func: str, t_s: float) -> None:
        s = self.rvrt_s[func][i]
        self.deadline[func][i] = t_s + s if s > 0 else np.inf

    def set_limit(self, i: int, t_s: float, pct: float | None = None, ena: int | None = None,
                  ramp_s: float | None = None) -> None:
        """A write to the active-power limit: the ramp starts from the limit in force now."""
        now = self._limit_at(t_s)[i]
        if pct is not None:
            self.lim_pct[i] = pct
        if ena is not None:
            self.lim_ena[i] = ena
        if ramp_s is not None:
            self.lim_ramp_s[i] = ramp_s
        self.lim_from_pct[i], self.lim_t0[i] = now, t_s

    def set_curve(self, i: int, func: str, v_pu: list[float], y: list[float]) -> None:
        if func == "vv":
            self.vv_npt[i], self.vv_v[i], self.vv_q[i] = len(v_pu), _pad(tuple(v_pu)), _pad(tuple(y))
        else:
            self.vw_npt[i], self.vw_v[i], self.vw_p[i] = len(v_pu), _pad(tuple(v_pu)), _pad(tuple(y))

    def write(self, i: int, t_s: float, func: str, fields: Mapping[str, object]) -> None:
        """A protocol write to one function of device ``i`` (model units; see sunspec_map.control_fields). Checked
        as a whole first: ValueError names what is refused and nothing changes. Any write re-arms the function's
        revert timer."""
        def whole(name: str, lo: float, hi: float) -> float | None:
            if name not in fields:
                return None
            x = float(fields[name])  # type: ignore[arg-type]
            if not (math.isfinite(x) and x.is_integer() and lo <= x <= hi):
                raise ValueError(f"{func}.{name}={x!r} outside {lo:g}..{hi:g} (whole numbers)")
            return x

        rvrt = whole("rvrt_s", 0, RVRT_S_MAX)
        if func == "conn":
            conn = whole("conn", 0, 1)
            if conn is not None:
                self.conn[i] = int(conn)
        elif func == "lim":
            pct = fields.get("pct")
            if pct is not None and not (math.isfinite(float(pct)) and 0.0 <= float(pct) <= 100.0):  # type: ignore
                raise ValueError(f"lim.pct={pct!r} outside 0..100 %")
            ena, ramp = whole("ena", 0, 1), whole("ramp_s", 0, RVRT_S_MAX)
            self.set_limit(i, t_s, pct=None if pct is None else float(pct),  # type: ignore[arg-type]
                           ena=None if ena is None else int(ena), ramp_s=ramp)
        elif func == "pf":
            pf = fields.get("pf")
            if pf is not None and not (math.isfinite(float(pf)) and PF_MIN <= abs(float(pf)) <= 1.0):  # type: ignore
                raise ValueError(f"pf={pf!r}: |pf| must lie in {PF_MIN}..1")
            ena = whole("ena", 0, 1)
            if pf is not None:
                self.pf[i] = float(pf)  # type: ignore[arg-type]
            if ena is not None:
                self.pf_ena[i] = int(ena)
        elif func in ("vv", "vw"):
            if fields.get("dept_ref_ok") is False:
                raise ValueError(f"{func}: only DeptRef {'2 (% VArMax)' if func == 'vv' else '1 (% WMax)'} is served")
            ena, rsp = whole("ena", 0, 1), whole("rsp_s", 0, RVRT_S_MAX)
            npt = whole("npt", 2, NPT)
            xs, ys = (self.vv_v, self.vv_q) if func == "vv" else (self.vw_v, self.vw_p)
            n_now = int((self.vv_npt if func == "vv" else self.vw_npt)[i])
            if npt is not None or "v_pu" in fields or "y" in fields:
                v, y = list(xs[i]), list(ys[i])
                for k, x in dict(fields.get("v_pu", {})).items():  # type: ignore[call-overload]
                    v[k] = x
                for k, x in dict(fields.get("y", {})).items():  # type: ignore[call-overload]
                    y[k] = x
                n = int(npt) if npt is not None else n_now
                try:
                    if func == "vv":
                        VoltVarCurve(v_pu=tuple(v[:n]), q_pct=tuple(y[:n]))
                    else:
                        VoltWattCurve(v_pu=tuple(v[:n]), p_pct=tuple(y[:n]))
                except ValidationError as exc:
                    raise ValueError(f"{func} curve refused: {exc.errors()[0]['msg']}") from None
                self.set_curve(i, func, v[:n], y[:n])
            if ena is not None:
                (self.vv_ena if func == "vv" else self.vw_ena)[i] = int(ena)
            if rsp is not None:
                (self.vv_rsp_s if func == "vv" else self.vw_rsp_s)[i] = rsp
        else:
            raise ValueError(f"unknown function {func!r}")
        if rvrt is not None:
            self.rvrt_s[func][i] = int(rvrt)
        self.arm(i, func, t_s)

    def apply_setpoints(self, sp: Mapping[str, np.ndarray], t_s: float) -> None:
        """Consume family setpoints (NaN = none), exactly as the SunSpec driver writes them."""
        def given(name: str) -> np.ndarray:
            return np.flatnonzero(~np.isnan(sp[name]))

        for i in given("conn"):
            self.conn[i] = int(sp["conn"][i])
            self.arm(i, "conn", t_s)
        for i in given("p_limit_w"):
            self.set_limit(i, t_s, pct=100.0 * sp["p_limit_w"][i] / self.w_max[i], ena=1)
            self.arm(i, "lim", t_s)
        for i in given("tan_phi"):
            self.pf[i], self.pf_ena[i], self.vv_ena[i] = pf_from_tan_phi(float(sp["tan_phi"][i])), 1, 0
            self.arm(i, "pf", t_s)
        for i in given(VV_V[0]):
            self.set_curve(i, "vv", [float(sp[n][i]) for n in VV_V], [float(sp[n][i]) for n in VV_Q])
            self.arm(i, "vv", t_s)
        for i in given(VW_V[0]):
            self.set_curve(i, "vw", [float(sp[n][i]) for n in VW_V], [float(sp[n][i]) for n in VW_P])
            self.arm(i, "vw", t_s)
        for i in given("vv_ena"):
            self.vv_ena[i] = int(sp["vv_ena"][i])
            if self.vv_ena[i]:
                self.pf_ena[i] = 0
            self.arm(i, "vv", t_s)
        for i in given("vw_ena"):
            self.vw_ena[i] = int(sp["vw_ena"][i])
            self.arm(i, "vw", t_s)
        for name in SETPOINTS:
            sp[name][:] = np.nan

    def revert_due(self, t_s: float) -> None:
        if self._deadlines.min() > t_s:  # no timer ran out (the usual step; NaN takes the long way)
            return
        for func, deadline in self.deadline.items():
            for i in np.flatnonzero(deadline <= t_s):
                if func == "lim":
                    now = self._limit_at(t_s)[i]
                    self._reset(int(i), func)
                    self.lim_from_pct[i], self.lim_t0[i] = now, t_s
                else:
                    self._reset(int(i), func)
                deadline[i] = np.inf

    # -- response ------------------------------------------------------------------------------------------
    def _limit_at(self, t_s: float) -> np.ndarray:
        target = np.where(self.lim_ena == 1, self.lim_pct, 100.0)
        ramp = np.maximum(self.lim_ramp_s, 0.0)
        frac = np.where(ramp > 0, clip((t_s - self.lim_t0) / np.where(ramp > 0, ramp, 1.0), 0.0, 1.0), 1.0)
        return cast(np.ndarray, self.lim_from_pct + frac * (target - self.lim_from_pct))

    def step(self, t_s: float, dt_s: float, v_pu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the responses over ``[t_s, t_s + dt_s)`` at terminal voltage ``v_pu``.

        Returns ``(p_cap_w, q_vv_var)``: the cap on the active output (W, >= 0) and the volt-var reactive power
        (load arrow) before the power-factor mode, which depends on the active power actually produced."""
        self.revert_due(t_s)
        v = np.where(np.isfinite(v_pu), v_pu, 1.0)
        self.lim_now_pct = self._limit_at(t_s + 0.5 * dt_s)  # the mean over the step of a linear ramp
        # a curve nobody has enabled is not evaluated: np.where would drop it anyway
        vv_on = self.vv_ena == 1
        if vv_on.any():
            vv_target = np.where(vv_on, piecewise(v, self.vv_v, self.vv_q) / 100.0 * self.s_max, 0.0)
            vv_target = np.where(self.pf_ena == 1, 0.0, vv_target)
        else:
            vv_target = np.zeros(self.n)
        self.q_vv_var = self.q_vv_var + self._lag("vv", self.vv_rsp_s, dt_s) * (vv_target - self.q_vv_var)
        vw_on = self.vw_ena == 1
        if vw_on.any():
            vw_target = np.where(vw_on, piecewise(v, self.vw_v, self.vw_p) / 100.0 * self.w_max, self.w_max)
        else:
            vw_target = self.w_max
        self.vw_cap_w = self.vw_cap_w + self._lag("vw", self.vw_rsp_s, dt_s) * (vw_target - self.vw_cap_w)
        cap = np.minimum(self.w_max, self.lim_now_pct / 100.0 * self.w_max)
        cap = np.minimum(cap, self.vw_cap_w)
        q_vv = clip(self.q_vv_var, -self.s_max, self.s_max)
        cap = np.minimum(cap, np.sqrt(np.maximum(self.s_max**2 - q_vv**2, 0.0)))  # reactive priority
        cap = np.where(self.pf_ena == 1, np.minimum(cap, self.s_max * np.abs(self.pf)), cap)
        cap = np.where(self.conn == 1, np.maximum(cap, 0.0), 0.0)
        return cap, np.where(self.conn == 1, q_vv, 0.0)

    def _lag(self, func: str, t95: np.ndarray, dt_s: float) -> np.ndarray:
        """Weight of the new target after ``dt_s`` for a 95 % time ``t95`` (0: at once), capped by the step gain
        (see "sampled loop" in the module docstring); the same from step to step until a setting changes."""
        key = (dt_s, t95.tobytes(), self.gain_max.tobytes())
        memo = self._lag_memo.get(func)
        if memo is not None and memo[0] == key:
            return memo[1]
        a = np.where(t95 > 0, 1.0 - np.exp(-dt_s / np.maximum(t95 * _TAU_PER_T95, 1e-9)), 1.0)
        weight = cast(np.ndarray, np.minimum(a, self.gain_max))
        weight.flags.writeable = False
        self._lag_memo[func] = (key, weight)
        return weight

    def q_var(self, p_w: np.ndarray, q_vv_var: np.ndarray) -> np.ndarray:
        """Reactive power (load arrow) once the active power ``p_w`` (load arrow) is known."""
        key = self.pf.tobytes()
        if self._q_per_p[0] != key:  # the signed tan(phi) changes only with the pf setting
            a = clip(np.abs(self.pf), PF_MIN, 1.0)
            tan = np.sqrt(np.maximum(1.0 - a * a, 0.0)) / a
            self._q_per_p = (key, np.where(self.pf < 0, 1.0, -1.0) * tan)
        q_pf = self._q_per_p[1] * np.abs(p_w)
        return np.where(self.conn == 1, np.where(self.pf_ena == 1, q_pf, q_vv_var), 0.0)

    def active(self) -> np.ndarray:
        """SunSpec 122 StActCtl bits: FixedW 0, FixedPF 2, Volt-VAr 3, Volt-Watt 10."""
        bits = (self.lim_ena == 1) * 1 + (self.pf_ena == 1) * 4 + ((self.vv_ena == 1) & (self.pf_ena == 0)) * 8
        return cast(np.ndarray, bits + (self.vw_ena == 1) * 1024)


FUNCTIONS = ("conn", "lim", "pf", "vv", "vw")
