"""Scaling: the pilot's logic on larger grids -- wall time per simulated day, so users see how cost grows.

    python -m benchmarks.scaling [--quick]
    python -m benchmarks.scaling --write-scenarios     # regenerate benchmarks/scenarios/*.yaml

Two SimBench grids (offline, from the ``simbench`` package), each with the pilot's logic: every load is a site
with a load profile (the small grid: its own SimBench profile; the large grid: S4G residential profiles for the
households and the S4G commercial profile at each load's rating for the rest -- SimBench's profiles of 5373 loads
would take ~6 GB of memory, see docs/performance.md); every second household has rooftop PV (``pv_battery``, no
battery), every fourth PV + a 9.6 kWh battery under the rule-based self-consumption controller, and one household in
twenty a Fronius hybrid with a 4.5 kWh battery under PROFESS (15-minute MPC over 24 h). Non-household loads
(farms, commerce, MV customers) are sites with their profiles and no devices. Balanced power flow (SimBench data
are balanced), 1-minute steps, no message broker (its cost is per message, see the race and ``messaging``).

* ``1-LV-rural3--0-sw``: 129 buses, 118 loads (one LV feeder);
* ``1-MVLV-rural-all-0-sw``: 5479 buses, 5373 loads, 92 MV/LV transformers (an MV ring with all its LV grids).

The scenarios are generated (:func:`write_scenarios`) into ``benchmarks/scenarios/``. Each run is a fresh
process (see :mod:`benchmarks.memory`); the figure is the stepping time scaled to one day when the run is
shorter than a day (the large grid runs a few hours), world building is reported apart.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.common import median_spread, print_rows, row
from benchmarks.memory import run_child, tiny

HERE = Path(__file__).resolve().parent / "scenarios"
GRIDS = {
    "lv_rural3": ("1-LV-rural3--0-sw", "SimBench 1-LV-rural3"),
    "mvlv_rural_all": ("1-MVLV-rural-all-0-sw", "SimBench 1-MVLV-rural-all"),
}
# SimBench's own profiles for the small grid; for the large one they would cost ~6 GB (simbench's absolute profiles
# of all 5373 loads for a whole year, plus one copy per load in simulators.profiles): S4G profiles there.
SIMBENCH_PROFILES = {"lv_rural3"}
BATTERY = ("{capacity_wh: 9600, p_charge_max_w: 4800, p_discharge_max_w: 4800, eta_charge: 0.96, "
           "eta_discharge: 0.96, soc_min: 0.05, soc_max: 1.0, soc_init: 0.5}")
FRONIUS_BATTERY = ("{capacity_wh: 4500, p_charge_max_w: 2400, p_discharge_max_w: 2400, eta_charge: 0.96, "
                   "eta_discharge: 0.96, soc_min: 0.05, soc_max: 1.0, soc_init: 0.3, self_discharge_per_day: 0.001}")


def _q(s: str) -> str:
    return '"' + s.replace('"', '\\"') + '"'


def scenario_yaml(key: str) -> str:
    """The scenario of one grid: sites for every load, devices and controllers as the module docstring says."""
    from simulators.grid_loaders import load_simbench
    from simulators.profiles import s4g_columns

    code, label = GRIDS[key]
    model = load_simbench(code)
    net = model.net
    simbench_profiles = key in SIMBENCH_PROFILES
    if simbench_profiles:
        pv = f"{{source: simbench, element: {_q(str(net.sgen.name.iloc[0]))}}}"  # one SimBench PV profile
    else:
        pv = "{source: s4g-pv, column: fur_denmark}"
        columns = s4g_columns("s4g-residential")
    sites: list[str] = []
    devices: list[str] = []
    rule: list[str] = []
    mpc: list[str] = []
    house = 0
    for info in model.loads:
        row = net.load.loc[info.index]
        sid = f"s{len(sites):05d}"
        is_house = str(row.get("profile", "")).startswith("H0") and float(net.bus.at[row.bus, "vn_kv"]) < 1.0
        if simbench_profiles:
            load = f"{{source: simbench, element: {_q(str(row['name']))}}}"
        elif is_house:
            load = f"{{source: s4g-residential, column: {columns[house % len(columns)]}, power_factor: 0.95}}"
        else:  # farms, commerce, MV customers: the S4G commercial profile at the SimBench load's rating
            load = (f"{{source: s4g-commercial, column: commercial_general, scale: {float(row.p_mw) * 1e3:.4g}, "
                    "power_factor: 0.95}")
        site = f"  - {{id: {sid}, grid_load: {_q(info.name)}, load: {load}"
        if is_house:
            house += 1
            if house % 20 == 0:
                site += f", pv_profile: {pv}"
                devices.append(f"  - {{id: f{sid}, family: fronius, site: {sid}, config: {{pv_kwp: 5, ac_max_w: 5000, "
                               f"battery: {FRONIUS_BATTERY}}}}}")
                mpc.append(f"f{sid}")
            elif house % 2 == 0:
                site += f", pv_profile: {pv}"
                kwp = 4 + house % 7
                if house % 4 == 0:
                    devices.append(f"  - {{id: b{sid}, family: pv_battery, site: {sid}, config: {{pv_kwp: {kwp}, "
                                   f"ac_max_w: {max(kwp, 5) * 1000}, battery: {BATTERY}}}}}")
                    rule.append(f"b{sid}")
                else:
                    devices.append(f"  - {{id: p{sid}, family: pv_battery, site: {sid}, config: {{pv_kwp: {kwp}, "
                                   f"ac_max_w: {kwp * 1000}}}}}")
        sites.append(site + "}")
    big = len(sites) > 1000
    profiles = ("SimBench load profiles" if simbench_profiles
                else "S4G load profiles (households: residential, others: commercial)")
    return f"""# Generated by `python -m benchmarks.scaling --write-scenarios` (do not edit): the Fur/Skive pilot's logic on
