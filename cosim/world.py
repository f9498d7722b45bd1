"""Turn a scenario into one mosaik World: profiles -> devices -> grid -> controllers -> recorder.

Every simulator is a plain mosaik-api-v3 simulator; this module only starts them and connects entities.
Control loops close with time-shifted connections (controller -> device), so a controller acts on the
measurements of step t with setpoints that apply from step t + 1. The builder also writes ``meta.json``,
which tells the KPIs and the report what the run directory's columns mean.

Devices are wired from their family's declaration alone (devices.family): each declared input from the source
vocabulary (cosim.sources), the device's power into its connection point if the family ``injects``. Families that
inject live in the "Devices" host, stepped before the power flow (their ``point.*`` inputs come from the previous
step, as a real controller has one cycle of latency); families that only observe live in a second host,
"DevicesAfterGrid", stepped after the power flow of the same step, so a meter reads the solution it meters.
Controller kinds build themselves through the builder's :class:`~cosim.build_context.BuildContext`.

The scenario's events (cosim/events.py) enter through cosim/event_sim.py: an outage opens the site's grid Load
entity, a sag scales the Grid's source voltage, a trip gates the device's power on its way to the grid, and
``point.grid_present`` inputs come from the schedule in the same step; a communication loss puts the flows it
touches on the message bus (on ``direct`` when the scenario has no ``messaging``), whose routes drop them.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, cast

import mosaik
import numpy as np

from cosim import controller_kinds, sources
from cosim.build_context import SiteHandle
from cosim.events import Schedule
from cosim.scenario import DeviceSpec, LoadedScenario, Scenario
from devices import registry as device_registry
from devices.base import Address
from devices.family import METERED, Family, Input

SIM_CONFIG: dict[str, dict[str, str]] = {
    "Profiles": {"python": "simulators.profiles:ProfileSim"},
    "Grid": {"python": "simulators.grid:GridSim"},
    "Devices": {"python": "devices.simulator:DeviceSim"},
    "Recorder": {"python": "cosim.recorder:RecorderSim"},
}

PHASE_NAMES = {1: "a", 2: "b", 3: "c"}
#: the device host of the families that only observe (stepped after the power flow); see the module docstring
OBSERVER_HOST = "DevicesAfterGrid"


class _NothingYet:
    """Initial data meaning "no value before the source's first step" (a command nobody has sent yet)."""

    def __repr__(self) -> str:
        return "NOTHING_YET"


NOTHING_YET = _NothingYet()


def _nothing_yet_is_none(value: Any) -> Any:
    return None if value is NOTHING_YET else value


def connect_mosaik(world: Any, src: Any, dst: Any, attr_pairs: Any, time_shifted: bool,
                   initial_data: dict[str, Any] | None) -> None:
    """``world.connect``, where an initial value of None means "nothing yet": mosaik seeds a time-shifted
    connection's first step only with a value that is not None (and warns, soon fails, when the seed is missing),
    so None travels as a marker that the connection turns back into None on its way to the destination."""
    if not (initial_data and any(v is None for v in initial_data.values())):
        world.connect(src, dst, *attr_pairs, time_shifted=time_shifted, initial_data=initial_data)
        return
    seeds = {k: NOTHING_YET if v is None else v for k, v in initial_data.items()}
    world.connect(src, dst, *attr_pairs, time_shifted=time_shifted, initial_data=seeds,
                  transform=_nothing_yet_is_none)


class WorldBuilder:
    """Builds the world for one scenario; controller kinds use its helpers (the BuildContext) to wire themselves in."""

    def __init__(self, loaded: LoadedScenario, out_dir: Path, monitor: Any = None) -> None:
        self.loaded = loaded
        self.scenario: Scenario = loaded.scenario
        self.out_dir = Path(out_dir)
        self.monitor = monitor
        self.step_s = self.scenario.step
        # every entry is a {"python": "module:Class"} (mosaik's PythonModel)
        self.world = mosaik.World(cast(mosaik.SimConfig, dict(SIM_CONFIG)), time_resolution=1.0, skip_greetings=True,
                                  configure_logging=False)
        # simulator id -> the simulators it feeds without a time shift (where link simulators may merge)
        self._same_time: dict[str, set[str]] = {}
        self.world.connect = self._connect_recorded  # type: ignore[method-assign, assignment]  # observe, then connect
        self._sims: dict[str, Any] = {}
        self.columns: list[list[Any]] = []
        self.sites: dict[str, SiteHandle] = {}
        self.devices: dict[str, Any] = {}
        self.device_specs: dict[str, DeviceSpec] = {s.id: s for s in self.scenario.devices}
        self.grid: Any = None
        self.grid_children: dict[str, list[Any]] = {}
        self.price: Any = None
        self.recorder: Any = None
        self.device_sim: Any = None
        self.observer_sim: Any = None  # the host of non-injecting families, started when one is present
        self._extra_entities: list[Any] = []
        self._routes: list[tuple[Any, ...]] = []
        self.bus: Any = None
        self.ev_bays: dict[str, Any] = {}  # wallbox id -> its EV fleet bay entity
        # what a simulator must still hear after the last step (the EV fleet: the wallboxes' last powers)
        self._closers: list[Any] = []
        self._bay_power: list[tuple[str, str, str]] = []  # (bay eid, wallbox simulator id, wallbox eid)
        self.warnings: list[str] = []
        self.schedule = Schedule(list(self.scenario.events), self.scenario.start)
        self.event_sim: Any = None  # "Events": the schedule's outputs (started when events or their sources are used)
        self._event_points: dict[str, Any] = {}
        self._profile_feeds: list[tuple[Any, Any]] = []  # (profile Load entity, the grid Load it drives)
        self._id_major: dict[tuple[str, str], list[str]] = {}  # record_group: (full id, attr) -> its file columns
        # (device host sid, profile attr, input name) -> [(profile entity, device entity)]
        self._input_feeds: dict[tuple[str, str, str], list[tuple[Any, Any]]] = {}

    def _connect_recorded(self, src: Any, dst: Any, *attr_pairs: Any, **kwargs: Any) -> Any:
        """``mosaik.World.connect``, noting which simulator feeds which at the same time."""
        if not (kwargs.get("time_shifted") or kwargs.get("weak")):
            self._same_time.setdefault(src.sid, set()).add(dst.sid)
        return type(self.world).connect(self.world, src, dst, *attr_pairs, **kwargs)

    # -- helpers for controller kinds ----------------------------------------------------------------------
    def sim(self, name: str, python: str | None = None, **params: Any) -> Any:
        """Start (once) and return the model factory of a simulator; ``python`` registers a new one."""
        if name not in self._sims:
            if python is not None:
                sim_config = self.world._async_world.sim_config
                assert sim_config is not None  # the world was created with SIM_CONFIG
                sim_config[name] = {"python": python}
            params.setdefault("step_size", self.step_s)
            self._sims[name] = self.world.start(name, **params)
        return self._sims[name]

    def connect(self, src: Any, dst: Any, *attr_pairs: str | tuple[str, str], role: str | None = None,
                topic: str | None = None, sender_kind: str = "controller", period_s: int = 0,
                time_shifted: bool = False, initial_data: dict[str, Any] | None = None) -> None:
        """Connect like ``world.connect``; with a broker ``role`` (data, control, smx, aggregator, smx:<site>)
        the flow travels as SenML over that role's broker when the scenario puts the role on one (or a
        communication-loss event touches it).

        ``topic`` groups flows into one message per step (default: one topic per role and sender);
        ``period_s`` limits how often a flow is published (telemetry rates).
        """
        if role is None or not (self._role_on_bus(role) or self._comm_loss(role, src, dst)):
            connect_mosaik(self.world, src, dst, attr_pairs, time_shifted, initial_data)
            return
        self._routes.append((src, dst, attr_pairs, role, topic, sender_kind, period_s, time_shifted, initial_data))

    def _role_on_bus(self, role: str) -> bool:
        spec = self.scenario.messaging
        if spec is None:
            return False
        # a role on "direct" without injected faults is exactly a mosaik connection: keep it one (fastest)
        return spec.broker_for(role) != "direct" or spec.faults_for(role) is not None

    def _comm_loss(self, role: str, src: Any, dst: Any) -> list[tuple[int, int]]:
        """The windows in which the scenario's communication-loss events cut this flow (empty: none)."""
        if not self.schedule.of("comm_loss"):
            return []
        ids = {ent.full_id: dev_id for dev_id, ent in self.devices.items()}
        ends = tuple(ids[e.full_id] for e in (src, dst) if e is not None and e.full_id in ids)
        return self.schedule.comm_loss(role, ends)

    def record(self, entity: Any, attr: str, table: str, column: str | list[str]) -> None:
        """Record ``entity.attr`` into ``table`` under ``column`` (a list of columns for a vector attr)."""
        self.columns.append([entity.full_id, attr, table, column])

    def record_group(self, entity: Any, attrs: list[str], table: str, ids: list[str]) -> None:
        """Record vector attributes of a group entity (element i: ``ids[i]``) under ``<id>.<attr>``, laid out in
        the file as one entity per id would be (each id's attributes together)."""
        for attr in attrs:
            self.record(entity, attr, table, [f"{i}.{attr}" for i in ids])
        self._id_major[(entity.full_id, attrs[0])] = [f"{i}.{a}" for i in ids for a in attrs]
        self._id_major.update({(entity.full_id, a): [] for a in attrs[1:]})

    def select_devices(self, ids: list[str] | str, *, needs_battery: bool = False) -> list[DeviceSpec]:
        specs = list(self.device_specs.values()) if ids == "*" else [self.device_specs[i] for i in ids]
        if needs_battery:
            specs = [s for s in specs if self._has_battery(s)]
        return specs

    def _has_battery(self, spec: DeviceSpec) -> bool:
        fam = device_registry.family(spec.family)
        return fam.battery_setpoint is not None and bool(fam.capabilities(fam.parse_config(spec.config)).setpoints)

    def site_of(self, device_id: str) -> SiteHandle | None:
        spec = self.device_specs[device_id]
        return self.sites.get(spec.site) if spec.site else None

    def point_of(self, device_id: str) -> Any:
        """The grid Load entity at a device's connection point (its site's PCC or its own bus)."""
        spec = self.device_specs[device_id]
        return self.sites[spec.site].pcc if spec.site else self._loads[f"dev:{spec.id}"]

    def vectors(self, roles: list[str], device_ids: list[str]) -> tuple[Any, Any] | None:
        """See BuildContext.vectors: one value per step for mosaik instead of one per device."""
        if len(device_ids) < 2 or any(self._role_on_bus(r) for r in roles) or self.schedule.of("comm_loss"):
            return None
        sites = [self.site_of(d) for d in device_ids]
        ents = [self.devices[d] for d in device_ids]
        if any(s is None or s.meter is not None for s in sites) or len({e.sid for e in ents}) != 1:
            return None
        points = self.add_entity(self._sims["Grid"].Points(
            loads=[self.point_of(d).eid.removeprefix("load:") for d in device_ids]))
        table = self.add_entity(self._sims[ents[0].sid.rsplit("-", 1)[0]].Table(members=[e.eid for e in ents]))
        return points, table

    def series(self, entities: list[Any]) -> Any:
        """A profile Series entity over these profile entities (element i: entities[i])."""
        return self.add_entity(self._sims["Profiles"].Series(members=[e.eid for e in entities]))

    def rng(self, name: str) -> np.random.Generator:
        """A generator derived from the scenario seed and a stable name: adding one user never shifts another."""
        digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return np.random.default_rng([self.scenario.seed, digest])

    # -- build ------------------------------------------------------------------------------------------------
    def build(self) -> WorldBuilder:
        sc = self.scenario
        self.out_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._build_profiles_and_grid()
            self._build_events()
            self._stage(f"{len(sc.devices)} devices")
            self._build_devices()
            self._build_ev_fleets()
            for _i, ctl in enumerate(sc.controllers):
                self._stage(f"controller {ctl.id} ({ctl.kind})")
                kind = controller_kinds.controller(ctl.kind)
                params = kind.params.model_validate(ctl.params)
                kind.build(self, ctl, params)
            self._stage("messaging and recorder")
            self._build_telemetry()
            self._build_native_topics()
            self._build_routes()
            self._build_recorder()
            self._write_meta()
        finally:
            self._stage(None)
        return self

    def _stage(self, text: str | None) -> None:
        """Tell the monitor which part of the build starts (None: the build is over); silent without one."""
        stage = getattr(self.monitor, "stage", None)
        if stage is not None:
            stage(text)

    def _warn(self, text: str) -> None:
        """A build warning: printed by the monitor and kept in meta.json ("warnings")."""
        self.warnings.append(text)
        warn = getattr(self.monitor, "warn", None)
        if warn is not None:
            warn(text)

    def _build_profiles_and_grid(self) -> None:
        sc = self.scenario
        g = sc.grid
        self._stage("profiles")
        profiles = self.sim("Profiles", start=sc.start.isoformat(), horizon_s=sc.duration, timezone=sc.timezone)
        self._stage(f"grid {g.code or g.path} (power flow set-up)")
        extra_loads = [{"id": s.id, "bus": s.bus, "phase": s.phase} for s in sc.sites if s.bus is not None]
        extra_loads += [{"id": f"dev:{d.id}", "bus": d.bus, "phase": d.phase} for d in sc.devices if d.bus]
        grid_sim = self.sim("Grid")
        try:
            self.grid = grid_sim.Grid(source=g.source, path=str(g.path) if g.path else None, code=g.code,
                                      mode=g.mode, solver=g.solver, extra_loads=extra_loads,
                                      static_loads="file" if g.static_loads == "file" else "zero",
                                      ampacity_a=g.line_ampacity_a or None)
        except Exception as exc:  # the grid simulator names what is wrong; place it in the scenario
            raise self.loaded.error(("grid",), f"cannot build the grid: {exc}") from exc
        for child in self.grid.children:
            self.grid_children.setdefault(child.type, []).append(child)
        loads = {c.eid.removeprefix("load:"): c for c in self.grid_children.get("Load", [])}
        buses = {c.eid.removeprefix("bus:") for c in self.grid_children.get("Bus", [])}
        self._loads = loads
        self._bus_vn_kv = {c.eid.removeprefix("bus:"): (c.extra_info or {}).get("vn_kv")
                           for c in self.grid_children.get("Bus", [])}

        self._stage(f"{len(sc.sites)} sites")
        for i, site in enumerate(sc.sites):
            key = site.grid_load or site.id
            if site.grid_load is not None and site.grid_load not in loads:
                raise self.loaded.error(("sites", i, "grid_load"), "expected a load of the grid file "
                                        f"(e.g. {', '.join(sorted(loads)[:3])})", site.grid_load)
            if site.bus is not None and site.bus not in buses:
                raise self.loaded.error(("sites", i, "bus"), "expected a bus of the grid "
                                        f"(e.g. {', '.join(sorted(buses)[:3])})", site.bus)
            handle = SiteHandle(site, loads[key])
            if site.load is not None:
                ref = site.load
                handle.load = self._create(("sites", i, "load"), profiles.Load, source=ref.source,
                                           column=ref.column, scale=ref.scale, power_factor=ref.power_factor,
                                           path=_str(ref.path), code=g.code, element=ref.element)
                self._profile_feeds.append((handle.load, handle.pcc))
                self.record(handle.load, "p_w", "sites", f"{site.id}.load_p_w")
            if site.dc_load is not None:  # on a device's DC bus: read through site.dc_load_p_w, not drawn at the PCC
                ref = site.dc_load
                handle.dc_load = self._create(("sites", i, "dc_load"), profiles.Load, source=ref.source,
                                              column=ref.column, scale=ref.scale, power_factor=1.0,
                                              path=_str(ref.path), code=g.code, element=ref.element)
                self.record(handle.dc_load, "p_w", "sites", f"{site.id}.dc_load_p_w")
            pv_ref = site.pv_profile or sc.profiles.pv
            if pv_ref is not None:
                loc = ("sites", i, "pv_profile") if site.pv_profile else ("profiles", "pv")
                handle.pv = self._create(loc, profiles.PV, source=pv_ref.source, column=pv_ref.column,
                                         scale=pv_ref.scale, path=_str(pv_ref.path), code=g.code,
                                         element=pv_ref.element)
            self.record(handle.pcc, "p_w", "sites", f"{site.id}.pcc_p_w")
            self.record(handle.pcc, "v_pu", "sites", f"{site.id}.v_pu")
            self.sites[site.id] = handle
        self._drive_other_loads(profiles, loads)
        self._feed_points(self._profile_feeds, lambda eids: profiles.Series(members=eids))
        for i, dev in enumerate(sc.devices):
            if dev.bus is not None and dev.bus not in buses:
                raise self.loaded.error(("devices", i, "bus"), "expected a bus of the grid", dev.bus)
        if sc.profiles.price is not None:
            p = sc.profiles.price
            periods = [{"from": q.start, "to": q.end, "import": q.import_eur_per_kwh,
                        "export": q.export_eur_per_kwh} for q in p.periods or []]
            self.price = self._create(("profiles", "price"), profiles.Price, kind=p.kind,
                                      import_eur_per_kwh=p.import_eur_per_kwh,
                                      export_eur_per_kwh=p.export_eur_per_kwh, periods=periods, path=_str(p.path))
            for attr in ("import_eur_per_kwh", "export_eur_per_kwh"):
                self.record(self.price, attr, "prices", f"price.{attr}")

    def _drive_other_loads(self, profiles: Any, loads: dict[str, Any]) -> None:
        """Grid-file loads that no site drives: the grid's own profiles where it has them (SimBench), else 0 W
        with a warning (``grid.static_loads: profiles``, the default); ``zero``/``file`` keep the fixed policy."""
        g = self.scenario.grid
        driven = {s.grid_load for s in self.scenario.sites if s.grid_load} | {s.id for s in self.scenario.sites}
        driven |= {f"dev:{d.id}" for d in self.scenario.devices if d.bus}
        others = [name for name in loads if name not in driven]
        self.grid_profile_loads: list[str] = []
        if not others or g.static_loads != "profiles":
            return
        if g.source != "simbench":
            shown = ", ".join(others[:3]) + (" …" if len(others) > 3 else "")
            self._warn(f"{len(others)} loads of the grid file are not driven by a site and draw 0 W ({shown}): "
                       f"a {g.source} grid has no profiles of its own; give them sites with a load profile, or set "
                       "grid.static_loads: file (the file's fixed values) or zero (silences this warning)")
            return
        self._stage(f"{len(others)} grid loads on their SimBench profiles")
        for name in others:
            ent = self._create(("grid", "static_loads"), profiles.Load, source="simbench", code=g.code,
                               element=name, scale=1.0, power_factor=None, path=None, column=None)
            self._profile_feeds.append((ent, loads[name]))
            self.grid_profile_loads.append(name)

    def _feed_points(self, feeds: list[tuple[Any, Any]], gather: Any) -> None:
        """Connect the ``p_w``/``q_var`` of many sources (profile Loads, devices) to their grid Loads: as one vector
        (``gather(source eids)`` makes the source simulator's vector entity, the grid a Points entity; mosaik's cost
        is per value and step), or directly for a single source."""
        if len(feeds) < 2:
            for src, point in feeds:
                self.world.connect(src, point, "p_w", "q_var")
            return
        vector = self.add_entity(gather([src.eid for src, _ in feeds]))
        loads = [point.eid.removeprefix("load:") for _, point in feeds]
        points = self.add_entity(self._sims["Grid"].Points(loads=loads))
        self.world.connect(vector, points, "p_w", "q_var")

    def _build_events(self) -> None:
        """The schedule's simulator: site PCCs that open, the feeder's source voltage (cosim/event_sim.py)."""
        sch = self.schedule
        reads_presence = any(i.scope == "point" and i.attr in sources.EVENT_POINT_ATTRS
                             for d in self.scenario.devices for i in device_registry.family(d.family).inputs)
        if not sch and not reads_presence:
            return
        self.event_sim = self.sim("Events", "cosim.event_sim:EventSim", schedule=sch,
                                  events_path=str(self.out_dir / "events.jsonl"))
        for site_id in sorted(sch.outage_sites()):
            point = self.add_entity(self.event_sim.Point(site=site_id))
            self.world.connect(point, self.sites[site_id].pcc, "grid_present")
            self.record(point, "grid_present", "sites", f"{site_id}.grid_present")
        if sch.has_sag():
            source = self.add_entity(self.event_sim.Source())
            self.world.connect(source, self.grid, "v_source_pu")
            self.record(source, "v_source_pu", "grid", "grid.v_source_pu")

    def _event_point(self, spec: DeviceSpec) -> Any:
        """The ``point.grid_present`` entity of one device: its site's outages and its own trips."""
        if spec.id not in self._event_points:
            self._event_points[spec.id] = self.add_entity(self.event_sim.Point(site=spec.site, device=spec.id))
        return self._event_points[spec.id]

    def _create(self, loc: tuple[str | int, ...], factory: Any, **params: Any) -> Any:
        """Create an entity; a simulator's refusal (bad column, file, ...) becomes a scenario error at ``loc``."""
        try:
            return factory(**params)
        except (ValueError, KeyError, OSError) as exc:
            raise self.loaded.error(loc, str(exc).strip("'\"")) from exc

    def _build_devices(self) -> None:
        sc = self.scenario
        if not sc.devices:
            return
        wanted = sc.outputs.device_attrs
        feeds: list[tuple[Any, Any]] = []  # (injecting device, its grid Load)
        for i, spec in enumerate(sc.devices):
            fam = device_registry.family(spec.family)
            host = self._device_host(fam)
            factory = getattr(host, spec.family)
            try:
                ent = factory(address=spec.address, config=dict(spec.config), device_id=spec.id,
                              timeout_s=spec.timeout_s, context=self._device_context(spec))
            except Exception as exc:
                raise self.loaded.error(("devices", i), f"cannot create the device: {exc}") from exc
            self.devices[spec.id] = ent
            if fam.injects and spec.id in self.schedule.tripped_devices():
                # a trip opens the device's AC connection: its power passes a gate on its way to the grid
                gates = self.sim("EventGates", "cosim.event_sim:EventSim", schedule=self.schedule)
                gate = self.add_entity(gates.Gate(device=spec.id))
                self.world.connect(ent, gate, "p_w", "q_var")
                self.world.connect(gate, self.point_of(spec.id), "p_w", "q_var")
                self.record(gate, "tripped", "devices", f"{spec.id}.tripped")
            elif fam.injects:
                feeds.append((ent, self.point_of(spec.id)))
            if spec.site:
                self.sites[spec.site].devices.append(spec.id)
                if fam.meters_point:  # the site's SMM (validation refuses a second one)
                    self.sites[spec.site].meter = ent
            for inp in fam.inputs:
                self._connect_input(i, spec, fam, ent, inp)
            attrs = fam.measurements if wanted == "*" else [a for a in wanted if a in fam.measurements]
            if fam.meters_point:  # the site's energy KPIs read these
                attrs = list(dict.fromkeys([*attrs, *METERED]))
            # a sim:// device is always available: its column would be all ones, so only protocol devices get one
            status = ("rejected",) if Address.parse(spec.address).scheme == "sim" else ("available", "rejected")
            for attr in (*attrs, *status):
                self.record(ent, attr, "devices", f"{spec.id}.{attr}")
        if feeds:
            self._feed_points(feeds, lambda eids: self.device_sim.Table(members=eids))
        self._feed_inputs()

    def _device_host(self, fam: Family) -> Any:
        """The injecting families' host steps before the grid; the observers' after it (same step)."""
        from cosim.security.spec import device_tls

        events = str(self.out_dir / "events.jsonl")
        tls = device_tls(self.scenario.security)
        if fam.injects:
            self.device_sim = self.sim("Devices", events_path=events, tls=tls)
            return self.device_sim
        self.observer_sim = self.sim(OBSERVER_HOST, SIM_CONFIG["Devices"]["python"], events_path=events, tls=tls)
        return self.observer_sim

    def _device_context(self, spec: DeviceSpec) -> dict[str, Any]:
        """The device's build context, JSON-able (devices.simulator turns it into a DeviceContext)."""
        point = self.point_of(spec.id)
        info = point.extra_info or {}
        vn = self._bus_vn_kv.get(info.get("bus"))
        return {"start": self.scenario.start.isoformat(),
                "point": {"bus": info.get("bus"), "phase": info.get("phase"), "vn_kv": vn}}

    def _connect_input(self, index: int, spec: DeviceSpec, fam: Family, ent: Any, inp: Input) -> None:
        """Feed one declared input from its source (fleet.* inputs are fed when the fleets are built)."""
        scope, attr = inp.scope, inp.attr
        if scope == "fleet":
            return
        src = None
        if scope == "point" and attr in sources.EVENT_POINT_ATTRS:
            # from the event schedule, in the same step (not from the power flow)
            self.world.connect(self._event_point(spec), ent, (attr, inp.name))
            return
        if scope == "point":
            src = self.point_of(spec.id)
        elif scope == "site":
            site = self.site_of(spec.id)
            handle_field, attr = sources.SITE_ENTITIES[attr]  # which profile entity of the site, and its attr
            src = getattr(site, handle_field) if site is not None else None
        if src is None:
            if inp.required:  # validation reports this with the scenario's own words; a hand-built scenario lands here
                raise self.loaded.error(("devices", index), f"input {inp.name!r} of family {fam.name!r} has no "
                                        f"source: {sources.describe(inp.source)}")
            return
        if scope == "point" and fam.injects:
            # the device's own power is part of the point's solution: it sees the previous step's
            initial = sources.initial_value(inp.source)
            self.world.connect(src, ent, (attr, inp.name), time_shifted=True, initial_data={attr: initial})
        elif scope == "site":  # a site's profile: gathered with the same input of the other devices of the host
            self._input_feeds.setdefault((ent.sid, attr, inp.name), []).append((src, ent))
        else:
            self.world.connect(src, ent, (attr, inp.name))

    def _feed_inputs(self) -> None:
        """Each site-profile input of the devices of one host as one vector (profile Series -> device Table), or
        directly for a single device."""
        for (sid, attr, name), feeds in self._input_feeds.items():
            if len(feeds) < 2:
                for src, ent in feeds:
                    self.world.connect(src, ent, (attr, name))
                continue
            host = self._sims[sid.rsplit("-", 1)[0]]
            series = self.add_entity(self._sims["Profiles"].Series(members=[src.eid for src, _ in feeds]))
            table = self.add_entity(host.Table(members=[ent.eid for _, ent in feeds]))
            self.world.connect(series, table, (attr, name))

    def close_out(self, end_s: int) -> None:
        """After the last step, or a stop: hand the simulators that need it what the last step produced (the EV
        fleet gets each wallbox's last power and the time of the step it came from, from mosaik's newest outputs
        of the wallboxes' simulator). ``end_s``: the run's planned end; a stopped run ends before it."""
        if not self._closers:
            return
        runners = self.world.sims
        last: dict[str, tuple[int, float | None]] = {}
        for bay, sid, eid in self._bay_power:
            runner = runners.get(sid)
            if runner is None:
                continue
            data = getattr(runner, "data", None) or {}  # set by mosaik at its first get_data
            last[bay] = (int(runner.last_step.time), (data.get(eid) or {}).get("p_w"))
        for close in self._closers:
            close(end_s, last)

    def _build_ev_fleets(self) -> None:
        sc = self.scenario
        if not sc.ev_fleets:
            return
        fleet_sim = self.sim("EVFleet", "simulators.ev_fleet:EVFleetSim", start=sc.start.isoformat(),
                             timezone=sc.timezone, seed=sc.seed, sessions_path=str(self.out_dir / "sessions.jsonl"),
                             closers=self._closers)
        for spec in sc.ev_fleets:
            site = fleet_sim.Site(kind=spec.kind, connectors=len(spec.wallboxes), evs_per_day=spec.evs_per_day,
                                  unplug_when_done=spec.unplug_when_done, working_days=spec.working_days,
                                  plug_probability=spec.plug_probability, distance_km_mean=spec.distance_km_mean,
                                  ev_types=spec.ev_types, groups=spec.groups, name=spec.id,
                                  session_model=spec.session_model)
            self.add_entity(site)
            for attr in ("p_w", "n_plugged", "n_waiting"):
                self.record(site, attr, "ev_fleets", f"{spec.id}.{attr}")
            for bay, dev_id in zip(site.children, spec.wallboxes):
                self.ev_bays[dev_id] = bay  # controllers read the EV driver's declaration (departure, energy) here
                device = self.devices[dev_id]
                fam = device_registry.family(self.device_specs[dev_id].family)
                self.world.connect(bay, device, *[(i.attr, i.name) for i in fam.inputs if i.scope == "fleet"])
                self.world.connect(device, bay, "p_w", time_shifted=True, initial_data={"p_w": 0.0})
                self._bay_power.append((bay.eid, device.sid, device.eid))

    def publish(self, src: Any, *attrs: str, role: str = "data", period_s: int = 0,
                sender_kind: str = "device", native: dict[str, tuple[str, float]] | None = None) -> None:
        """Publish ``src``'s attributes on a broker role with no mosaik destination (telemetry for the DWH);
        ``native`` (attr -> (topic name, factor)) publishes them under the source's own topic names instead."""
        if self._role_on_bus(role) or (native is None and self._comm_loss(role, src, None)):
            self._routes.append((src, None, attrs, role, None, sender_kind, period_s, False, None, native))

    def _build_native_topics(self) -> None:
        """A family that declares its own telemetry topics (``Family.topics``: the S4G ER connector's) has its
        devices' measurements on their site's SMX broker under those names too, when that broker is not direct."""
        for dev_id, ent in self.devices.items():
            spec = self.device_specs[dev_id]
            fam = device_registry.family(spec.family)
            if fam.topics and spec.site:
                self.publish(ent, *fam.topics, role=f"smx:{spec.site}", native=dict(fam.topics))

    def _build_telemetry(self) -> None:
        spec = self.scenario.telemetry
        if spec is None:
            return
        for handle in self.sites.values():
            self.publish(handle.pcc, *spec.site_attrs, role="data", period_s=spec.period)
        for dev_id, ent in self.devices.items():
            fam = device_registry.family(self.device_specs[dev_id].family)
            attrs = [a for a in spec.device_attrs if a in fam.measurements]
            if attrs:
                self.publish(ent, *attrs, role="data", period_s=spec.period)

    def _build_routes(self) -> None:
        """Put the flows of broker roles on the message bus (cosim.messaging.link)."""
        if not self._routes:
            return
        from cosim.messaging import topics
        from cosim.messaging.bus import MessageBus
        from cosim.messaging.config import MessagingSpec
        from cosim.messaging.link import source_name
        from cosim.messaging.link_groups import LinkGroup, merge_groups

        sc = self.scenario
        from cosim.security.spec import bus_security

        # routes exist without a messaging section only when a communication loss needs them: in memory
        self.bus = MessageBus(sc.messaging or MessagingSpec(default="direct"), seed=sc.seed, start=sc.start,
                              **bus_security(sc.security, sc.messaging.namespace if sc.messaging else "")).prepare()
        scope = source_name(sc.name)
        groups: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
        for r in self._routes:
            src, dst, role = r[0], r[1], r[3]
            # publish-only routes cannot close a cycle: one link simulator carries them all
            key = (role, src.sid, dst.sid) if dst is not None else (role, None, None)
            groups.setdefault(key, []).append(r)
        plan = []
        for key, routes in groups.items():
            # a link whose routes all publish at a slower rate (telemetry) only steps at that rate:
            # mosaik's cost is per simulator step, and time-based outputs persist in between
            periods = {r[6] for r in routes}
            step = math.gcd(*periods) if 0 not in periods else self.step_s
            step = step if step % self.step_s == 0 else self.step_s
            plan.append(LinkGroup((key[0], step), [key], {r[0].sid for r in routes},
                                  {r[1].sid for r in routes if r[1] is not None and not r[7]}))
        sensorthings = False
        for n, group in enumerate(merge_groups(plan, self._same_time)):
            routes = [(pack, r) for pack, member in enumerate(group.members) for r in groups[member]]
            link_role, step = group.key[0], group.key[1]
            attrs = {a if isinstance(a, str) else a[0] for _, r in routes for a in r[2]}
            hosts_dwh = not sensorthings and topics.parse_role_key(link_role)[0] == "data"
            sensorthings |= hosts_dwh
            # a link at the world's step rate steps only when a source steps or something falls due (its
            # sources may step far less often: GESSCon's hourly plan); a slower (telemetry) link samples its
            # sources on its own grid and stays time-based
            link = self.sim(f"BusLink{n}", "cosim.messaging.link:BusLinkSim", bus=self.bus, attrs=sorted(attrs),
                            step_size=step, sensorthings_dir=str(self.out_dir) if hosts_dwh else None,
                            triggered=step == self.step_s)
            for pack, (src, dst, pairs, role, topic, kind, period_s, shifted, initial, *native) in routes:
                self._add_route(link, scope, src, dst, pairs, role, topic, kind, period_s, shifted, initial,
                                native[0] if native else None, pack)
        self._build_native_commands()

    def _build_native_commands(self) -> None:
        """A family that declares command topics (``Family.commands``: the S4G ER connector's) takes setpoints
        from them on its site's SMX broker (not direct): only control components may publish there, and what
        arrives reaches the device in the next step, checked against its limits (cosim.messaging.native_commands)."""
        from cosim.messaging import topics
        from cosim.messaging.link import source_name

        assert self.bus is not None
        for dev_id, ent in self.devices.items():
            spec = self.device_specs[dev_id]
            fam = device_registry.family(spec.family)
            if not (fam.commands and spec.site and self._role_on_bus(f"smx:{spec.site}")):
                continue
            device = source_name(ent.full_id)  # the topic segment its telemetry is published under
            self.bus.restrict_publish(topics.smx_cmd_filter(spec.site, device), ["controller"])
            setpoints = sorted({sp for sp, _ in fam.commands.values()})
            factory = self.sim(f"NativeCommands_{fam.name}", "cosim.messaging.native_commands:NativeCommandSim",
                               bus=self.bus, setpoints=setpoints)
            cmd = self.add_entity(factory.NativeCommands(site=spec.site, device=device,
                                                         commands={k: list(v) for k, v in fam.commands.items()}))
            connect_mosaik(self.world, cmd, ent, setpoints, True, dict.fromkeys(setpoints))
            self.record(cmd, "commands", "devices", f"{dev_id}.commands")  # taken from the topics, a counter

    def _add_route(self, link: Any, scope: str, src: Any, dst: Any, pairs: tuple[Any, ...], role: str,
                   topic: str | None, kind: str, period_s: int, shifted: bool, initial: dict[str, Any] | None,
                   native: dict[str, tuple[str, float]] | None = None, pack: int = 0) -> None:
        from cosim.messaging import topics
        from cosim.messaging.link import source_name

        base, site = topics.parse_role_key(role)
        source = source_name(src.full_id)
        if topic is None:  # one topic per role, site and source: a step's values travel as one pack
            if base == "aggregator":
                topic = topics.agg_up_topic(site or scope, source)
            else:
                make = {"data": topics.data_topic, "control": topics.control_topic, "smx": topics.smx_meas_topic}[base]
                topic = make(site or scope, source, "state")
        route = link.Route(role=role, topic=topic, sender=src.full_id, source=source, sender_kind=kind,
                           period_s=period_s, down=self._comm_loss(role, src, dst),
                           native={a: list(v) for a, v in native.items()} if native else None, pack=pack)
        src_attrs = [(p, p) if isinstance(p, str) else p for p in pairs]
        self.world.connect(src, route, *[(a, a) for a, _ in src_attrs])
        if dst is not None:
            init = {a: initial[a] for a, _ in src_attrs if initial and a in initial} or None
            connect_mosaik(self.world, route, dst, src_attrs, shifted, init)

    def close(self) -> None:
        """Release what the world holds outside mosaik (the message bus and its embedded broker)."""
        if self.bus is not None:
            self.bus.close()

    def _build_recorder(self) -> None:
        sc = self.scenario
        grid = self.grid
        for attr in ("p_slack_w", "q_slack_var", "losses_w"):
            self.record(grid, attr, "grid", f"grid.{attr}")
        bus_names = [c.eid.removeprefix("bus:") for c in self.grid_children.get("Bus", [])]
        line_names = [c.eid.removeprefix("line:") for c in self.grid_children.get("Line", [])]
        trafo_names = [c.eid.removeprefix("trafo:") for c in self.grid_children.get("Trafo", [])]
        if sc.outputs.buses:
            if sc.grid.mode == "balanced":
                self.record(grid, "bus_v_pu", "buses", [f"{b}.v_pu" for b in bus_names])
            else:
                for ph in "abc":
                    self.record(grid, f"bus_v_{ph}_pu", "buses", [f"{b}.v_{ph}_pu" for b in bus_names])
        if sc.outputs.lines and line_names:
            self.record(grid, "line_loading_pct", "lines", [f"{n}.loading_pct" for n in line_names])
        if trafo_names:
            self.record(grid, "trafo_loading_pct", "trafos", [f"{n}.loading_pct" for n in trafo_names])
            self.record(grid, "trafo_p_hv_w", "trafos", [f"{n}.p_hv_w" for n in trafo_names])
        on_step = self.monitor.update if self.monitor is not None else None
        rec_sim = self.sim("Recorder", out_dir=str(self.out_dir), flush_rows=sc.outputs.flush_rows, on_step=on_step)
        by_id = self._entities_by_full_id()
        order: dict[str, list[str]] = {}
        for full_id, attr, table, col in self.columns:
            laid = self._id_major.get((full_id, attr))
            order.setdefault(table, []).extend(laid if laid is not None else col if isinstance(col, list) else [col])
        columns = self.recorder_columns = self._gathered_columns(by_id)
        self.recorder = rec_sim.Recorder(columns=columns, order=order)
        sources: dict[str, tuple[Any, list[str]]] = {}
        for full_id, attr, _, _ in columns:
            sources.setdefault(full_id, (by_id[full_id], []))[1].append(attr)
        for ent, attrs in sources.values():
            self.world.connect(ent, self.recorder, *dict.fromkeys(attrs))
        self._bus_names, self._line_names, self._trafo_names = bus_names, line_names, trafo_names

    def _gathered_columns(self, by_id: dict[str, Any]) -> list[list[Any]]:
        """The recorded columns, with the scalar attributes of many entities of one simulator (grid Loads, profiles,
        devices) gathered into one vector each: mosaik's cost is per value and step, so thousands of sites and
        devices then cost the recorder a few values per step. The file's columns and values stay the same (the
        recorder keeps the original column order); ``by_id`` learns the gathering entities."""
        gatherers: dict[str, tuple[str | None, Any]] = {
            "Grid": ("Load", lambda f, eids: f.Points(loads=[e.removeprefix("load:") for e in eids])),
            "Profiles": (None, lambda f, eids: f.Series(members=eids)),
            "Devices": (None, lambda f, eids: f.Table(members=eids)),
            OBSERVER_HOST: (None, lambda f, eids: f.Table(members=eids)),
        }
        groups: dict[tuple[str, str, str], list[list[Any]]] = {}
        kept: list[list[Any]] = []
        for spec in self.columns:
            full_id, attr, table, col = spec
            ent = by_id[full_id]
            sim_name = ent.sid.rsplit("-", 1)[0]
            gather = gatherers.get(sim_name)
            if isinstance(col, list) or gather is None or gather[0] not in (None, ent.type):
                kept.append(spec)
            else:
                groups.setdefault((sim_name, attr, table), []).append(spec)
        for (sim_name, attr, table), specs in groups.items():
            if len(specs) < 2:  # nothing to gather
                kept.extend(specs)
                continue
            ent = gatherers[sim_name][1](self._sims[sim_name], [by_id[s[0]].eid for s in specs])
            by_id[ent.full_id] = ent
            kept.append([ent.full_id, attr, table, [s[3] for s in specs]])
        return kept

    def _entities_by_full_id(self) -> dict[str, Any]:
        ents = [self.grid, *self.grid.children, *self.devices.values(), *self._extra_entities]
        ents += [e for s in self.sites.values() for e in (s.load, s.pv, s.dc_load) if e is not None]
        if self.price is not None:
            ents.append(self.price)
        return {e.full_id: e for e in ents}

    def add_entity(self, entity: Any) -> Any:
        """Make an entity created by a controller kind known to the recorder wiring."""
        self._extra_entities.append(entity)
        return entity

    def _write_meta(self) -> None:
        sc = self.scenario
        vn = {}
        for child in self.grid_children.get("Bus", []):
            vn[child.eid.removeprefix("bus:")] = child.extra_info.get("vn_kv") if child.extra_info else None
        meta = {
            "scenario": sc.name,
            "start": sc.start.isoformat(),
            "step_s": sc.step,
            "duration_s": sc.duration,
            "seed": sc.seed,
            "kpis": sc.kpis.model_dump(),
            "grid": {
                "mode": sc.grid.mode,
                "solver": sc.grid.solver,
                "v_nominal_kv": vn,
                "slack_bus": (self.grid.extra_info or {}).get("slack_bus"),
                "buses": self._bus_names,
                "lines": self._line_names,
                "trafos": self._trafo_names,
                "topology": self._topology(),
                "profile_loads": getattr(self, "grid_profile_loads", []),
            },
            "sites": [
                {"id": h.spec.id, "bus": h.spec.bus or (h.pcc.extra_info or {}).get("bus"),
                 "phase": h.spec.phase if h.spec.bus else (h.pcc.extra_info or {}).get("phase"),
                 "devices": h.devices, "contract_import_w": h.spec.contract_import_w,
                 "contract_export_w": h.spec.contract_export_w,
                 "meter": h.meter.eid if h.meter is not None else None}
                for h in self.sites.values()
            ],
            "devices": [
                {"id": d.id, "family": d.family, "site": d.site, "bus": d.bus, "address": d.address,
                 "config": d.config}
                for d in sc.devices
            ],
            "controllers": [{"id": c.id, "kind": c.kind, "devices": c.devices, "params": c.params}
                            for c in sc.controllers],
            "ev_fleets": [{"id": f.id, "kind": f.kind, "wallboxes": list(f.wallboxes)} for f in sc.ev_fleets],
            "warnings": self.warnings,
            "build_s": round(self.monitor.build_s, 3) if hasattr(self.monitor, "build_s") else None,
            "events": [{"index": w.index, "kind": w.spec.kind, "from_s": w.t0, "until_s": w.t1,
                        **{k: getattr(w.spec, k) for k in ("site", "device", "role", "v_pu")
                           if getattr(w.spec, k) is not None}} for w in self.schedule.windows],
        }
        (self.out_dir / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")

    def _topology(self) -> dict[str, Any]:
        """Lines (from, to, length) and transformers (hv, lv) by name: the report's feeder distances and single-line
        view come from these."""
        lines = [{"id": c.eid.removeprefix("line:"), **(c.extra_info or {})}
                 for c in self.grid_children.get("Line", [])]
        trafos = [{"id": c.eid.removeprefix("trafo:"), **(c.extra_info or {})}
                  for c in self.grid_children.get("Trafo", [])]
        return {"lines": lines, "trafos": trafos}


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
