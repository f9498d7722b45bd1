"""Wallbox + EV physics for N charge points as numpy arrays (no I/O, no protocol code).

One wallbox is one charge point with one connector (a multi-connector station is modelled as several
wallboxes). The EV plugged into it is described by the co-simulation's env inputs (see
docs/devices/wallbox.md, "env contract"): a plug-in edge (or a new ``ev_id``) starts a session with the
EV's battery state; an unplug edge ends it.

Charging power is limited by, in this order: the charging limit (setpoints ``p_max_w`` and ``i_max_a``,
which over OCPP are the station's composite schedule), the wallbox hardware (``max_current_a`` per phase),
the IEC 61851 minimum current (below ``min_current_a`` per phase the EVSE pauses: SuspendedEVSE), and the
EV: its on-board charger (``ev_p_max_w`` over ``ev_phases``) and a CC-CV taper above ``cv_soc`` in which
the power falls linearly with the remaining capacity to ``taper_floor`` of the maximum. The EV stops when
it has taken the energy it wants (AC side) or is full. The integration over a step is exact (piecewise
constant power, then exponential taper), so the result does not depend on the step length.

Status codes (the ``status`` measurement; OCPP 1.6 ChargePointStatus order):
0 Available, 1 Preparing, 2 Charging, 3 SuspendedEVSE, 4 SuspendedEV, 5 Finishing, 6 Reserved,
7 Unavailable, 8 Faulted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict, Field

from devices.family import DeviceContext, ModelBank

STATUS_NAMES = ("Available", "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing",
                "Reserved", "Unavailable", "Faulted")
AVAILABLE, PREPARING, CHARGING, SUSPENDED_EVSE, SUSPENDED_EV, FINISHING, RESERVED, UNAVAILABLE, FAULTED = range(9)

#: inputs from the EV fleet simulator (0 or absent = "not given": the wallbox's EV defaults apply)
ENV_INPUTS = ("ev_plugged", "ev_id", "ev_soc_arrival", "ev_capacity_wh", "ev_energy_wanted_wh", "ev_p_max_w",
              "ev_phases", "ev_departure_t_s")

MEASUREMENTS = ("p_w", "q_var", "e_wh", "e_session_wh", "soc", "i_a", "i_l1_a", "i_l2_a", "i_l3_a", "status",
                "connected", "session_active", "p_max_w", "i_max_a")


class WallboxConfig(BaseModel):
    """One AC wallbox (charge point with one connector) and the defaults of the EVs it sees."""

    model_config = ConfigDict(extra="forbid")

    max_current_a: float = Field(32.0, gt=0, description="hardware limit per phase")
    phases: int = Field(3, ge=1, le=3)
    voltage_v: float = Field(230.0, gt=0, description="phase-to-neutral voltage used for A <-> W")
    min_current_a: float = Field(6.0, ge=0, description="IEC 61851 minimum; below it the EVSE pauses")
    auto_start: bool = Field(True, description="start a transaction at plug-in (free vend); "
                                               "False: wait for a remote start")
    report_soc: bool = Field(True, description="the EV reports its SoC (ISO 15118); False: soc is NaN")
    # EV defaults, used when the co-simulation does not give the EV's values
    ev_capacity_wh: float = Field(50_000.0, gt=0)
    ev_p_max_w: float | None = Field(None, gt=0, description="on-board charger; None = the wallbox's maximum")
    ev_phases: int = Field(3, ge=1, le=3)
    ev_soc_arrival: float = Field(0.3, ge=0, le=1)
    cv_soc: float = Field(0.9, gt=0, lt=1, description="SoC above which the EV tapers (CC-CV)")
    taper_floor: float = Field(0.1, gt=0, le=1, description="tapered power never falls below this share")
    ev_efficiency: float = Field(0.92, gt=0, le=1, description="AC energy to battery energy")
    # protocol side (used by the virtual charge point; harmless for sim://)
    meter_interval_s: int = Field(60, ge=0, description="MeterValueSampleInterval / TxUpdatedInterval")
    heartbeat_interval_s: int = Field(300, gt=0)
    vendor: str = "S4G"
    model: str = "VirtualWallbox"
    serial: str | None = None
    firmware: str = "1.0"
    max_stack_level: int = Field(8, ge=1)
    max_profiles: int = Field(16, ge=1)
    max_periods: int = Field(48, ge=1)
    tx_message_attempts: int = Field(5, ge=1, description="a transaction message the CSMS refuses (CALLERROR) is "
                                     "skipped after this many attempts (1.6 TransactionMessageAttempts)")
    tx_message_retry_interval_s: float = Field(1.0, ge=0, description="wait interval x failures before a retry "
                                               "(1.6 TransactionMessageRetryInterval)")

    @property
    def p_hw_max_w(self) -> float:
        return self.max_current_a * self.voltage_v * self.phases


@dataclass(frozen=True)
class EVSpec:
    """An EV as the fleet simulator and the stand-alone server describe it."""

    capacity_wh: float = 50_000.0
    p_max_w: float = 11_000.0
    phases: int = 3
    soc_arrival: float = 0.3
    energy_wanted_wh: float = 0.0  # 0 = until full
    departure_t_s: float = 0.0
    ev_id: float = 1.0

    def env(self, plugged: bool = True) -> dict[str, float]:
        return {"ev_plugged": float(plugged), "ev_id": self.ev_id, "ev_soc_arrival": self.soc_arrival,
                "ev_capacity_wh": self.capacity_wh, "ev_energy_wanted_wh": self.energy_wanted_wh,
                "ev_p_max_w": self.p_max_w, "ev_phases": float(self.phases), "ev_departure_t_s": self.departure_t_s}


def _given(x: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, np.isfinite(x) & (x > 0))


def charge_exact(soc: np.ndarray, e_left_wh: np.ndarray, p_cap_w: np.ndarray, p_ev_w: np.ndarray,
                 cv_soc: np.ndarray, floor: np.ndarray, cap_wh: np.ndarray, eff: np.ndarray,
                 dt_s: float) -> tuple[np.ndarray, np.ndarray]:
    """AC energy (Wh) taken over ``dt_s`` and the SoC at its end, integrating the CC-CV curve exactly.

    Power drawn is ``min(p_cap, p_ev * g(soc))`` with ``g = clip((1-soc)/(1-cv), floor, 1)``, until the
    battery is full or ``e_left_wh`` has been taken. Three segments: constant power until the taper binds
    (at ``s_a``), exponential decay while it binds above the floor (to ``s_b``), constant floor power to full.
    """
    soc = np.asarray(soc, dtype=float).copy()
    e_left = np.maximum(np.asarray(e_left_wh, dtype=float), 0.0)
    tau = np.full(soc.shape, float(dt_s))
    energy = np.zeros(soc.shape)
    active = (p_cap_w > 0) & (p_ev_w > 0) & (soc < 1.0) & (e_left > 0)
    p_cap = np.where(active, p_cap_w, 0.0)
    p_ev = np.where(active, p_ev_w, 1.0)
    k_soc = eff / cap_wh  # battery SoC per AC Wh
    span = 1.0 - cv_soc
    p_a = np.minimum(p_cap, p_ev)
    tapers = p_a > p_ev * floor  # else the cap binds all the way to full
    s_a = np.where(tapers, 1.0 - (p_a / p_ev) * span, 1.0)
    s_b = np.where(tapers, 1.0 - floor * span, 1.0)

    def constant(pw: np.ndarray, soc_end: np.ndarray, mask: np.ndarray) -> None:
        nonlocal soc, e_left, tau, energy
        m = mask & (pw > 0) & (soc < soc_end) & (tau > 0) & (e_left > 0)
        if not m.any():
            return
        pws = np.where(m, pw, 1.0)
        e_to_end = np.maximum(soc_end - soc, 0.0) / k_soc
        e = np.where(m, np.minimum.reduce([pws * tau / 3600.0, e_to_end, e_left]), 0.0)
        tau = np.where(m, tau - e * 3600.0 / pws, tau)
        soc = np.where(m, np.where(e >= e_to_end, soc_end, soc + e * k_soc), soc)
        e_left = e_left - e
        energy = energy + e

    constant(p_a, s_a, active)
    m = active & tapers & (soc >= s_a - 1e-12) & (soc < s_b) & (tau > 0) & (e_left > 0)
    if m.any():
        # dsoc/dt = k (1 - soc): the remaining capacity decays exponentially
        k = np.where(m, eff * p_ev / (span * cap_wh * 3600.0), 1.0)
        r0 = np.maximum(1.0 - soc, 1e-300)
        soc_e = soc + e_left * k_soc
        with np.errstate(divide="ignore", invalid="ignore"):
            t_b = np.log(r0 / (1.0 - s_b)) / k
            t_e = np.where(soc_e < 1.0, np.log(r0 / np.maximum(1.0 - soc_e, 1e-300)) / k, np.inf)
        t = np.maximum(np.minimum.reduce([tau, t_b, t_e]), 0.0)
        new_soc = np.minimum.reduce([1.0 - r0 * np.exp(-k * t), s_b, soc_e])
        e = np.where(m, np.clip((new_soc - soc) / k_soc, 0.0, e_left), 0.0)
        soc = np.where(m, new_soc, soc)
        tau = np.where(m, tau - t, tau)
        e_left = e_left - e
        energy = energy + e
        # float residue: snap to the segment end so the floor segment starts
        soc = np.where(m & (t >= t_b) & (t < t_e), s_b, soc)
    constant(np.minimum(p_cap, p_ev * floor), np.ones_like(soc), active & tapers & (soc >= s_b - 1e-12))
    return energy, soc


def ev_accept_w(soc: ArrayLike, p_ev_w: ArrayLike, cv_soc: ArrayLike = 0.9, floor: ArrayLike = 0.1) -> np.ndarray:
    """The power an EV accepts at ``soc``: its on-board maximum, tapering linearly with the remaining
    capacity above ``cv_soc``, never below ``floor`` of the maximum (the CC-CV curve of :func:`charge_exact`)."""
    soc = np.asarray(soc, dtype=float)
    return np.asarray(p_ev_w, dtype=float) * np.clip((1.0 - soc) / (1.0 - np.asarray(cv_soc, dtype=float)), floor, 1.0)


class WallboxBank(ModelBank):
    """N wallboxes with the EVs plugged into them."""

    setpoint_names = ("p_max_w", "i_max_a")

    def __init__(self, configs: list[WallboxConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        arr: Callable[[str], np.ndarray] = lambda attr: np.array([getattr(c, attr) for c in configs], dtype=float)  # noqa: E731
        self.hw_a = arr("max_current_a")
        self.phases = arr("phases")
        self.voltage = arr("voltage_v")
        self.min_a = arr("min_current_a")
        self.auto_start = np.array([c.auto_start for c in configs], dtype=bool)
        self.report_soc = np.array([c.report_soc for c in configs], dtype=bool)
        self.def_cap = arr("ev_capacity_wh")
        self.def_p_ev = np.array([c.ev_p_max_w or c.p_hw_max_w for c in configs], dtype=float)
        self.def_phases = arr("ev_phases")
        self.def_soc = arr("ev_soc_arrival")
        self.cv = arr("cv_soc")
        self.floor = arr("taper_floor")
        self.eff = arr("ev_efficiency")
        self.p_hw_max_w = self.hw_a * self.voltage * self.phases
        # setpoints default to "no limit" (the hardware maximum): an uncontrolled wallbox charges at full power
        self.setpoints["p_max_w"][:] = self.p_hw_max_w
        self.setpoints["i_max_a"][:] = self.hw_a
        # EV and session state
        self.plugged = np.zeros(n, dtype=bool)
        self.ev_id = np.zeros(n)
        self.soc = np.full(n, np.nan)
        self.cap_wh = self.def_cap.copy()
        self.p_ev_w = self.def_p_ev.copy()
        self.ev_phases = self.def_phases.copy()
        self.e_wanted_wh = np.full(n, np.inf)
        self.t_departure_s = np.full(n, np.nan)
        self.e_session_wh = np.zeros(n)
        self.e_wh = np.zeros(n)
        self.sessions = np.zeros(n, dtype=int)
        self.tx_active = np.zeros(n, dtype=bool)
        self.finished = np.zeros(n, dtype=bool)  # transaction ended while the EV is still plugged
        self.pre_authorized = np.zeros(n, dtype=bool)  # remote start before plug-in
        self.fault = np.zeros(n, dtype=bool)
        self.unavailable = np.zeros(n, dtype=bool)
        # outputs of the last step
        self.p_w = np.zeros(n)
        self.i_a = np.zeros(n)
        self.p_cap_w = self.p_hw_max_w.copy()
        self.i_cap_a = self.hw_a.copy()
        self.status = np.zeros(n, dtype=int)
        self._acc_e = np.zeros(n)
        self._acc_t = 0.0
        self.t_s: float = 0

    # -- session edges ----------------------------------------------------------------------------------
    def apply_env(self, t_s: float, env: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Plug / unplug EVs from the env inputs; returns (sessions started, sessions ended) masks."""
        self.t_s = t_s

        def get(name: str) -> np.ndarray:
            v = env.get(name)
            if v is None:
                return np.zeros(self.n)
            v = np.asarray(v, dtype=float)
            return np.where(np.isfinite(v), v, 0.0)

        plugged = get("ev_plugged") > 0.5
        ev_id = get("ev_id")
        new_ev = plugged & self.plugged & (ev_id != self.ev_id) & (ev_id > 0)
        ended = self.plugged & (~plugged | new_ev)
        started = plugged & (~self.plugged | new_ev)
        if ended.any():
            self.tx_active[ended] = False
            self.finished[ended] = False
            self.soc[ended] = np.nan
            self.e_wanted_wh[ended] = np.inf
            self.t_departure_s[ended] = np.nan
        if started.any():
            cap, p_ev, ph = get("ev_capacity_wh"), get("ev_p_max_w"), get("ev_phases")
            soc0, wanted, dep = get("ev_soc_arrival"), get("ev_energy_wanted_wh"), get("ev_departure_t_s")
            s = started
            self.cap_wh[s] = np.where(_given(cap), cap, self.def_cap)[s]
            self.p_ev_w[s] = np.where(_given(p_ev), p_ev, self.def_p_ev)[s]
            self.ev_phases[s] = np.where(_given(ph), np.clip(np.round(ph), 1, 3), self.def_phases)[s]
            given_soc = ("ev_soc_arrival" in env) & np.isfinite(np.asarray(env.get("ev_soc_arrival", 0.0), float))
            self.soc[s] = np.where(given_soc, np.clip(soc0, 0.0, 1.0), self.def_soc)[s]
            self.e_wanted_wh[s] = np.where(_given(wanted), wanted, np.inf)[s]
            self.t_departure_s[s] = np.where(_given(dep), dep, np.nan)[s]
            self.e_session_wh[s] = 0.0
            self.sessions[s] += 1
            self.finished[s] = False
            start_now = s & (self.auto_start | self.pre_authorized) & ~self.unavailable
            self.tx_active[start_now] = True
            self.pre_authorized[s] = False
        self.plugged = plugged
        self.ev_id = np.where(plugged, ev_id, 0.0)
        self._refresh_status()
        return started, ended

    # -- remote commands (virtual charge point) -------------------------------------------------------------
    def remote_start(self, i: int) -> bool:
        """Authorize a transaction: starts now if an EV is plugged, else at its plug-in."""
        if self.tx_active[i] or self.fault[i] or self.unavailable[i]:
            return False
        if self.plugged[i]:
            self.tx_active[i] = True
            self.finished[i] = False
        else:
            self.pre_authorized[i] = True
        self._refresh_status()
        return True

    def remote_stop(self, i: int) -> bool:
        if not self.tx_active[i]:
            return False
        self.tx_active[i] = False
        self.finished[i] = bool(self.plugged[i])
        self._refresh_status()
        return True

    def set_available(self, i: int, available: bool) -> None:
        """Operative / inoperative (OCPP ChangeAvailability); a running transaction is not interrupted."""
        self.unavailable[i] = not available
        self._refresh_status()

    def set_fault(self, i: int, fault: bool) -> None:
        self.fault[i] = fault
        self._refresh_status()

    # -- physics --------------------------------------------------------------------------------------------
    def caps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(phases in use, current cap per phase in A, power cap in W) from setpoints, hardware and the EV."""
        n_used = np.where(self.plugged, np.minimum(self.phases, self.ev_phases), self.phases)
        # setpoints are checked before they get here (DeviceSim / the charge point); fmax drops a NaN
        p_set = np.fmax(self.setpoints["p_max_w"], 0.0)
        i_set = np.fmax(self.setpoints["i_max_a"], 0.0)
        i_cap = np.minimum(np.minimum(self.hw_a, i_set), p_set / (self.voltage * n_used))
        i_cap[i_cap + 1e-9 < self.min_a] = 0.0
        return n_used, i_cap, i_cap * self.voltage * n_used

    def integrate(self, t_s: float, dt_s: float, accumulate: bool = False) -> None:
        """Charge over [t_s, t_s + dt_s) with the current setpoints; ``accumulate`` sums sub-steps into one mean."""
        n_used, i_cap, p_cap = self.caps()
        charging = self.plugged & self.tx_active & ~self.fault & ~self.unavailable
        e_left = np.where(charging, self.e_wanted_wh - self.e_session_wh, 0.0)
        p_ev = np.minimum(self.p_ev_w, self.p_ev_w / self.ev_phases * n_used)  # EV's on-board limit on n_used
        soc = np.where(charging, np.nan_to_num(self.soc, nan=1.0), 1.0)
        energy, soc_new = charge_exact(soc, e_left, np.where(charging, p_cap, 0.0), p_ev, self.cv, self.floor,
                                       self.cap_wh, self.eff, dt_s)
        self.soc = np.where(charging, soc_new, self.soc)
        self.e_session_wh = self.e_session_wh + energy
        self.e_wh = self.e_wh + energy
        if accumulate and self._acc_t > 0:
            self._acc_e += energy
            self._acc_t += dt_s
        else:
            self._acc_e = energy.copy()
            self._acc_t = float(dt_s)
        self.p_w = self._acc_e * 3600.0 / self._acc_t if self._acc_t > 0 else np.zeros(self.n)
        self.i_a = self.p_w / (self.voltage * n_used)
        self.p_cap_w, self.i_cap_a = p_cap, i_cap
        self._n_used = n_used
        self.t_s = t_s + dt_s
        self._refresh_status(delivered=energy)

    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self.apply_env(t_s, env)
        self.integrate(t_s, dt_s)

    def done(self) -> np.ndarray:
        """The EV does not want more: energy wanted reached or battery full."""
        return cast(np.ndarray, (self.e_session_wh >= self.e_wanted_wh - 1e-6)
                    | (np.nan_to_num(self.soc, nan=0.0) >= 1.0 - 1e-9))

    def _refresh_status(self, delivered: np.ndarray | None = None) -> None:
        _, _, p_cap = self.caps()
        st = np.full(self.n, AVAILABLE)
        st = np.where(self.plugged & ~self.tx_active, np.where(self.finished, FINISHING, PREPARING), st)
        tx = self.plugged & self.tx_active
        st = np.where(tx, CHARGING, st)
        st = np.where(tx & (p_cap <= 0), SUSPENDED_EVSE, st)
        st = np.where(tx & self.done(), SUSPENDED_EV, st)
        st = np.where(self.unavailable & ~self.tx_active, UNAVAILABLE, st)
        st = np.where(self.fault, FAULTED, st)
        self.status = st.astype(int)

    def measure(self) -> dict[str, np.ndarray]:
        n_used = getattr(self, "_n_used", self.phases)
        on: Callable[[int], np.ndarray] = lambda k: np.where(n_used >= k, self.i_a, 0.0)  # noqa: E731  (1-phase EVs charge on L1)
        return {
            "p_w": self.p_w.copy(),
            "q_var": np.zeros(self.n),
            "e_wh": self.e_wh.copy(),
            "e_session_wh": self.e_session_wh.copy(),
            "soc": np.where(self.plugged & self.report_soc, self.soc, np.nan),
            "i_a": self.i_a.copy(),
            "i_l1_a": on(1),
            "i_l2_a": on(2),
            "i_l3_a": on(3),
            "status": self.status.astype(float),
            "connected": self.plugged.astype(float),
            "session_active": self.tx_active.astype(float),
            "p_max_w": self.p_cap_w.copy(),
            "i_max_a": self.i_cap_a.copy(),
        }


def status_name(code: float) -> str:
    if code is None or not math.isfinite(code) or not 0 <= int(code) < len(STATUS_NAMES):
        return "Unknown"
    return STATUS_NAMES[int(code)]
