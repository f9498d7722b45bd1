"""The hand-written naive world of a pilot scenario (the Fur/Skive kind): who is started, what connects to what.

Written the way the mosaik tutorials compose a scenario: one ``world.start`` per simulator, one entity per
household, device, grid element and controller, one ``world.connect`` per flow, a collector for the results.
The scenario file is read only for its *data* (start, profiles, device ratings, controller parameters); our
world builder, device host, recorder simulator and message bus are not used.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mosaik
import numpy as np

SIM_CONFIG: mosaik.SimConfig = {
    "Grid": {"python": "benchmarks.naive.grid:UnbalancedPandapower"},
    "Profiles": {"python": "benchmarks.naive.profiles:NaiveProfiles"},
    "Fronius": {"python": "benchmarks.naive.devices:NaiveDevices"},
    "PvInverters": {"python": "benchmarks.naive.devices:NaiveDevices"},
    "Libal": {"python": "benchmarks.naive.devices:NaiveDevices"},
    "Gesscon": {"python": "benchmarks.naive.controllers:NaiveGesscon"},
    "Lessag": {"python": "benchmarks.naive.controllers:NaiveLessag"},
    "Voltage": {"python": "benchmarks.naive.controllers:NaiveVoltage"},
    "Collector": {"python": "benchmarks.naive.collector:NaiveCollector"},
}
DEVICE_SIMS = {"fronius": ("Fronius", "Fronius"), "pv_battery": ("PvInverters", "PvInverter"),
               "libal": ("Libal", "Libal")}
SUPPORTED_CONTROLLERS = ("gesscon", "voltage_control")


@dataclass
class NaiveResult:
    run_dir: Path
    wall_s: float  # build + run + close, as measured around the whole composition
    steps: int
    run_s: float = 0.0  # stepping only (world.run with mosaik's setup, as our run's clock measures it)


def _block_means(x: np.ndarray, factor: int) -> np.ndarray:
    n = x.size // factor
    return x[: n * factor].reshape(n, factor).mean(axis=1)


def run(loaded: Any, run_dir: Path, duration_s: int | None = None) -> NaiveResult:
    """Run ``loaded`` (a :func:`cosim.scenario.load` result) naively into ``run_dir`` (the run-directory format)."""
    from controllers.gesscon import GessconParams, GessconSite
    from controllers.lessag import LessagParams
    from controllers.profess_problem import SiteBattery
    from controllers.voltage import VoltageParams
    from devices import registry as device_registry
    from simulators.grid_loaders import ensure_three_phase_data, load_grid
    from simulators.profiles import load_pq, price_profile, pv_profile

    t_start = time.perf_counter()
    sc = loaded.scenario
    step = sc.step
    duration = int(duration_s or sc.duration)
    horizon = 86400  # the controllers' forecast horizon (perfect foresight needs the data beyond the run)
    for c in sc.controllers:
        if c.kind not in SUPPORTED_CONTROLLERS:
            raise NotImplementedError(f"the naive composition has no {c.kind!r} controller")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    world = mosaik.World(SIM_CONFIG, time_resolution=1.0, skip_greetings=True, configure_logging=False)

    # -- data -------------------------------------------------------------------------------------------
    g = sc.grid
    model = load_grid(g.source, path=str(g.path) if g.path else None, code=g.code,
                      ampacity_a=g.line_ampacity_a or None)
    if g.mode != "unbalanced":
        raise NotImplementedError("the naive composition is written for the unbalanced pilot feeders")
    ensure_three_phase_data(model.net)
    cal = dict(start=sc.start, step_s=step, timezone=sc.timezone)
    total = duration + horizon

    # -- grid ---------------------------------------------------------------------------------------------
    grid_sim = world.start("Grid", step_size=step)
    phases = {x.index: x.phase for x in model.loads if x.element == "asymmetric_load"}
    grid = grid_sim.Grid(net=model.net, asym_phases=phases)
    ents = {c.eid: c for c in grid.children}
    bus_of = dict(zip(model.bus_names, model.bus_index))
    load_of = {x.name: x for x in model.loads}
    ext = next(c for c in grid.children if c.type == "ExternalGrid")

    # -- profiles -----------------------------------------------------------------------------------------
    prof_sim = world.start("Profiles", step_size=step)
    site_load, site_pv, truth = {}, {}, {}
    pv_default = sc.profiles.pv
    for site in sc.sites:
        entry: dict[str, Any] = {}
        if site.load is not None:
            r = site.load
            p, q = load_pq(r.source, r.column, duration_s=total, scale=r.scale, power_factor=r.power_factor,
                           path=str(r.path) if r.path else None, code=g.code, element=r.element, **cal)
            site_load[site.id] = prof_sim.Load(p_w=p[: duration // step], q_var=q[: duration // step])
            entry["load"] = p
        ref = site.pv_profile or pv_default
        if ref is not None:
            w = pv_profile(ref.source, ref.column, duration_s=total, scale=ref.scale,
                           path=str(ref.path) if ref.path else None, code=g.code, element=ref.element, **cal)
            site_pv[site.id] = prof_sim.PV(w_per_kwp=w[: duration // step])
            entry["pv"] = w
        truth[site.id] = entry
    pr = sc.profiles.price
    price_kw = dict(import_eur_per_kwh=pr.import_eur_per_kwh, export_eur_per_kwh=pr.export_eur_per_kwh,
                    periods=[{"from": q.start, "to": q.end, "import": q.import_eur_per_kwh,
                              "export": q.export_eur_per_kwh} for q in pr.periods or []] or None,
                    path=str(pr.path) if pr.path else None)
    imp, exp = price_profile(pr.kind, start=sc.start, duration_s=duration, step_s=step, timezone=sc.timezone,
                             **price_kw)
    price = prof_sim.Price(import_eur_per_kwh=imp, export_eur_per_kwh=exp)

    def prices_at(step_s: int) -> tuple[np.ndarray, np.ndarray]:
        return price_profile(pr.kind, start=sc.start, duration_s=total, step_s=step_s, timezone=sc.timezone,
                             **price_kw)

    # -- sites: where each site's power goes in the grid ------------------------------------------------------
    columns: list[list] = []
    factors: list[tuple[str, str, float]] = []
    to_record: list[tuple[Any, str]] = []

    def record(ent: Any, attr: str, table: str, column: str | list[str], factor: float | None = None) -> None:
        columns.append([ent.full_id, attr, table, column])
        to_record.append((ent, attr))
        if factor is not None:
            factors.append((ent.full_id, attr, factor))

    pcc: dict[str, Any] = {}
    meta_sites = []
    for site in sc.sites:
        if site.grid_load is not None:
            info = load_of[site.grid_load]
            ent = ents[f"AsymLoad-{info.index}"]
            bus, phase = info.bus, info.phase
            p_attr, q_attr, p_out = "P_load[MW]", "Q_load[MVar]", "P[MW]"
        else:
            if site.phase is not None:
                raise NotImplementedError("single-phase sites on a bus: not in the naive composition")
            ent = ents[f"Bus-{bus_of[site.bus]}"]
            bus, phase = site.bus, None
            p_attr, q_attr, p_out = "P_load[MW]", "Q_load[MVar]", "P_in[MW]"
        pcc[site.id] = (ent, p_attr, q_attr, p_out)
        if site.id in site_load:
            world.connect(site_load[site.id], ent, ("P[MW]", p_attr), ("Q[MVar]", q_attr))
            record(site_load[site.id], "p_w", "sites", f"{site.id}.load_p_w")
        record(ent, p_out, "sites", f"{site.id}.pcc_p_w", 1e6)
        record(ent, "Vm[pu]", "sites", f"{site.id}.v_pu")
        meta_sites.append({"id": site.id, "bus": bus, "phase": phase, "devices": [],
                           "contract_import_w": site.contract_import_w, "contract_export_w": site.contract_export_w})
    meta_site = {m["id"]: m for m in meta_sites}

    # -- devices ------------------------------------------------------------------------------------------------
    dev_sims: dict[str, Any] = {}
    devices: dict[str, Any] = {}
    for spec in sc.devices:
        if spec.family not in DEVICE_SIMS or spec.address != "sim://" or spec.site is None:
            raise NotImplementedError(f"device {spec.id}: the naive composition has {', '.join(DEVICE_SIMS)} at sites")
        sim_name, model_name = DEVICE_SIMS[spec.family]
        if sim_name not in dev_sims:
            dev_sims[sim_name] = world.start(sim_name, step_size=step)
        dev = getattr(dev_sims[sim_name], model_name)(config=dict(spec.config))
        devices[spec.id] = dev
        ent, p_attr, q_attr, _ = pcc[spec.site]
        world.connect(dev, ent, ("P[MW]", p_attr), ("Q[MVar]", q_attr))
        if spec.family in ("fronius", "pv_battery"):
            world.connect(site_pv[spec.site], dev, ("w_per_kwp", "pv_w_per_kwp"))
        if spec.family == "fronius":
            world.connect(site_load[spec.site], dev, ("p_w", "site_load_w"))
        fam = device_registry.family(spec.family)
        for attr in (*fam.measurements, "rejected"):
            record(dev, attr, "devices", f"{spec.id}.{attr}")
        meta_site[spec.site]["devices"].append(spec.id)

    # -- controllers ------------------------------------------------------------------------------------------
    start_unix = sc.start.timestamp()
    for ctl in sc.controllers:
        if ctl.kind == "gesscon":
            params = GessconParams.model_validate(ctl.params)
            lessag = LessagParams.model_validate(params.lessag)
            if params.execute != "lessag" or lessag.mode != "profess" or params.forecast != "perfect" \
                    or lessag.profess.forecast != "perfect":
                raise NotImplementedError("naive GESSCon: LESSAg in profess mode with perfect forecasts only")
            pp_ = lessag.profess
            ci_h, ce_h = prices_at(3600)
            ci_q, ce_q = prices_at(pp_.step_s)
            batteries, pv_kwp, load_h, pv_h = {}, {}, {}, {}
            for dev_id in ctl.devices:
                spec = next(d for d in sc.devices if d.id == dev_id)
                fam = device_registry.family(spec.family)
                cfg: Any = fam.parse_config(spec.config)  # a battery family's config
                site = next(s for s in sc.sites if s.id == spec.site)
                b = cfg.battery
                batteries[dev_id] = SiteBattery(
                    capacity_wh=b.capacity_wh, p_charge_max_w=b.p_charge_max_w, p_discharge_max_w=b.p_discharge_max_w,
                    eta_charge=b.eta_charge, eta_discharge=b.eta_discharge, soc_min=b.soc_min, soc_max=b.soc_max,
                    self_discharge_per_day=b.self_discharge_per_day, contract_import_w=site.contract_import_w,
                    contract_export_w=site.contract_export_w, inverter_ac_max_w=getattr(cfg, "ac_max_w", None))
                pv_kwp[dev_id] = cfg.pv_kwp * cfg.eta_inverter
                load_h[dev_id] = _block_means(truth[site.id]["load"], 3600 // step).tolist()
                pv_h[dev_id] = _block_means(truth[site.id]["pv"], 3600 // step).tolist()
            gsim = world.start("Gesscon", step_size=step, config=params.gesscon_config().model_dump(), pv_kwp=pv_kwp,
                               load_truth_w=load_h, pv_truth_w_per_kwp=pv_h, import_eur_per_kwh=ci_h.tolist(),
                               export_eur_per_kwh=ce_h.tolist(), start_unix_s=start_unix, plan_at_s=params.plan_at_s)
            lsim = world.start("Lessag", step_size=step)
            for dev_id, sb in batteries.items():
                spec = next(d for d in sc.devices if d.id == dev_id)
                cfg = device_registry.family(spec.family).parse_config(spec.config)
                ess = gsim.Ess(site=GessconSite(
                    id=dev_id, capacity_wh=sb.capacity_wh, p_charge_max_w=sb.p_charge_max_w,
                    p_discharge_max_w=sb.p_discharge_max_w, eta_charge=sb.eta_charge, eta_discharge=sb.eta_discharge,
                    soc_min=sb.soc_min, soc_max=sb.soc_max, self_discharge_per_day=sb.self_discharge_per_day,
                    contract_import_w=sb.contract_import_w, contract_export_w=sb.contract_export_w).model_dump())
                world.connect(devices[dev_id], ess, "e_wh")
                f = pp_.step_s // step
                agent = lsim.Agent(problem=pp_.problem(sb).model_dump(), pv_kwp=cfg.pv_kwp, pv_eta=cfg.eta_inverter,
                                   pv_max_w=cfg.pv_mppt_max_w, load_truth_w=_block_means(truth[spec.site]["load"], f),
                                   pv_truth_w_per_kwp=_block_means(truth[spec.site]["pv"], f),
                                   import_eur_per_kwh=ci_q, export_eur_per_kwh=ce_q, start_unix_s=start_unix,
                                   max_age_s=lessag.max_age_s)
                world.connect(ess, agent, "schedule", "schedule_issued_s")
                world.connect(devices[dev_id], agent, "batt_p_w", "e_wh", "p_charge_avail_w", "p_discharge_avail_w")
                ent, _, _, p_out = pcc[spec.site]
                world.connect(ent, agent, (p_out, "pcc_p_mw"))
                world.connect(agent, devices[dev_id], ("p_set_w", "batt_p_w"), time_shifted=True,
                              initial_data={"p_set_w": 0.0})
        elif ctl.kind == "voltage_control":
            vparams = VoltageParams.model_validate(ctl.params)
            vsim = world.start("Voltage", step_size=step)
            for dev_id in ctl.devices:
                spec = next(d for d in sc.devices if d.id == dev_id)
                cfg = device_registry.family(spec.family).parse_config(spec.config)
                c = vsim.VoltVarWatt(params=vparams.model_dump(), p_charge_max_w=cfg.battery.p_charge_max_w,
                                     p_discharge_max_w=cfg.battery.p_discharge_max_w, s_max_va=cfg.s_max_va)
                meter = ents[f"Bus-{bus_of[vparams.bus]}"] if vparams.bus else pcc[spec.site][0]
                world.connect(meter, c, ("Vm[pu]", "v_pu"))
                world.connect(devices[dev_id], c, "p_charge_avail_w", "p_discharge_avail_w")
                world.connect(c, devices[dev_id], "p_w", "q_var", time_shifted=True,
                              initial_data={"p_w": 0.0, "q_var": 0.0})

    # -- results: every grid element, device and site into the collector ---------------------------------------
    record(ext, "P[MW]", "grid", "grid.p_slack_w", 1e6)
    record(ext, "Q[MVar]", "grid", "grid.q_slack_var", 1e6)
    record(ext, "Ploss[MW]", "grid", "grid.losses_w", 1e6)
    for name, idx in zip(model.bus_names, model.bus_index):
        for ph in "abc":
            record(ents[f"Bus-{idx}"], f"Vm_{ph}[pu]", "buses", f"{name}.v_{ph}_pu")
    for name, idx in zip(model.line_names, model.line_index):
        record(ents[f"Line-{idx}"], "loading[%]", "lines", f"{name}.loading_pct")
    for name, idx in zip(model.trafo_names, model.trafo_index):
        record(ents[f"Trafo-{idx}"], "loading[%]", "trafos", f"{name}.loading_pct")
        record(ents[f"Trafo-{idx}"], "P_hv[MW]", "trafos", f"{name}.p_hv_w", 1e6)
    for attr in ("import_eur_per_kwh", "export_eur_per_kwh"):
        record(price, attr, "prices", f"price.{attr}")
    col_sim = world.start("Collector", step_size=step, out_dir=str(run_dir))
    collector = col_sim.Collector(columns=columns, factors=factors)
    by_ent: dict[Any, list[str]] = {}
    for ent, attr in to_record:
        by_ent.setdefault(ent, []).append(attr)
    for ent, attrs in by_ent.items():
        world.connect(ent, collector, *attrs)

    meta = {
        "scenario": f"{sc.name} (naive composition)", "start": sc.start.isoformat(), "step_s": step,
        "duration_s": duration, "seed": sc.seed, "kpis": sc.kpis.model_dump(),
        "grid": {"mode": g.mode, "solver": "pandapower runpp_3ph", "v_nominal_kv": model.bus_vn_kv,
                 "slack_bus": model.slack_bus, "buses": model.bus_names, "lines": model.line_names,
                 "trafos": model.trafo_names},
        "sites": meta_sites,
        "devices": [{"id": d.id, "family": d.family, "site": d.site, "bus": d.bus, "address": d.address}
                    for d in sc.devices],
        "controllers": [{"id": c.id, "kind": c.kind} for c in sc.controllers],
    }
    (run_dir / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    t_run = time.perf_counter()
    world.run(until=duration, print_progress=False, shutdown=False)
    run_s = time.perf_counter() - t_run
    world.shutdown()  # finalize: the collector closes its files
    wall = time.perf_counter() - t_start
    steps = duration // step
    (run_dir / "run.json").write_text(json.dumps({"scenario": meta["scenario"], "status": "complete",
                                                  "wall_s": round(wall, 3), "steps_done": steps,
                                                  "simulated_s": duration, "duration_s": duration}, indent=1))
    return NaiveResult(run_dir, wall, steps, run_s)
