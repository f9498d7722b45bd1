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
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import mosaik
import numpy as np

from cosim import controller_kinds, sources
from cosim.build_context import SiteHandle
from cosim.scenario import DeviceSpec, LoadedScenario, Scenario
from devices import registry as device_registry
from devices.base import Address
from devices.family import Family, Input

SIM_CONFIG: dict[str, dict[str, str]] = {
    "Profiles": {"python": "simulators.profiles:ProfileSim"},
    "Grid": {"python": "simulators.grid:GridSim"},
    "Devices": {"python": "devices.simulator:DeviceSim"},
    "Recorder": {"python": "cosim.recorder:RecorderSim"},
}

PHASE_NAMES = {1: "a", 2: "b", 3: "c"}
#: the device host of the families that only observe (stepped after the power flow); see the module docstring
OBSERVER_HOST = "DevicesAfterGrid"


class WorldBuilder:
    """Builds the world for one scenario; controller kinds use its helpers (the BuildContext) to wire themselves in."""

    def __init__(self, loaded: LoadedScenario, out_dir: Path, monitor: Any = None) -> None:
        self.loaded = loaded
        self.scenario: Scenario = loaded.scenario
        self.out_dir = Path(out_dir)
        self.monitor = monitor
        self.step_s = self.scenario.step
        self.world = mosaik.World(dict(SIM_CONFIG), time_resolution=1.0, skip_greetings=True,
                                  configure_logging=False)
        self._sims: dict[str, Any] = {}
        self.columns: list[list] = []
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
        self._routes: list[tuple] = []
        self.bus: Any = None
        self.ev_bays: dict[str, Any] = {}  # wallbox id -> its EV fleet bay entity

    # -- helpers for controller kinds ----------------------------------------------------------------------
    def sim(self, name: str, python: str | None = None, **params: Any) -> Any:
        """Start (once) and return the model factory of a simulator; ``python`` registers a new one."""
        if name not in self._sims:
            if python is not None:
                self.world._async_world.sim_config[name] = {"python": python}
            params.setdefault("step_size", self.step_s)
            self._sims[name] = self.world.start(name, **params)
        return self._sims[name]

    def connect(self, src: Any, dst: Any, *attr_pairs: str | tuple[str, str], role: str | None = None,
                topic: str | None = None, sender_kind: str = "controller", period_s: int = 0,
                time_shifted: bool = False, initial_data: dict | None = None) -> None:
        """Connect like ``world.connect``; with a broker ``role`` (data, control, smx, aggregator, smx:<site>)
        the flow travels as SenML over that role's broker when the scenario puts the role on one.

        ``topic`` groups flows into one message per step (default: one topic per role and sender);
        ``period_s`` limits how often a flow is published (telemetry rates).
        """
        if role is None or not self._role_on_bus(role):
            self.world.connect(src, dst, *attr_pairs, time_shifted=time_shifted, initial_data=initial_data)
            return
        self._routes.append((src, dst, attr_pairs, role, topic, sender_kind, period_s, time_shifted, initial_data))

    def _role_on_bus(self, role: str) -> bool:
        spec = self.scenario.messaging
        if spec is None:
            return False
        # a role on "direct" without injected faults is exactly a mosaik connection: keep it one (fastest)
        return spec.broker_for(role) != "direct" or spec.faults_for(role) is not None

    def record(self, entity: Any, attr: str, table: str, column: str | list[str]) -> None:
        """Record ``entity.attr`` into ``table`` under ``column`` (a list of columns for a vector attr)."""
        self.columns.append([entity.full_id, attr, table, column])

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

    def rng(self, name: str) -> np.random.Generator:
        """A generator derived from the scenario seed and a stable name: adding one user never shifts another."""
        digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
        return np.random.default_rng([self.scenario.seed, digest])

    # -- build ------------------------------------------------------------------------------------------------
    def build(self) -> "WorldBuilder":
        sc = self.scenario
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._build_profiles_and_grid()
        self._build_devices()
        self._build_ev_fleets()
        for i, ctl in enumerate(sc.controllers):
            kind = controller_kinds.controller(ctl.kind)
            params = kind.params.model_validate(ctl.params)
            kind.build(self, ctl, params)
        self._build_telemetry()
        self._build_routes()
        self._build_recorder()
        self._write_meta()
        return self

    def _build_profiles_and_grid(self) -> None:
        sc = self.scenario
        profiles = self.sim("Profiles", start=sc.start.isoformat(), horizon_s=sc.duration, timezone=sc.timezone)
        g = sc.grid
        extra_loads = [{"id": s.id, "bus": s.bus, "phase": s.phase} for s in sc.sites if s.bus is not None]
        extra_loads += [{"id": f"dev:{d.id}", "bus": d.bus, "phase": d.phase} for d in sc.devices if d.bus]
        grid_sim = self.sim("Grid")
        try:
            self.grid = grid_sim.Grid(source=g.source, path=str(g.path) if g.path else None, code=g.code,
                                      mode=g.mode, solver=g.solver, extra_loads=extra_loads,
                                      static_loads=g.static_loads, ampacity_a=g.line_ampacity_a or None)
        except Exception as exc:  # the grid simulator names what is wrong; place it in the scenario
            raise self.loaded.error(("grid",), f"cannot build the grid: {exc}") from exc
        for child in self.grid.children:
            self.grid_children.setdefault(child.type, []).append(child)
        loads = {c.eid.removeprefix("load:"): c for c in self.grid_children.get("Load", [])}
        buses = {c.eid.removeprefix("bus:") for c in self.grid_children.get("Bus", [])}
        self._loads = loads
        self._bus_vn_kv = {c.eid.removeprefix("bus:"): (c.extra_info or {}).get("vn_kv")
                           for c in self.grid_children.get("Bus", [])}

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
                self.world.connect(handle.load, handle.pcc, "p_w", "q_var")
                self.record(handle.load, "p_w", "sites", f"{site.id}.load_p_w")
            pv_ref = site.pv_profile or sc.profiles.pv
            if pv_ref is not None:
                loc = ("sites", i, "pv_profile") if site.pv_profile else ("profiles", "pv")
                handle.pv = self._create(loc, profiles.PV, source=pv_ref.source, column=pv_ref.column,
                                         scale=pv_ref.scale, path=_str(pv_ref.path), code=g.code,
                                         element=pv_ref.element)
            self.record(handle.pcc, "p_w", "sites", f"{site.id}.pcc_p_w")
            self.record(handle.pcc, "v_pu", "sites", f"{site.id}.v_pu")
            self.sites[site.id] = handle
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

    def _create(self, loc: tuple, factory: Any, **params: Any) -> Any:
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
            if fam.injects:
                self.world.connect(ent, self.point_of(spec.id), "p_w", "q_var")
            if spec.site:
                self.sites[spec.site].devices.append(spec.id)
            for inp in fam.inputs:
                self._connect_input(i, spec, fam, ent, inp)
            attrs = fam.measurements if wanted == "*" else [a for a in wanted if a in fam.measurements]
            # a sim:// device is always available: its column would be all ones, so only protocol devices get one
            status = ("rejected",) if Address.parse(spec.address).scheme == "sim" else ("available", "rejected")
            for attr in (*attrs, *status):
                self.record(ent, attr, "devices", f"{spec.id}.{attr}")

    def _device_host(self, fam: Family) -> Any:
        """The injecting families' host steps before the grid; the observers' after it (same step)."""
        events = str(self.out_dir / "events.jsonl")
        if fam.injects:
            self.device_sim = self.sim("Devices", events_path=events)
            return self.device_sim
        self.observer_sim = self.sim(OBSERVER_HOST, SIM_CONFIG["Devices"]["python"], events_path=events)
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
        else:
            self.world.connect(src, ent, (attr, inp.name))

    def _build_ev_fleets(self) -> None:
        sc = self.scenario
        if not sc.ev_fleets:
            return
        fleet_sim = self.sim("EVFleet", "simulators.ev_fleet:EVFleetSim", start=sc.start.isoformat(),
                             timezone=sc.timezone, seed=sc.seed, sessions_path=str(self.out_dir / "sessions.jsonl"))
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

    def publish(self, src: Any, *attrs: str, role: str = "data", period_s: int = 0,
                sender_kind: str = "device") -> None:
        """Publish ``src``'s attributes on a broker role with no mosaik destination (telemetry for the DWH)."""
        if self._role_on_bus(role):
            self._routes.append((src, None, attrs, role, None, sender_kind, period_s, False, None))

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
        from cosim.messaging.link import source_name

        sc = self.scenario
        from cosim.security.spec import bus_security

        self.bus = MessageBus(sc.messaging, seed=sc.seed, start=sc.start,
                              **bus_security(sc.security, sc.messaging.namespace if sc.messaging else ""))
        scope = source_name(sc.name)
        groups: dict[tuple, list[tuple]] = {}
        for r in self._routes:
            src, dst, role = r[0], r[1], r[3]
            # publish-only routes cannot close a cycle: one link simulator carries them all
            key = (role, src.sid, dst.sid) if dst is not None else (role, None, None)
            groups.setdefault(key, []).append(r)
        sensorthings = False
        for n, (key, routes) in enumerate(groups.items()):
            attrs = {a if isinstance(a, str) else a[0] for r in routes for a in r[2]}
            # a link whose routes all publish at a slower rate (telemetry) only steps at that rate:
            # mosaik's cost is per simulator step, and time-based outputs persist in between
            periods = {r[6] for r in routes}
            step = math.gcd(*periods) if 0 not in periods else self.step_s
            step = step if step % self.step_s == 0 else self.step_s
            hosts_dwh = not sensorthings and topics.parse_role_key(key[0])[0] == "data"
            sensorthings |= hosts_dwh
            link = self.sim(f"BusLink{n}", "cosim.messaging.link:BusLinkSim", bus=self.bus, attrs=sorted(attrs),
                            step_size=step, sensorthings_dir=str(self.out_dir) if hosts_dwh else None)
            for src, dst, pairs, role, topic, kind, period_s, shifted, initial in routes:
                self._add_route(link, scope, src, dst, pairs, role, topic, kind, period_s, shifted, initial)

    def _add_route(self, link: Any, scope: str, src: Any, dst: Any, pairs: tuple, role: str, topic: str | None,
                   kind: str, period_s: int, shifted: bool, initial: dict | None) -> None:
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
                           period_s=period_s)
        src_attrs = [(p, p) if isinstance(p, str) else p for p in pairs]
        self.world.connect(src, route, *[(a, a) for a, _ in src_attrs])
        if dst is not None:
            init = {a: initial[a] for a, _ in src_attrs if initial and a in initial} or None
            self.world.connect(route, dst, *src_attrs, time_shifted=shifted, initial_data=init)

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
        self.recorder = rec_sim.Recorder(columns=self.columns)
        sources: dict[str, tuple[Any, list[str]]] = {}
        by_id = self._entities_by_full_id()
        for full_id, attr, _, _ in self.columns:
            sources.setdefault(full_id, (by_id[full_id], []))[1].append(attr)
        for ent, attrs in sources.values():
            self.world.connect(ent, self.recorder, *dict.fromkeys(attrs))
        self._bus_names, self._line_names, self._trafo_names = bus_names, line_names, trafo_names

    def _entities_by_full_id(self) -> dict[str, Any]:
        ents = [self.grid, *self.grid.children, *self.devices.values(), *self._extra_entities]
        ents += [e for s in self.sites.values() for e in (s.load, s.pv) if e is not None]
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
            },
            "sites": [
                {"id": h.spec.id, "bus": h.spec.bus or (h.pcc.extra_info or {}).get("bus"),
                 "phase": h.spec.phase if h.spec.bus else (h.pcc.extra_info or {}).get("phase"),
                 "devices": h.devices, "contract_import_w": h.spec.contract_import_w,
                 "contract_export_w": h.spec.contract_export_w}
                for h in self.sites.values()
            ],
            "devices": [
                {"id": d.id, "family": d.family, "site": d.site, "bus": d.bus, "address": d.address}
                for d in sc.devices
            ],
            "controllers": [{"id": c.id, "kind": c.kind} for c in sc.controllers],
        }
        (self.out_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")


def _str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
