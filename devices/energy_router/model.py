"""The S4G Energy Router: an AC grid port, a 400 V DC bus with PV, a battery, DC loads and a DC link (no I/O).

Topology (powers in W; every converter has its own efficiency)::

    grid ──relay── AC bus ──(inverter, eta_inverter)── DC bus ──(MPPT, eta_mppt)── PV
                     │ critical AC loads                   ├──(DC/DC, eta_dcdc)── battery
                                                           ├── DC loads, the ER's own consumption (p_aux_w)
                                                           └──(DC/DC, eta_link)── DC link to a neighbour's ER

**DC bus balance** (every sub-step, to rounding): ``pv + inverter + link = battery + dc loads + aux``, each term
the power at the converter's bus-side terminal. One converter forms the bus voltage (the inverter when grid-
connected, the battery otherwise) and balances it; its loading sets the voltage by droop within ±``dc_droop_pu``.
When it saturates, the other flexible converter helps, then PV is curtailed (the last resort against a surplus,
the bus held at the top of the band), then loads are shed against a deficit (AC island loads first, then DC
loads: the bus sits at the undervoltage trip threshold and a trip is recorded); if not even the ER's own
consumption can be met the bus collapses (a trip, state OFF).

**Modes** (setpoint ``mode``, the S4G ``DRCC1.DERStr`` numbering): 0 off, 1 standby, 2 RPPT (PV limited to
``pv_limit_w``), 3 MPPT, 4 PV off, all grid-connected; 5, 6, 7 = 1, 2, 3 islanded by command. Grid-connected,
the battery follows ``control``: 0 self-consumption (the grid port is held at 0 W), 1 battery power
``batt_p_w`` (the inverter balances), 2 grid-port power ``p_w`` (the battery balances); writing ``batt_p_w`` or
``p_w`` selects 1 or 2, writing ``control`` = 0 returns to self-consumption. ``p_limit_w`` bounds the grid port
(congestion), ``q_var`` or ``pf`` (the last one written) sets the reactive power within the inverter's S rating.

**States** (measurement ``state``) and the **black-start sequence**: without the grid (input ``grid_present`` = 0)
or commanded islanded, an energised ER islands at once (the battery forms the DC bus, the inverter the AC island
for the critical AC loads). A de-energised ER with the battery above ``black_start_soc_min`` starts itself:
PRECHARGE (``t_precharge_s``: the battery's DC/DC charges the bus, nothing served) → DC_ON (``t_dc_settle_s``: DC
loads served) → AC_RAMP (``t_ac_ramp_s``: the inverter ramps the AC island) → ISLAND (AC loads served). When the
grid returns: RESYNC (``t_resync_s`` of stable grid while still islanded, then the relay closes) → GRID. With the
grid present a de-energised ER precharges from the grid and goes straight to GRID. Steps longer than a stage
are split into sub-steps at the stage boundaries, so the timing holds at any step size.

Sign convention: the load arrow at every terminal (+ = drawn from the AC grid port / into the battery / from the
neighbour over the link; PV producing is −).
"""

from __future__ import annotations

import math
from typing import Literal, cast
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from devices.base import Capabilities, Limit
from devices.battery.model import BatteryBank, BatteryConfig
from devices.energy_router import s4g_topics
from devices.family import DeviceContext, Family, Input, ModelBank

OFF, PRECHARGE, DC_ON, AC_RAMP, ISLAND, RESYNC, GRID = range(7)
STATE_NAMES = ("off", "precharge", "dc_on", "ac_ramp", "island", "resync", "grid")
MODE_OFF, MODE_STANDBY, MODE_RPPT, MODE_MPPT, MODE_PV_OFF = 0, 1, 2, 3, 4
ISLAND_MODES = (5, 6, 7)  # standby, RPPT, MPPT with the grid relay open
CONTROL_SELF, CONTROL_BATTERY, CONTROL_GRID_PORT = 0, 1, 2
_EPS_W = 1e-9
_MAX_SUBSTEPS = 64


def _default_battery() -> BatteryConfig:
    return BatteryConfig(capacity_wh=5000, p_charge_max_w=2500, p_discharge_max_w=2500, eta_charge=0.97,
                         eta_discharge=0.97, soc_min=0.1, soc_max=0.95, soc_init=0.6)