# {label} -- {len(sites)} sites ({house} households, {profiles}), {len(devices)} devices,
# {len(rule)} batteries under the rule-based controller, {len(mpc)} under PROFESS. See benchmarks/scaling.py.
name: scaling_{key}
description: pilot logic on {label} ({len(net.bus)} buses, {len(sites)} loads)
start: 2016-06-15T00:00:00+02:00
timezone: Europe/Berlin
duration: 1d
step: 1min
seed: 1
grid: {{source: simbench, code: {code}, mode: balanced, solver: fast}}
outputs: {{device_attrs: [p_w, pv_p_w, batt_p_w, soc, e_wh, pv_curtail_w], buses: true, lines: true, flush_rows: {360 if big else 1440}}}
sites:
{chr(10).join(sites)}
devices:
{chr(10).join(devices)}
controllers:
  - {{id: self_consumption, kind: self_consumption, devices: [{", ".join(rule)}]}}
  - {{id: profess, kind: profess, devices: [{", ".join(mpc)}], params: {{objective: min_grid_exchange, step_s: 900}}}}
"""


def write_scenarios() -> list[Path]:
    HERE.mkdir(exist_ok=True)
    out = []
    for key in GRIDS:
        path = HERE / f"scaling_{key}.yaml"
        path.write_text(scenario_yaml(key), encoding="utf-8")
        out.append(path)
    return out


def plan(quick: bool) -> list[tuple[str, int]]:
    """(grid key, simulated seconds) per run."""
    if tiny():
        return [("lv_rural3", 300)]
    if quick:  # the large grid alone takes ~1.5 min to build: full run only
        return [("lv_rural3", 3600)]
    return [("lv_rural3", 86400), ("mvlv_rural_all", 2 * 3600)]


def run(quick: bool) -> list[dict]:
    rows = []
    for key, secs in plan(quick):
        path = HERE / f"scaling_{key}.yaml"
        if not path.exists():
            write_scenarios()
        res = run_child(secs, scenario=path, variant="")
        steps = res["steps"]
        per_day = res["run_s"] * 86400 / secs
        label = GRIDS[key][1]
        span = f"{secs // 3600} h" if secs >= 3600 else f"{secs // 60} min"
        days = res["day_s"]
        ours = median_spread(days) if len(days) >= 2 else per_day
        rows.append(row(f"scaling: {label}, wall time per simulated day (stepping, from {span})", ours, None, "s/day"))
        rows.append(row(f"scaling: {label}, CPU time per simulated day (stepping, from {span}; less sensitive to a "
                        "busy machine)", res["run_cpu_s"] * 86400 / secs, None, "s/day"))
        rows.append(row(f"scaling: {label}, building the world and closing the run", res["wall_s"] - res["run_s"],
                        None, "s"))
        rows.append(row(f"scaling: {label}, peak RSS", res["peak_rss_mb"], None, "MB"))
        rows[-4]["notes"] = {"steps": steps}
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write-scenarios", action="store_true")
    args = parser.parse_args()
    if args.write_scenarios:
        for p in write_scenarios():
            print(f"written: {p} ({p.stat().st_size // 1024} KiB)")
        sys.exit(0)
    print_rows(run(args.quick), title="scaling")
