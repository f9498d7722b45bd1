"""EV fleet simulator: EV arrivals, departures, energy demand and queueing at charging sites (simpy inside mosaik).

A ``Site`` entity owns ``connectors`` child ``Bay`` entities; each bay is wired to one wallbox:
bay -> wallbox: the env contract of the wallbox family (``ev_plugged``, ``ev_id``, ``ev_soc_arrival``,
``ev_capacity_wh``, ``ev_energy_wanted_wh``, ``ev_p_max_w``, ``ev_phases``, ``ev_departure_t_s``);
wallbox -> bay (time-shifted): ``p_w``, the charging power, integrated into the session's delivered energy.

Site kinds (figures of the original project where it gives them):
* ``residential``: one household EV per connector; it plugs in around 18:45 ± 1.3 h and unplugs around
  07:20 ± 0.8 h the next morning (normal distributions), every day with probability ``plug_probability``.
* ``commercial``: ``evs_per_day`` EVs on working days (Mon-Fri by default), drawn from user groups
  (commuters arriving around 08:30 for a working day, visitors during the day for a couple of hours);
  EVs share the connectors: when all are busy an arriving EV waits (FIFO) until a connector frees or its
  departure time comes (then it leaves unserved). With ``unplug_when_done`` an EV frees its connector as soon
  as it has its energy.

Each EV is drawn from ``ev_types`` (battery, on-board charger, phases, consumption) and a daily distance
(lognormal), giving the energy it wants. Event times are on the step grid (rounded up), so what the fleet
records and what the wallboxes see agree exactly. Randomness: one numpy Generator per (seed, site, day),
so a day's EVs do not depend on how long the run is.

Sessions are written to ``sessions_path`` (``.jsonl``: one line per session as it ends, then one ``site``
line per site at the end; ``.parquet``: written at the end, site summaries in the file metadata).
:func:`session_kpis` computes the KPIs from that file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import mosaik_api_v3
from mosaik_api_v3.types import Meta
import numpy as np
import simpy

from simulators.sessions_file import read_sessions

ENV_OUTPUTS = ("ev_plugged", "ev_id", "ev_soc_arrival", "ev_capacity_wh", "ev_energy_wanted_wh", "ev_p_max_w",
               "ev_phases", "ev_departure_t_s")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Site": {"public": True,
                 "params": ["kind", "connectors", "evs_per_day", "ev_types", "groups", "working_days",
                            "distance_km_mean", "distance_km_sigma", "plug_probability", "unplug_when_done",
                            "plug_in_h", "unplug_h", "soc_arrival_range", "name", "session_model"],
                 "attrs": ["p_w", "n_plugged", "n_waiting", "sessions_completed", "e_delivered_wh"]},
        "Bay": {"public": False, "params": [], "attrs": [*ENV_OUTPUTS, "p_w"]},
    },
}

#: generic EV types (not vendor data): battery, on-board AC charger, phases, consumption, share of the fleet
DEFAULT_EV_TYPES = (
    {"name": "bev_compact", "capacity_wh": 58_000, "p_max_w": 11_000, "phases": 3, "wh_per_km": 160, "share": 0.4},
    {"name": "bev_large", "capacity_wh": 77_000, "p_max_w": 11_000, "phases": 3, "wh_per_km": 190, "share": 0.2},
    {"name": "bev_small", "capacity_wh": 40_000, "p_max_w": 7_400, "phases": 1, "wh_per_km": 150, "share": 0.25},
    {"name": "phev", "capacity_wh": 13_000, "p_max_w": 3_700, "phases": 1, "wh_per_km": 200, "share": 0.15},
)

#: commercial user groups: arrival (h, local time) and dwell (h), normal; share of the day's EVs
DEFAULT_GROUPS = (
    {"name": "commuter", "share": 0.6, "arrival_h": 8.5, "arrival_sd_h": 0.75, "dwell_h": 8.0, "dwell_sd_h": 1.0},
    {"name": "visitor", "share": 0.4, "arrival_h": 12.5, "arrival_sd_h": 2.0, "dwell_h": 2.0, "dwell_sd_h": 0.75},
)


@dataclass
class EV:
    ev_id: float
    site: str
    kind: str
    ev_type: str
    group: str
    capacity_wh: float
    p_max_w: float
    phases: int
    soc_arrival: float
    energy_wanted_wh: float
    t_arrival_s: int
    t_departure_s: int
    home_bay: int | None = None
    # filled while simulated
    bay: int | None = None
    t_plug_s: int | None = None
    t_unplug_s: int | None = None
    t_first_charge_s: int | None = None  # start of the first step with charging power
    e_delivered_wh: float = 0.0
    p_peak_w: float = 0.0
    done: simpy.Event | None = field(default=None, repr=False)

    def record(self, served: bool, open_at_end: bool = False) -> dict[str, Any]:
        until = self.t_plug_s if self.t_plug_s is not None else (self.t_unplug_s or self.t_departure_s)
        wait = until - self.t_arrival_s
        unmet = max(0.0, self.energy_wanted_wh - self.e_delivered_wh)
        first = self.t_first_charge_s
        return {
            "record": "session", "site": self.site, "ev_id": int(self.ev_id), "ev_type": self.ev_type,
            "group": self.group, "bay": self.bay, "t_arrival_s": self.t_arrival_s, "t_plug_s": self.t_plug_s,
            "t_unplug_s": self.t_unplug_s, "t_departure_s": self.t_departure_s, "wait_s": max(int(wait), 0),
            "served": served, "open_at_end": open_at_end, "capacity_wh": self.capacity_wh,
            "soc_arrival": self.soc_arrival, "e_wanted_wh": self.energy_wanted_wh,
            "e_delivered_wh": self.e_delivered_wh, "e_unmet_wh": unmet,
            "completed": served and unmet <= max(1.0, 1e-3 * self.energy_wanted_wh), "p_peak_w": self.p_peak_w,
            "served_95": served and self.e_delivered_wh >= SERVED_SHARE * self.energy_wanted_wh - 1e-6,
            "t_first_charge_s": first,
            # waiting time to the first charge; an EV that never charged waited its whole stay
            "wait_first_charge_s": max(int((first if first is not None else (self.t_unplug_s or self.t_departure_s))
                                           - self.t_arrival_s), 0),
        }


#: a session is "served" when it left with at least this share of the energy it asked for
SERVED_SHARE = 0.95


@dataclass
class SiteSpec:
    name: str
    index: int
    kind: str = "commercial"
    connectors: int = 5
    evs_per_day: float = 22.0
    ev_types: tuple[dict, ...] = DEFAULT_EV_TYPES
    groups: tuple[dict, ...] = DEFAULT_GROUPS
    working_days: tuple[int, ...] = (0, 1, 2, 3, 4)
    distance_km_mean: float = 35.0
    distance_km_sigma: float = 0.6  # of the underlying normal (lognormal)
    plug_probability: float = 0.9
    unplug_when_done: bool = False
    plug_in_h: tuple[float, float] = (18.75, 1.3)
    unplug_h: tuple[float, float] = (7 + 20 / 60, 0.8)
    soc_arrival_range: tuple[float, float] = (0.1, 0.6)
    session_model: str | None = None  # simulators.ev_sessions model name (commercial sites)


class Site:
    """One charging site in the simpy environment."""

    def __init__(self, fleet: EVFleetSim, spec: SiteSpec) -> None:
        self.fleet, self.spec = fleet, spec
        env = fleet.env
        self.pool = simpy.Resource(env, capacity=spec.connectors)
        self.home = [simpy.Resource(env, capacity=1) for _ in range(spec.connectors)]
        self.bays: list[EV | None] = [None] * spec.connectors
        self.shown: list[EV | None] = [None] * spec.connectors  # the EV the wallboxes saw over the last step
        self.waiting = 0
        self.p_w = 0.0
        self.p_peak_w = 0.0
        self.t_peak_s = 0
        self.e_delivered_wh = 0.0
        self.completed = 0
        self.counter = 0
        self.history = False  # True: draw days before the start as they were (fleet_history)
        env.process(self._days())

    # -- demand ----------------------------------------------------------------------------------------------
    def _rng(self, day: int) -> np.random.Generator:
        return np.random.default_rng([self.fleet.seed, self.spec.index, day + 1000])

    def _draw_ev(self, rng: np.random.Generator, arrival: float, departure: float, group: str,
                 home: int | None, energy_wh: float | None = None) -> EV | None:
        fl, sp = self.fleet, self.spec
        types = sp.ev_types
        shares = np.array([t.get("share", 1.0) for t in types], dtype=float)
        t = types[int(rng.choice(len(types), p=shares / shares.sum()))]
        km = float(rng.lognormal(math.log(sp.distance_km_mean) - sp.distance_km_sigma ** 2 / 2, sp.distance_km_sigma))
        soc = float(rng.uniform(*sp.soc_arrival_range))
        want = km * float(t["wh_per_km"]) if energy_wh is None else energy_wh
        wanted = min(want, (0.95 - soc) * float(t["capacity_wh"]))  # never more than the battery can take
        a, d = fl.quantize(arrival), fl.quantize(departure)
        if not self.history:  # a run starts at 0: earlier arrivals are there at 0, earlier departures gone
            a = max(a, 0)
        if d <= a:
            return None
        self.counter += 1
        return EV(ev_id=float((sp.index + 1) * 1_000_000 + self.counter), site=sp.name, kind=sp.kind,
                  ev_type=str(t.get("name", "ev")), group=group, capacity_wh=float(t["capacity_wh"]),
                  p_max_w=float(t["p_max_w"]), phases=int(t.get("phases", 3)), soc_arrival=soc,
                  energy_wanted_wh=max(wanted, 0.0), t_arrival_s=a, t_departure_s=d, home_bay=home)

    def _day_evs(self, day: int) -> list[EV]:
        fl, sp = self.fleet, self.spec
        rng = self._rng(day)
        midnight = fl.local_midnight_s(day)
        weekday = fl.weekday(day)
        evs: list[EV] = []
        if sp.kind == "residential":
            for bay in range(sp.connectors):
                if rng.random() >= sp.plug_probability:
                    continue
                plug = midnight + 3600 * rng.normal(*sp.plug_in_h)
                unplug = fl.local_midnight_s(day + 1) + 3600 * rng.normal(*sp.unplug_h)
                ev = self._draw_ev(rng, plug, max(unplug, plug + 900), "household", bay)
                if ev is not None:
                    evs.append(ev)
        elif sp.kind == "commercial" and sp.session_model is not None:
            from simulators.ev_sessions import draw_day, model

            for d in draw_day(model(sp.session_model), rng, sp.evs_per_day, weekday):
                arrival = midnight + 3600 * d.arrival_h
                ev = self._draw_ev(rng, arrival, arrival + 3600 * d.dwell_h, d.group, None, d.energy_wh)
                if ev is not None:
                    evs.append(ev)
        elif sp.kind == "commercial":
            if weekday not in sp.working_days:
                return []
            n = int(round(sp.evs_per_day))
            shares = np.array([g["share"] for g in sp.groups], dtype=float)
            for _ in range(n):
                g = sp.groups[int(rng.choice(len(sp.groups), p=shares / shares.sum()))]
                arrival = midnight + 3600 * float(np.clip(rng.normal(g["arrival_h"], g["arrival_sd_h"]), 0.0, 23.5))
                dwell = 3600 * max(float(rng.normal(g["dwell_h"], g["dwell_sd_h"])), 0.25)
                ev = self._draw_ev(rng, arrival, arrival + dwell, str(g.get("name", "group")), None)
                if ev is not None:
                    evs.append(ev)
        else:
            raise ValueError(f"site {sp.name!r}: kind must be 'commercial' or 'residential', not {sp.kind!r}")
        return sorted(evs, key=lambda e: (e.t_arrival_s, e.ev_id))

    def _days(self):  # simpy process: schedule each local day's EVs at its midnight
        env = self.fleet.env
        day = -1  # residential EVs plugged in the evening before the start are there at t = 0
        while True:
            for ev in self._day_evs(day):
                if ev.t_departure_s > env.now:
                    env.process(self._ev(ev))
            day += 1
            yield env.timeout(max(self.fleet.local_midnight_s(day) - env.now, 0))

    # -- an EV's visit ---------------------------------------------------------------------------------------
    def _ev(self, ev: EV):
        env = self.fleet.env
        yield env.timeout(max(ev.t_arrival_s - env.now, 0))
        resource = self.home[ev.home_bay] if ev.home_bay is not None else self.pool
        req = resource.request()
        self.waiting += 1
        leave = env.timeout(max(ev.t_departure_s - env.now, 0))
        got = yield req | leave
        self.waiting -= 1
        if req not in got:
            req.cancel()
            ev.t_unplug_s = int(env.now)
            self.fleet.write(ev.record(served=False))
            return
        bay = ev.home_bay if ev.home_bay is not None else self.bays.index(None)
        ev.bay, ev.t_plug_s = bay, int(env.now)
        self.bays[bay] = ev
        ev.done = env.event()
        if self.spec.unplug_when_done:
            yield leave | ev.done
        else:
            yield leave
        ev.t_unplug_s = int(env.now)
        self.bays[bay] = None
        resource.release(req)
        self._finish(ev)

    def _finish(self, ev: EV, open_at_end: bool = False) -> None:
        rec = ev.record(served=True, open_at_end=open_at_end)
        self.completed += int(rec["completed"])
        self.fleet.write(rec)

    # -- coupling with the wallboxes -------------------------------------------------------------------------
    def credit(self, p_w: list[float], dt_s: float) -> None:
        """Energy the wallboxes delivered over the last step goes to the EVs they saw."""
        total = 0.0
        for bay, ev in enumerate(self.shown):
            p = p_w[bay]
            p = p if p is not None and math.isfinite(p) else 0.0
            total += p
            if ev is None:
                continue
            ev.e_delivered_wh += p * dt_s / 3600.0
            ev.p_peak_w = max(ev.p_peak_w, p)
            if p > 0 and ev.t_first_charge_s is None:
                ev.t_first_charge_s = self.fleet.time - int(dt_s)
            if ev.done is not None and not ev.done.triggered and \
                    ev.e_delivered_wh >= ev.energy_wanted_wh - max(1.0, 1e-3 * ev.energy_wanted_wh):
                ev.done.succeed()
        self.e_delivered_wh += total * dt_s / 3600.0
        self.p_w = total
        if total > self.p_peak_w:
            self.p_peak_w, self.t_peak_s = total, self.fleet.time - int(dt_s)

    def outputs(self, bay: int) -> dict[str, float]:
        ev = self.bays[bay]
        if ev is None:
            return dict.fromkeys(ENV_OUTPUTS, 0.0)
        return {"ev_plugged": 1.0, "ev_id": ev.ev_id, "ev_soc_arrival": ev.soc_arrival,
                "ev_capacity_wh": ev.capacity_wh, "ev_energy_wanted_wh": ev.energy_wanted_wh,
                "ev_p_max_w": ev.p_max_w, "ev_phases": float(ev.phases), "ev_departure_t_s": float(ev.t_departure_s)}

    def summary(self) -> dict[str, Any]:
        return {"record": "site", "site": self.spec.name, "kind": self.spec.kind, "connectors": self.spec.connectors,
                "p_peak_w": self.p_peak_w, "t_peak_s": self.t_peak_s, "e_delivered_wh": self.e_delivered_wh}


class EVFleetSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.env = simpy.Environment()
        self.sites: dict[str, Site] = {}
        self.bay_of: dict[str, tuple[Site, int]] = {}
        self.step_size = 60
        self.seed = 0
        self.time = 0
        self.stepped = False
        self.start = datetime.fromisoformat("2024-01-01T00:00:00+00:00")
        self.tz: Any = self.start.tzinfo
        self.sessions_path: Path | None = None
        self._records: list[dict] = []
        self._file: TextIO | None = None

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, start: str | None = None,
             timezone: str | None = None, seed: int = 0, sessions_path: str | None = None,
             closers: list | None = None, **_: Any) -> Meta:
        if closers is not None:  # in-process: the run hands us the wallboxes' last powers before finalize
            closers.append(self.close_out)
        self.step_size = int(step_size)
        self.seed = int(seed)
        if start is not None:
            self.start = datetime.fromisoformat(start)
            if self.start.tzinfo is None:
                raise ValueError(f"start {start!r} needs a timezone offset (e.g. +01:00)")
        self.tz = ZoneInfo(timezone) if timezone else self.start.tzinfo
        if sessions_path:
            self.sessions_path = Path(sessions_path)
            self.sessions_path.parent.mkdir(parents=True, exist_ok=True)
            if self.sessions_path.suffix == ".jsonl":
                self._file = open(self.sessions_path, "w", encoding="utf-8")  # noqa: SIM115 - until finalize()
            elif self.sessions_path.suffix != ".parquet":
                raise ValueError(f"sessions_path {sessions_path!r}: use .jsonl or .parquet")
        return self.meta

    # -- calendar --------------------------------------------------------------------------------------------
    def local_midnight_s(self, day: int) -> int:
        local = self.start.astimezone(self.tz)
        midnight = datetime.combine(local.date() + timedelta(days=day), datetime.min.time(), tzinfo=self.tz)
        return int(round((midnight - self.start).total_seconds()))

    def weekday(self, day: int) -> int:
        return (self.start.astimezone(self.tz).date() + timedelta(days=day)).weekday()

    def quantize(self, t_s: float) -> int:
        """Event times on the step grid (rounded up): the wallboxes see exactly what is recorded."""
        return int(math.ceil(t_s / self.step_size) * self.step_size)

    # -- mosaik ---------------------------------------------------------------------------------------------
    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, kind: str = "commercial",  # type: ignore[override]
               connectors: int = 5, evs_per_day: float = 22.0,
               ev_types: Iterable[dict] | None = None, groups: Iterable[dict] | None = None,
               working_days: Iterable[int] = (0, 1, 2, 3, 4), distance_km_mean: float = 35.0,
               distance_km_sigma: float = 0.6, plug_probability: float = 0.9, unplug_when_done: bool = False,
               plug_in_h: Iterable[float] = (18.75, 1.3), unplug_h: Iterable[float] = (7 + 20 / 60, 0.8),
               soc_arrival_range: Iterable[float] = (0.1, 0.6), name: str | None = None,
               session_model: str | None = None) -> list[dict]:
        if model != "Site":
            raise ValueError("only Site entities can be created (bays are their children)")
        out = []
        for _ in range(num):
            idx = len(self.sites)
            eid = name if (name and num == 1) else f"{name or 'site'}_{idx}"
            spec = SiteSpec(name=eid, index=idx, kind=kind, connectors=int(connectors), evs_per_day=float(evs_per_day),
                            ev_types=tuple(ev_types or DEFAULT_EV_TYPES), groups=tuple(groups or DEFAULT_GROUPS),
                            working_days=tuple(working_days), distance_km_mean=float(distance_km_mean),
                            distance_km_sigma=float(distance_km_sigma), plug_probability=float(plug_probability),
                            unplug_when_done=bool(unplug_when_done),
                            plug_in_h=tuple(plug_in_h),  # type: ignore[arg-type]
                            unplug_h=tuple(unplug_h),  # type: ignore[arg-type]
                            soc_arrival_range=tuple(soc_arrival_range),  # type: ignore[arg-type]
                            session_model=session_model)
            if session_model is not None:
                from simulators import ev_sessions

                ev_sessions.model(session_model)  # an unknown name fails here, not at the first day
            site = Site(self, spec)
            self.sites[eid] = site
            children = []
            for b in range(spec.connectors):
                bid = f"{eid}.bay_{b}"
                self.bay_of[bid] = (site, b)
                children.append({"eid": bid, "type": "Bay"})
            out.append({"eid": eid, "type": "Site", "children": children})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time, self.stepped = time, True
        dt = self.step_size
        if time > self.env.now:
            self.env.run(until=time)  # everything before `time`; the credit below may end sessions at `time`
        if time > 0:
            by_site: dict[str, list[float]] = {n: [0.0] * s.spec.connectors for n, s in self.sites.items()}
            for eid, attrs in inputs.items():
                if eid in self.bay_of and "p_w" in attrs:
                    site, b = self.bay_of[eid]
                    by_site[site.spec.name][b] = float(sum(v for v in attrs["p_w"].values() if v is not None
                                                           and math.isfinite(v)))
            for name, site in self.sites.items():
                site.credit(by_site[name], dt)
        # process every arrival / departure / queue hand-over at or before `time` (times are on the step grid)
        self.env.run(until=time + 1)
        for site in self.sites.values():
            site.shown = list(site.bays)
        return time + dt

    def close_out(self, end_s: int, last: dict[str, tuple[int, float | None]]) -> None:
        """Credit the last step: the wallboxes' power over [last step, its end) reaches the fleet only at the step
        after it (a time-shifted input), which the run never takes. ``last``: bay eid -> (the time of the
        wallbox's last step, the power it drew then); only a power from the fleet's own last step is credited
        (a run stopped between the fleet's step and the wallboxes' has nothing unheard), up to ``end_s`` (the
        run's end). Without this, a session open at the end lacked that step's energy (and a first charge)."""
        dt = min(end_s, self.time + self.step_size) - self.time
        if dt <= 0 or not self.stepped:  # a run stopped before the fleet's first step has nothing to credit
            return
        by_site: dict[str, list[float]] = {n: [0.0] * s.spec.connectors for n, s in self.sites.items()}
        for eid, (t_s, p) in last.items():
            if eid in self.bay_of and t_s == self.time and p is not None and math.isfinite(p):
                site, b = self.bay_of[eid]
                by_site[site.spec.name][b] = float(p)
        stepped = self.time
        self.time += dt  # credit() dates a first charge at (time - dt): the last step
        try:
            for name, site in self.sites.items():
                site.credit(by_site[name], dt)
        finally:
            self.time = stepped

    def get_data(self, outputs: dict) -> dict:
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid in self.bay_of:
                site, b = self.bay_of[eid]
                vals = site.outputs(b)
                data[eid] = {a: vals[a] for a in attrs if a in vals}
            else:
                site = self.sites[eid]
                vals = {"p_w": site.p_w, "n_plugged": float(sum(e is not None for e in site.bays)),
                        "n_waiting": float(site.waiting), "sessions_completed": float(site.completed),
                        "e_delivered_wh": site.e_delivered_wh}
                data[eid] = {a: vals[a] for a in attrs}
        return data

    def finalize(self) -> None:
        for site in self.sites.values():
            for ev in site.bays:
                if ev is not None:
                    ev.t_unplug_s = self.time + self.step_size
                    site._finish(ev, open_at_end=True)
            self.write(site.summary())
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self.sessions_path is not None and self.sessions_path.suffix == ".parquet":
            _write_parquet(self.sessions_path, self._records)

    def write(self, record: dict) -> None:
        self._records.append(record)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()

    def records(self) -> list[dict]:
        return list(self._records)


# -- sessions file and KPIs --------------------------------------------------------------------------------------
def _write_parquet(path: Path, records: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sessions = [r for r in records if r["record"] == "session"]
    sites = [r for r in records if r["record"] == "site"]
    table = pa.Table.from_pylist(sessions) if sessions else pa.table({"record": pa.array([], pa.string())})
    table = table.replace_schema_metadata({b"s4g_sites": json.dumps(sites).encode()})
    pq.write_table(table, path)


def session_kpis(path: str | Path, site: str | None = None) -> dict[str, float]:
    """Charging KPIs from a sessions file (optionally of one site).

    sessions_served (left with >= 95 % of the energy asked for), energy_ratio (delivered / wanted),
    wait_first_charge_mean_s / _max_s (arrival to the first step with charging power; an EV that never
    charged counts its whole stay), energy_delivered_wh, energy_wanted_wh, unmet_energy_wh (wanted minus
    delivered at departure, unserved EVs count with everything they wanted), services_completed (EVs that
    left with what they wanted), arrivals,
    served (EVs that got a connector), peak_charging_w (the site's highest step-mean power), waiting time
    (mean and max over all arrivals, and how many EVs had to wait).
    """
    sessions, sites = read_sessions(path)
    if site is not None:
        sessions = [s for s in sessions if s["site"] == site]
        sites = [s for s in sites if s["site"] == site]
    waits = np.array([s["wait_s"] for s in sessions], dtype=float)
    first = np.array([s.get("wait_first_charge_s", s["wait_s"]) for s in sessions], dtype=float)
    wanted = float(sum(s["e_wanted_wh"] for s in sessions))
    delivered = float(sum(s["e_delivered_wh"] for s in sessions))
    return {
        "arrivals": float(len(sessions)),
        "served": float(sum(bool(s["served"]) for s in sessions)),
        "services_completed": float(sum(bool(s["completed"]) for s in sessions)),
        "energy_delivered_wh": float(sum(s["e_delivered_wh"] for s in sessions)),
        "energy_wanted_wh": float(sum(s["e_wanted_wh"] for s in sessions)),
        "unmet_energy_wh": float(sum(s["e_unmet_wh"] for s in sessions)),
        "peak_charging_w": float(max((s["p_peak_w"] for s in sites), default=0.0)),
        "waiting_mean_s": float(waits.mean()) if waits.size else 0.0,
        "waiting_max_s": float(waits.max()) if waits.size else 0.0,
        "n_waited": float((waits > 0).sum()),
        "sessions_served": float(sum(bool(s.get("served_95", False)) for s in sessions)),
        "energy_ratio": delivered / wanted if wanted > 0 else 1.0,
        "wait_first_charge_mean_s": float(first.mean()) if first.size else 0.0,
        "wait_first_charge_max_s": float(first.max()) if first.size else 0.0,
    }


def fleet_history(*, start: str, timezone: str | None, seed: int, step_s: int, sites: list[dict], index: int,
                  days: int) -> list[EV]:
    """The EVs site ``index`` of a fleet would have seen on the ``days`` days before ``start``.

    Drawn by the same code and generators as the run (one Generator per (seed, site, day)), so a controller
    can estimate its forecasts from history without seeing the run's future. ``sites`` are the ``create``
    keyword arguments of every site of the fleet, in order (the site index enters the random streams).
    Day -1 is left out: its residential EVs are still plugged in at the start.
    """
    sim = EVFleetSim()
    sim.init("history", step_size=step_s, start=start, timezone=timezone, seed=seed)
    for kw in sites:
        sim.create(1, "Site", **kw)
    site = list(sim.sites.values())[index]
    site.history = True
    return [ev for d in range(-days, -1) for ev in site._day_evs(d)]


__all__ = [
    "DEFAULT_EV_TYPES",
    "DEFAULT_GROUPS",
    "ENV_OUTPUTS",
    "EV",
    "SERVED_SHARE",
    "EVFleetSim",
    "fleet_history",
    "read_sessions",
    "session_kpis",
]