class EnergyRouterConfig(BaseModel):
    """One Energy Router (defaults: the Bucharest lab prototype's scale; see docs/devices/energy-router.md)."""

    model_config = ConfigDict(extra="forbid")

    phases: Literal[1, 3] = Field(1, description="AC grid port: single- or three-phase inverter")
    v_ac_nom_v: float = Field(230.0, gt=0, description="phase voltage of the AC port")
    f_nom_hz: float = Field(50.0, gt=0)
    inv_p_max_w: float = Field(3000.0, gt=0, description="inverter active-power rating, both directions")
    inv_s_max_va: float = Field(3300.0, gt=0, description="inverter apparent-power rating")
    eta_inverter: float = Field(0.96, gt=0, le=1)
    dc_v_nom_v: float = Field(400.0, gt=0, description="DC bus nominal voltage")
    dc_trip_band_pu: float = Field(0.10, gt=0, lt=1, description="DC bus under/over-voltage trip thresholds")
    dc_droop_pu: float = Field(0.02, ge=0, lt=1, description="bus voltage change of the forming converter at full load")
    pv_kwp: float = Field(2.0, ge=0, description="PV peak power on the DC bus")
    pv_mppt_max_w: float | None = Field(None, gt=0, description="DC limit of the MPPT converter (default: none)")
    eta_mppt: float = Field(0.98, gt=0, le=1)
    pv_v_mpp_v: float = Field(300.0, gt=0, description="PV string voltage at the maximum power point")
    battery: BatteryConfig = Field(default_factory=_default_battery)
    battery_v_nom_v: float = Field(200.0, gt=0, description="battery terminal voltage (for the reported current)")
    eta_dcdc: float = Field(0.98, gt=0, le=1, description="battery DC/DC stage efficiency")
    link_max_w: float = Field(1000.0, ge=0, description="DC link converter rating (0: no link)")
    eta_link: float = Field(0.98, gt=0, le=1)
    dc_load_w: float = Field(100.0, ge=0, description="DC load when no dc_load_w input is connected")
    ac_load_w: float = Field(0.0, ge=0, description="critical AC load when no ac_load_w input is connected")
    p_aux_w: float = Field(10.0, ge=0, description="the ER's own consumption from the DC bus while energised")
    black_start_soc_min: float = Field(0.2, gt=0, lt=1, description="SoC needed to start without the grid")
    t_precharge_s: float = Field(5.0, gt=0, description="black start: DC bus precharge")
    t_dc_settle_s: float = Field(2.0, gt=0, description="black start: DC bus energised, AC not yet")
    t_ac_ramp_s: float = Field(3.0, gt=0, description="black start: the AC island voltage ramps up")
    t_resync_s: float = Field(60.0, gt=0, description="stable grid needed before the relay closes again")
    on_grid_loss: Literal["island", "black_start"] = Field(
        "island", description="grid lost while energised: island at once (seamless transfer), or de-energise "
        "(the anti-islanding relay drops the bus) and black-start from the battery")
    mode_init: int = Field(MODE_MPPT, ge=0, le=7, description="DERStr mode at start-up")
    ied_name: str = Field("ER", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    ld_inst: str = Field("LD0", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
    serial: str = Field("", max_length=32)

    @model_validator(mode="after")
    def _ratings(self) -> EnergyRouterConfig:
        if self.inv_s_max_va < self.inv_p_max_w:
            raise ValueError(f"inv_s_max_va ({self.inv_s_max_va:g}) is below inv_p_max_w ({self.inv_p_max_w:g})")
        if self.black_start_soc_min <= self.battery.soc_min:
            raise ValueError("black_start_soc_min must be above battery.soc_min (hysteresis after a trip)")
        return self

    @property
    def pv_peak_w(self) -> float:
        return self.pv_kwp * 1000.0

    @property
    def ld_name(self) -> str:
        return self.ied_name + self.ld_inst


def _dc_of_ac(ac: np.ndarray, eta: np.ndarray) -> np.ndarray:
    """Bus-side power of a converter whose other terminal carries ``ac`` (load arrow on that side)."""
    return cast(np.ndarray, np.where(ac >= 0, ac * eta, ac / eta))


def _ac_of_dc(dc: np.ndarray, eta: np.ndarray) -> np.ndarray:
    return cast(np.ndarray, np.where(dc >= 0, dc / eta, dc * eta))


class EnergyRouterBank(ModelBank):
    """N Energy Routers stepped as arrays; index i is one router."""

    setpoint_names = ("mode", "control", "batt_p_w", "p_w", "q_var", "pf", "pv_limit_w", "link_p_w", "p_limit_w")

    def __init__(self, configs: list[EnergyRouterConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        for sp in self.setpoint_names:
            self.setpoints[sp][:] = np.nan  # NaN: no new command (each command is consumed by the next step)
        col: Callable[[Callable[[EnergyRouterConfig], float]], np.ndarray] = (  # noqa: E731
            lambda f: np.array([f(c) for c in configs], dtype=float))
        self.battery = BatteryBank([c.battery for c in configs])
        self.inv_p_max_w, self.inv_s_max_va = col(lambda c: c.inv_p_max_w), col(lambda c: c.inv_s_max_va)
        self.eta_inv, self.eta_mppt = col(lambda c: c.eta_inverter), col(lambda c: c.eta_mppt)
        self.eta_dcdc, self.eta_link = col(lambda c: c.eta_dcdc), col(lambda c: c.eta_link)
        self.pv_peak_w = col(lambda c: c.pv_peak_w)
        self.pv_mppt_max_w = col(lambda c: c.pv_mppt_max_w or math.inf)
        self.link_max_w, self.p_aux_w = col(lambda c: c.link_max_w), col(lambda c: c.p_aux_w)
        self.dc_load_default, self.ac_load_default = col(lambda c: c.dc_load_w), col(lambda c: c.ac_load_w)
        self.dc_v_nom, self.trip_band = col(lambda c: c.dc_v_nom_v), col(lambda c: c.dc_trip_band_pu)
        self.droop = col(lambda c: c.dc_droop_pu)
        self.v_ac_nom, self.f_nom = col(lambda c: c.v_ac_nom_v), col(lambda c: c.f_nom_hz)
        self.e_black_start_wh = col(lambda c: c.black_start_soc_min * c.battery.capacity_wh)
        self.seamless = np.array([c.on_grid_loss == "island" for c in configs], dtype=bool)
        self.durations = {PRECHARGE: col(lambda c: c.t_precharge_s), DC_ON: col(lambda c: c.t_dc_settle_s),
                          AC_RAMP: col(lambda c: c.t_ac_ramp_s), RESYNC: col(lambda c: c.t_resync_s)}
        # operating point (what the setpoints commanded)
        self.mode = np.array([c.mode_init for c in configs], dtype=int)
        self.control = np.zeros(n, dtype=int)
        self.batt_sp, self.p_sp, self.q_sp = np.zeros(n), np.zeros(n), np.zeros(n)
        self.pf_sp, self.q_by_pf = np.ones(n), np.zeros(n, dtype=bool)
        self.pv_limit = self.pv_peak_w.copy()
        self.link_sp = np.zeros(n)
        self.p_limit = self.inv_p_max_w.copy()
        # state machine
        self.state = np.full(n, GRID, dtype=int)  # starts energised; without the grid it islands at once
        self.t_state = np.zeros(n)
        self.from_grid = np.zeros(n, dtype=bool)
        self.shedding = np.zeros(n, dtype=bool)
        self.trips = np.zeros(n, dtype=int)
        self.mode_changes = np.zeros(n, dtype=int)
        self.grid_present = np.ones(n)
        self.e_unserved_wh = np.zeros(n)
        self.e_curtail_wh = np.zeros(n)
        self.e_pv_wh = np.zeros(n)
        self.t_s = 0.0
        self.dt_s = 1.0
        self._out: dict[str, np.ndarray] = {}
        self._clear_outputs()

    # -- commands ---------------------------------------------------------------------------------------
    def _consume_commands(self) -> None:
        sp = self.setpoints
        for name, target in (("batt_p_w", self.batt_sp), ("p_w", self.p_sp), ("q_var", self.q_sp),
                             ("pf", self.pf_sp), ("pv_limit_w", self.pv_limit), ("link_p_w", self.link_sp),
                             ("p_limit_w", self.p_limit)):
            idx = np.flatnonzero(~np.isnan(sp[name]))
            target[idx] = sp[name][idx]
            if name == "batt_p_w":
                self.control[idx] = CONTROL_BATTERY
            elif name == "p_w":
                self.control[idx] = CONTROL_GRID_PORT
            elif name == "q_var":
                self.q_by_pf[idx] = False
            elif name == "pf":
                self.q_by_pf[idx] = True
        idx = np.flatnonzero(~np.isnan(sp["control"]))
        self.control[idx] = np.rint(sp["control"][idx]).astype(int)
        idx = np.flatnonzero(~np.isnan(sp["mode"]))
        self.mode[idx] = np.rint(sp["mode"][idx]).astype(int)
        for name in self.setpoint_names:
            sp[name][:] = np.nan

    # -- state machine ----------------------------------------------------------------------------------
    def _enter(self, mask: np.ndarray, state: int) -> None:
        changed = mask & (self.state != state)
        self.mode_changes += changed  # operating-state changes (island, black-start stages, grid...)
        self.state[changed] = state
        self.t_state[changed] = 0.0

    def _transitions(self, grid: np.ndarray) -> None:
        s = self.state
        want_island = ~grid | np.isin(self.mode, ISLAND_MODES)
        off_cmd = self.mode == MODE_OFF
        # timed stages
        for stage, nxt in ((DC_ON, AC_RAMP), (AC_RAMP, ISLAND), (RESYNC, GRID)):
            self._enter((s == stage) & (self.t_state >= self.durations[stage] - 1e-9), nxt)
        done = (s == PRECHARGE) & (self.t_state >= self.durations[PRECHARGE] - 1e-9)
        self._enter(done & ~want_island, GRID)  # the grid is there (or came back during a black start)
        self._enter(done & want_island, DC_ON)
        # the grid back before the island was formed: nothing to resynchronise, the inverter connects
        self._enter(np.isin(s, (DC_ON, AC_RAMP)) & ~want_island, GRID)
        # commands and the grid
        self._enter(off_cmd, OFF)
        can_form = self.battery.e_wh > self.battery.e_min_wh + 1e-9
        losing = (s == GRID) & want_island
        self.trips[losing & ~can_form] += 1
        self._enter(losing & can_form & self.seamless, ISLAND)
        self._enter(losing & ~(can_form & self.seamless), OFF)  # then a black start below, if the SoC allows
        self._enter((s == ISLAND) & ~want_island, RESYNC)
        self._enter((s == RESYNC) & want_island, ISLAND)
        self._enter((s == PRECHARGE) & self.from_grid & want_island, OFF)
        start = (s == OFF) & ~off_cmd
        from_grid = start & ~want_island
        black_start = start & want_island & (self.battery.e_wh >= self.e_black_start_wh - 1e-9)
        self.from_grid[from_grid] = True
        self.from_grid[black_start] = False
        self._enter(from_grid | black_start, PRECHARGE)

    def _time_to_next(self) -> np.ndarray:
        tau = np.full(self.n, np.inf)
        for stage, duration in self.durations.items():
            m = self.state == stage
            tau[m] = np.maximum(duration[m] - self.t_state[m], 0.0)
        return tau

    # -- physics ----------------------------------------------------------------------------------------
    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self._consume_commands()
        n = self.n

        def inp(name: str, default: np.ndarray | float) -> np.ndarray:
            """An input array; missing or NaN entries take the default (the config's value)."""
            fallback = np.broadcast_to(np.asarray(default, dtype=float), n)
            value = env.get(name)
            if value is None:
                return fallback.copy()
            arr = np.broadcast_to(np.asarray(value, dtype=float), n)
            return np.where(np.isnan(arr), fallback, arr)

        w_per_kwp = np.maximum(inp("pv_w_per_kwp", 0.0), 0.0)
        # the world's inputs (dc_load_demand_w, grid_available) or the names a caller uses directly
        dc_load = np.maximum(inp("dc_load_demand_w", inp("dc_load_w", self.dc_load_default)), 0.0)
        ac_load = np.maximum(inp("ac_load_w", self.ac_load_default), 0.0)
        grid = inp("grid_available", inp("grid_present", 1.0)) > 0.5
        self.grid_present = grid.astype(float)
        pv_avail = np.minimum(self.pv_peak_w / 1000.0 * w_per_kwp, self.pv_mppt_max_w) * self.eta_mppt
        self._clear_outputs()
        self._out["v_dc_min_v"][:] = np.inf
        remaining, k = float(dt_s), 0
        while remaining > 1e-9:
            self._transitions(grid)
            sub = remaining if k == _MAX_SUBSTEPS - 1 else float(min(remaining, np.min(self._time_to_next())))
            sub = max(sub, min(remaining, 1e-6))
            self._substep(sub, grid, pv_avail, dc_load, ac_load)
            self.t_state += sub
            remaining -= sub
            k += 1
        self._transitions(grid)  # a stage that ended exactly at the step's end shows in the state measured
        for name in self._MEANS:
            self._out[name] /= dt_s
        h = dt_s / 3600.0
        self.e_unserved_wh += self._out["unserved_w"] * h
        self.e_curtail_wh += self._out["pv_curtail_w"] * h
        self.e_pv_wh += -self._out["pv_p_w"] * h
        self.dt_s = float(dt_s)
        self.t_s = float(t_s + dt_s)

    _MEANS = ("p_w", "q_var", "v_v", "f_hz", "pv_p_w", "pv_curtail_w", "batt_p_w", "dc_load_w", "ac_load_w",
              "link_p_w", "v_dc_v", "unserved_w", "loss_w", "inv_ac_w", "inv_dc_w", "link_dc_w", "batt_cell_w",
              "aux_w")

    def _clear_outputs(self) -> None:
        self._out = {name: np.zeros(self.n) for name in (*self._MEANS, "v_dc_min_v", "v_dc_max_v")}

    def _substep(self, h_s: float, grid: np.ndarray, pv_avail: np.ndarray, dc_load: np.ndarray,
                 ac_load: np.ndarray) -> None:
        s = self.state
        energised = np.isin(s, (DC_ON, AC_RAMP, ISLAND, RESYNC, GRID))
        island_ac = np.isin(s, (ISLAND, RESYNC))
        in_grid = s == GRID
        relay = grid & ~np.isin(self.mode, ISLAND_MODES) & np.isin(s, (GRID, OFF, PRECHARGE))
        pv_mode = np.where(self.mode >= 5, self.mode - 4, self.mode)  # 5, 6, 7 run the PV as 1, 2, 3
        pv_cap = np.where(pv_mode == MODE_MPPT, pv_avail,
                          np.where(pv_mode == MODE_RPPT, np.minimum(pv_avail, np.maximum(self.pv_limit, 0.0)), 0.0))
        pv_cap = np.where(energised, pv_cap, 0.0)
        dc_dem = np.where(energised, dc_load, 0.0)
        aux = np.where(energised, self.p_aux_w, 0.0)
        link_term = np.where(energised, np.clip(self.link_sp, -self.link_max_w, self.link_max_w), 0.0)
        link_bus = _dc_of_ac(link_term, self.eta_link)
        charge_cell, discharge_cell = self.battery.available_w(h_s)
        b_hi = np.where(energised, discharge_cell * self.eta_dcdc, 0.0)  # battery as a source into the bus
        b_lo = np.where(energised, -charge_cell / self.eta_dcdc, 0.0)
        ac_served = np.where(island_ac, np.minimum(ac_load, self.inv_p_max_w), np.where(relay, ac_load, 0.0))

        # inverter window (bus side) when grid-connected: rating and the grid-port limit
        lim = np.minimum(np.maximum(self.p_limit, 0.0), self.inv_p_max_w)
        a_lo = np.maximum(-self.inv_p_max_w, -lim - ac_load)
        a_hi = np.minimum(self.inv_p_max_w, lim - ac_load)
        a_lo = np.minimum(a_lo, a_hi)
        i_lo, i_hi = _dc_of_ac(a_lo, self.eta_inv), _dc_of_ac(a_hi, self.eta_inv)
        i_fixed = -ac_served / self.eta_inv  # island: the inverter draws what the AC loads take
        i_lo = np.where(in_grid, i_lo, np.where(island_ac, i_fixed, 0.0))
        i_hi = np.where(in_grid, i_hi, np.where(island_ac, i_fixed, 0.0))

        need = dc_dem + aux - pv_cap - link_bus  # what inverter + battery must put into the bus
        standby = np.isin(pv_mode, (MODE_STANDBY,))
        battery_first = in_grid & ((self.control == CONTROL_BATTERY) | standby)
        inv_target_ac = np.where(self.control == CONTROL_GRID_PORT, self.p_sp - ac_load, -ac_load)
        inv_target = _dc_of_ac(np.clip(inv_target_ac, a_lo, a_hi), self.eta_inv)
        bat_target = np.where(standby, 0.0, -self.batt_sp)
        # primary converter follows its target, the secondary balances, then the primary gives way
        p_lo, p_hi = np.where(battery_first, b_lo, i_lo), np.where(battery_first, b_hi, i_hi)
        q_lo, q_hi = np.where(battery_first, i_lo, b_lo), np.where(battery_first, i_hi, b_hi)
        target = np.where(battery_first, bat_target, np.where(in_grid, inv_target, i_lo))
        prim = np.clip(target, p_lo, p_hi)
        sec = np.clip(need - prim, q_lo, q_hi)
        prim = np.clip(need - sec, p_lo, p_hi)
        s_inv = np.where(battery_first, sec, prim)
        s_bat = np.where(battery_first, prim, sec)
        resid = need - s_inv - s_bat

        # surplus: curtail PV (last resort), then take less over the link
        surplus = np.maximum(-resid, 0.0)
        curtail = np.minimum(surplus, pv_cap)
        pv_dc = pv_cap - curtail
        surplus -= curtail
        link_cut = np.minimum(surplus, np.maximum(link_bus, 0.0))
        link_bus = link_bus - link_cut
        surplus -= link_cut
        overvoltage = surplus > 1e-6
        # deficit: shed the AC island loads, then DC loads, then the bus collapses
        deficit = np.maximum(resid, 0.0)
        ac_cut_dc = np.where(island_ac, np.minimum(deficit, ac_served / self.eta_inv), 0.0)
        ac_served = ac_served - ac_cut_dc * self.eta_inv
        s_inv = s_inv + ac_cut_dc
        deficit -= ac_cut_dc
        dc_cut = np.minimum(deficit, dc_dem)
        dc_served = dc_dem - dc_cut
        deficit -= dc_cut
        aux_served = aux - np.minimum(deficit, aux)
        # not even the ER's own use can be met, or a surplus nobody can take (a link import): the bus trips and
        # nothing flows on it for this sub-step
        collapse = (deficit > 1e-6) | overvoltage
        link_bus = np.where(collapse, 0.0, link_bus)
        pv_dc = np.where(collapse, 0.0, pv_dc)
        s_bat = np.where(collapse, 0.0, s_bat)
        s_inv = np.where(collapse, 0.0, s_inv)
        dc_served = np.where(collapse, 0.0, dc_served)
        aux_served = np.where(collapse, 0.0, aux_served)
        ac_served = np.where(collapse & island_ac, 0.0, ac_served)
        shed = (ac_cut_dc + dc_cut > 1e-6) & ~collapse
        self.trips += (shed & ~self.shedding) | collapse
        self.shedding = shed

        # terminals
        batt_bus = -s_bat
        batt_cell = np.where(batt_bus >= 0, batt_bus * self.eta_dcdc, batt_bus / self.eta_dcdc)
        self.battery.step(h_s, batt_cell)
        link_term = _ac_of_dc(link_bus, self.eta_link)
        inv_ac = _ac_of_dc(s_inv, self.eta_inv)
        p_w = np.where(relay, np.where(in_grid, inv_ac, 0.0) + ac_served, 0.0)
        q_want = np.where(self.q_by_pf, np.sign(self.pf_sp) * np.abs(inv_ac) *
                          np.tan(np.arccos(np.clip(np.abs(self.pf_sp), 1e-3, 1.0))), self.q_sp)
        q_room = np.sqrt(np.maximum(self.inv_s_max_va ** 2 - inv_ac ** 2, 0.0))
        q_var = np.where(in_grid, np.clip(q_want, -q_room, q_room), 0.0)
        ac_unserved = ac_load - ac_served
        dc_unserved = dc_load - dc_served

        # DC bus voltage: droop of the forming converter, the trip thresholds when it cannot hold
        former = np.where(in_grid, s_inv / self.inv_p_max_w,
                          s_bat / np.maximum(self.battery.p_discharge_max_w, 1.0))
        v_dc = self.dc_v_nom * (1.0 - self.droop * np.clip(former, -1.0, 1.0))
        v_dc = np.where(curtail > 1e-6, self.dc_v_nom * (1.0 + self.droop), v_dc)
        v_dc = np.where(shed, self.dc_v_nom * (1.0 - self.trip_band), v_dc)
        ramp = np.clip((self.t_state + h_s / 2) / self.durations[PRECHARGE], 0.0, 1.0)
        v_dc = np.where(energised, v_dc, np.where(s == PRECHARGE, self.dc_v_nom * ramp, 0.0))
        v_dc = np.where(collapse, 0.0, v_dc)
        ac_ramp = np.clip((self.t_state + h_s / 2) / self.durations[AC_RAMP], 0.0, 1.0)
        v_ac = np.where(relay | island_ac, self.v_ac_nom, np.where(s == AC_RAMP, self.v_ac_nom * ac_ramp, 0.0))
        loss = (inv_ac - s_inv) + (link_term - link_bus) + (batt_bus - batt_cell) + pv_dc * (1 / self.eta_mppt - 1)

        o = self._out
        for name, value in (("p_w", p_w), ("q_var", q_var), ("v_v", v_ac),
                            ("f_hz", np.where(v_ac > 0, self.f_nom, 0.0)),
                            ("pv_p_w", -pv_dc), ("pv_curtail_w", pv_avail - pv_dc), ("batt_p_w", batt_bus),
                            ("dc_load_w", dc_served), ("ac_load_w", ac_served), ("link_p_w", link_term),
                            ("v_dc_v", v_dc), ("unserved_w", ac_unserved + dc_unserved), ("loss_w", loss),
                            ("inv_ac_w", inv_ac), ("inv_dc_w", s_inv), ("link_dc_w", link_bus),
                            ("batt_cell_w", batt_cell), ("aux_w", aux_served)):
            o[name] += value * h_s
        o["v_dc_min_v"] = np.minimum(o["v_dc_min_v"], v_dc)
        o["v_dc_max_v"] = np.maximum(o["v_dc_max_v"], v_dc)
        self._enter(collapse, OFF)

    # -- measurement ------------------------------------------------------------------------------------
    def dc_imbalance_w(self) -> np.ndarray:
        """pv + inverter + link - battery - DC loads - aux on the bus, mean over the last step (0 to rounding)."""
        o = self._out
        return cast(np.ndarray,
                    -o["pv_p_w"] + o["inv_dc_w"] + o["link_dc_w"] - o["batt_p_w"] - o["dc_load_w"] - o["aux_w"])

    def measure(self) -> dict[str, np.ndarray]:
        o = self._out
        s_va = np.hypot(o["p_w"], o["q_var"])
        return {
            "p_w": o["p_w"].copy(), "q_var": o["q_var"].copy(), "v_v": o["v_v"].copy(), "f_hz": o["f_hz"].copy(),
            "pf": np.where(s_va > 1e-6, np.abs(o["p_w"]) / np.maximum(s_va, 1e-6), 1.0),
            "pv_p_w": o["pv_p_w"].copy(), "pv_curtail_w": o["pv_curtail_w"].copy(),
            "batt_p_w": o["batt_p_w"].copy(), "soc": self.battery.soc.copy(), "e_wh": self.battery.e_wh.copy(),
            "dc_load_w": o["dc_load_w"].copy(), "ac_load_w": o["ac_load_w"].copy(), "link_p_w": o["link_p_w"].copy(),
            "v_dc_v": o["v_dc_v"].copy(), "v_dc_min_v": np.where(np.isfinite(o["v_dc_min_v"]), o["v_dc_min_v"], 0.0),
            "v_dc_max_v": o["v_dc_max_v"].copy(), "state": self.state.astype(float), "mode": self.mode.astype(float),
            "control": self.control.astype(float), "trips": self.trips.astype(float),
            "grid_present": self.grid_present.copy(), "unserved_w": o["unserved_w"].copy(),
            "e_unserved_wh": self.e_unserved_wh.copy(), "loss_w": o["loss_w"].copy(),
            "mode_changes": self.mode_changes.astype(float),
            # what a storage controller (PROFESS) may ask of the battery over the next step (as its batt_p_w)
            **dict(zip(("p_charge_avail_w", "p_discharge_avail_w"), self.battery.available_w(self.dt_s), strict=True)),
        }

    def held_setpoints(self, i: int) -> dict[str, float]:
        """What router ``i`` currently follows (the commanded values a protocol server reports back)."""
        return {"mode": float(self.mode[i]), "control": float(self.control[i]), "batt_p_w": float(self.batt_sp[i]),
                "p_w": float(self.p_sp[i]), "q_var": float(self.q_sp[i]), "pf": float(self.pf_sp[i]),
                "pv_limit_w": float(self.pv_limit[i]), "link_p_w": float(self.link_sp[i]),
                "p_limit_w": float(self.p_limit[i])}


MEASUREMENTS = ("p_w", "q_var", "v_v", "f_hz", "pf", "pv_p_w", "pv_curtail_w", "batt_p_w", "soc", "e_wh",
                "dc_load_w", "ac_load_w", "link_p_w", "v_dc_v", "v_dc_min_v", "v_dc_max_v", "state", "mode",
                "control", "trips", "grid_present", "unserved_w", "e_unserved_wh", "loss_w", "mode_changes",
                "p_charge_avail_w", "p_discharge_avail_w")


def capabilities(cfg: EnergyRouterConfig) -> Capabilities:
    b = cfg.battery
    return Capabilities(measurements=MEASUREMENTS, setpoints={
        "mode": Limit(0, 7),
        "control": Limit(0, 2),
        "batt_p_w": Limit(-b.p_discharge_max_w, b.p_charge_max_w),
        "p_w": Limit(-cfg.inv_p_max_w, cfg.inv_p_max_w),
        "q_var": Limit(-cfg.inv_s_max_va, cfg.inv_s_max_va),
        "pf": Limit(-1.0, 1.0),
        "pv_limit_w": Limit(0.0, max(cfg.pv_peak_w, 1.0)),
        "link_p_w": Limit(-cfg.link_max_w, cfg.link_max_w),
        "p_limit_w": Limit(0.0, cfg.inv_p_max_w),
    })


#: integer-valued setpoints (a protocol server refuses a fraction; sim:// rounds)
INTEGER_SETPOINTS = ("mode", "control")


#: what the world feeds: the site's PV and DC-load profiles and grid presence (the scenario's events). The
#: critical AC loads take the config's ``ac_load_w`` (``ac_load_w`` must not come from ``site.load_p_w``: the
#: site's load is already drawn at the PCC, and the ER's ``p_w`` includes what it serves, so it would be counted
#: twice). ``s4g device serve`` sets the bank's env keys ``dc_load_w`` / ``ac_load_w`` / ``grid_present`` directly.
INPUTS: tuple[Input, ...] = (
    Input("pv_w_per_kwp", "site.pv_w_per_kwp", required=False, default=0.0),
    # the site's DC-load profile (sites[].dc_load); without one (NaN) the config's dc_load_w. The names differ
    # from the measurements dc_load_w / grid_present (served, seen); step() also reads those as env keys.
    Input("dc_load_demand_w", "site.dc_load_p_w", required=False, default=math.nan),
    # 0 during an outage at the PCC or a trip of the ER (the scenario's events), in the same step
    Input("grid_available", "point.grid_present", required=False, default=1.0),
)

FAMILY = Family(
    name="energy_router",
    config=EnergyRouterConfig,
    bank=EnergyRouterBank,
    measurements=MEASUREMENTS,
    capabilities=capabilities,
    injects=True,  # p_w / q_var are the ER's AC grid port, added at its connection point
    inputs=INPUTS,
    safe_setpoint={"batt_p_w": 0.0, "q_var": 0.0},
    drivers={"iec61850": "devices.energy_router.driver:Iec61850Driver"},
    virtual={"iec61850": "devices.energy_router.virtual:VirtualEnergyRouter"},
    battery_setpoint="batt_p_w",
    topics=s4g_topics.measurement_topics(),  # the S4G SenML topics, on the SMX broker too
    commands=s4g_topics.command_topics(),  # and the S4G command topics from it
    description="S4G Energy Router: AC port, 400 V DC bus with PV, battery, DC loads and a DC link (IEC 61850 MMS)",
)
