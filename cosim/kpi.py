"""Key performance indicators of one run, computed from the run directory alone.

``compute(run_dir)`` reads meta.json, run.json and the Parquet tables, writes ``kpis.json`` and returns the dict.
Every KPI, its unit and formula are listed in docs/results.md. Energies are in kWh, powers in kW, keys carry units;
a KPI that cannot be computed (no PV, no prices, no data) is None, never a crash. Presenting them (tables, units,
labels) is :mod:`cosim.kpi_format`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

# The presentation half, re-exported: callers that say kpi.table / kpi.fmt / kpi.flatten keep working.
from cosim.kpi_format import compare_table as compare_table, flatten as flatten, fmt as fmt
from cosim.kpi_format import headline as headline, label as label, show as show, table as table
from cosim.rundir import Table, read_meta, read_run, read_table, run_status

KPI_FILE = "kpis.json"
PHASE_ATTRS = {"v_pu": "pos", "v_a_pu": "a", "v_b_pu": "b", "v_c_pu": "c"}
# Keys of site KPIs that are energies (or money) and therefore add up over sites.
ADDITIVE_KEYS = (
    "import_kwh",
    "export_kwh",
    "load_kwh",
    "pv_kwh",
    "pv_curtailed_kwh",
    "bill_eur",
    "batt_charge_kwh",
    "batt_discharge_kwh",
    "batt_throughput_kwh",
)
# Keys of every site and of the total, in the order tables show them.
SITE_KEYS = (
    "import_kwh",
    "export_kwh",
    "load_kwh",
    "pv_kwh",
    "self_consumption_ratio",
    "self_sufficiency_ratio",
    "peak_import_kw",
    "peak_export_kw",
    "pv_curtailed_kwh",
    "pv_curtailed_pct",
    "bill_eur",
    "batt_charge_kwh",
    "batt_discharge_kwh",
    "batt_throughput_kwh",
    "batt_capacity_kwh",
    "batt_efc",
    "soc_min",
    "soc_max",
    "v_min_pu",
    "v_max_pu",
)
DEFAULT_V_BAND = (0.9, 1.1)
DEFAULT_V_BAND_TIGHT = (0.95, 1.05)
_EMPTY = np.empty(0)

Num = float | None


# ---------------------------------------------------------------- small numeric helpers


def _num(x: Any) -> Num:
    """A JSON-safe float: NaN and inf become None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _kwh(p_w: np.ndarray | None, dt_h: float) -> Num:
    """Energy of a mean-power series (W per step) in kWh; NaN steps count as no energy."""
    return None if p_w is None else float(np.nansum(p_w)) * dt_h / 1000.0


def _split(p_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive part, magnitude of the negative part) per step; a NaN step counts as 0 in both."""
    return np.where(p_w > 0, p_w, 0.0), np.where(p_w < 0, -p_w, 0.0)


def _peak_kw(p_w: np.ndarray | None) -> Num:
    """Largest value in kW, never below 0 (no import at all is a peak import of 0); None without data."""
    if p_w is None or not np.isfinite(p_w).any():
        return None
    return max(float(np.nanmax(p_w)), 0.0) / 1000.0


def _nanmin(x: np.ndarray | None) -> Num:
    return None if x is None or not np.isfinite(x).any() else float(np.nanmin(x))


def _nanmax(x: np.ndarray | None) -> Num:
    return None if x is None or not np.isfinite(x).any() else float(np.nanmax(x))


def _sum_series(series: Iterable[np.ndarray | None]) -> np.ndarray | None:
    """Per-step sum of several series; a step is NaN only when every series is NaN there."""
    present = [s for s in series if s is not None]
    if not present:
        return None
    stacked = np.vstack(present)
    out: np.ndarray = np.nansum(stacked, axis=0)
    out[~np.isfinite(stacked).any(axis=0)] = np.nan
    return out


def _ratio(num: Num, den: Num) -> Num:
    """num/den clamped to [0, 1]; None when undefined."""
    if num is None or den is None or den <= 0:
        return None
    return min(max(num / den, 0.0), 1.0)


def _sum(values: Iterable[Num]) -> Num:
    present = [v for v in values if v is not None]
    return float(sum(present)) if present else None


# ---------------------------------------------------------------- run data


@dataclass(frozen=True)
class RunData:
    """What the KPIs need from a run directory, read once."""

    meta: dict[str, Any]
    step_s: int
    tables: dict[str, Table]

    @property
    def dt_h(self) -> float:
        return self.step_s / 3600.0

    @property
    def v_band(self) -> tuple[float, float]:
        """The wide voltage band in pu: meta.json kpis.v_band_pu (set by the scenario), else EN 50160 ±10 %."""
        lo, hi = self.meta.get("kpis", {}).get("v_band_pu") or DEFAULT_V_BAND
        return float(lo), float(hi)

    @property
    def v_band_tight(self) -> tuple[float, float]:
        """The tight voltage band in pu: meta.json kpis.v_band_tight_pu, else ±5 %."""
        lo, hi = self.meta.get("kpis", {}).get("v_band_tight_pu") or DEFAULT_V_BAND_TIGHT
        return float(lo), float(hi)

    @property
    def warmup_s(self) -> int:
        """Seconds at the start left out of the peak powers: meta.json kpis.warmup when the scenario sets it, else
        one step when the run has controllers (a control loop closes with a one-step delay: at step 0 no setpoint
        has reached a device yet), else 0."""
        given = self.meta.get("kpis", {}).get("warmup")
        if given is not None:
            return int(given)
        return self.step_s if self.meta.get("controllers") else 0

    @overload
    def after_warmup(self, x: np.ndarray) -> np.ndarray: ...
    @overload
    def after_warmup(self, x: None) -> None: ...
    @overload
    def after_warmup(self, x: np.ndarray | None) -> np.ndarray | None: ...

    def after_warmup(self, x: np.ndarray | None) -> np.ndarray | None:
        """The steps of a series after the warm-up (all of them if the run is not longer than the warm-up)."""
        if x is None:
            return None
        n = -(-self.warmup_s // self.step_s)
        return x[n:] if len(x) > n else x

    def col(self, table_name: str, ident: str, attr: str) -> np.ndarray | None:
        t = self.tables.get(table_name)
        return None if t is None else t.get(ident, attr)

    @property
    def steps(self) -> int:
        return max((len(t) for t in self.tables.values()), default=0)


KPI_TABLES = ("grid", "buses", "lines", "trafos", "sites", "devices", "prices", "controllers")


def load(run_dir: str | Path) -> RunData:
    meta = read_meta(run_dir)
    tables = {n: t for n in KPI_TABLES if (t := read_table(run_dir, n)) is not None}
    # One recorder writes one row per table per step; prices written elsewhere may be coarser and hold until
    # the next price.
    ref = tables.get("sites", tables.get("grid"))
    if "prices" in tables and ref is not None:
        tables["prices"] = tables["prices"].aligned(ref.t_s, ffill=True)
    return RunData(meta=meta, step_s=int(meta["step_s"]), tables=tables)


# ---------------------------------------------------------------- devices


def _capacity_wh(dev_meta: dict[str, Any], e_wh: np.ndarray | None, soc: np.ndarray | None) -> Num:
    """Usable capacity: from meta when given, else the median of e_wh/soc (e_wh = soc * capacity)."""
    if dev_meta.get("capacity_wh") is not None:
        return float(dev_meta["capacity_wh"])
    if e_wh is None or soc is None:
        return None
    ok = np.isfinite(e_wh) & np.isfinite(soc) & (soc > 0.05)  # tiny SoC makes the ratio noisy
    return float(np.median(e_wh[ok] / soc[ok])) if ok.any() else None


def device_kpis(run: RunData, dev: dict[str, Any]) -> dict[str, Any]:
    did = dev["id"]
    dt_h = run.dt_h
    pv = run.col("devices", did, "pv_p_w")
    curtail = run.col("devices", did, "pv_curtail_w")
    batt = run.col("devices", did, "batt_p_w")
    soc = run.col("devices", did, "soc")
    cap_wh = _capacity_wh(dev, run.col("devices", did, "e_wh"), soc)
    # pv_p_w ≤ 0 by the load arrow: production is the negative part (a stray + standby value is no production).
    pv_kwh = (_kwh(_split(pv)[1], dt_h) or 0.0) if pv is not None else 0.0
    curtailed = _kwh(curtail, dt_h) or 0.0
    charge, discharge = _split(batt) if batt is not None else (_EMPTY, _EMPTY)
    throughput = (_kwh(charge, dt_h) or 0.0) + (_kwh(discharge, dt_h) or 0.0)
    cap_kwh = None if cap_wh is None else cap_wh / 1000.0
    return {
        "family": dev.get("family"),
        "site": dev.get("site"),
        "net_kwh": _kwh(run.col("devices", did, "p_w"), dt_h),
        "pv_kwh": pv_kwh,
        "pv_curtailed_kwh": curtailed,
        "pv_curtailed_pct": _pct(curtailed, pv_kwh + curtailed),
        "batt_charge_kwh": _kwh(charge, dt_h) or 0.0,
        "batt_discharge_kwh": _kwh(discharge, dt_h) or 0.0,
        "batt_throughput_kwh": throughput,
        "batt_capacity_kwh": cap_kwh,
        "batt_efc": _efc(throughput, cap_kwh),
        "soc_min": _nanmin(soc),
        "soc_max": _nanmax(soc),
    }


def _pct(part: Num, whole: Num) -> Num:
    return None if part is None or whole is None or whole <= 0 else 100.0 * part / whole


def _efc(throughput_kwh: float, capacity_kwh: Num) -> Num:
    """Equivalent full cycles: one cycle is a full charge plus a full discharge."""
    return None if not capacity_kwh else throughput_kwh / (2.0 * capacity_kwh)


# ---------------------------------------------------------------- sites


def _bill_eur(run: RunData, imp: np.ndarray | None, exp: np.ndarray | None) -> Num:
    """Σ (import·import price − export·export price) per step (mean powers in W); a missing export price counts
    as 0 €/kWh."""
    if imp is None or exp is None or "prices" not in run.tables:
        return None
    p_imp = run.col("prices", "price", "import_eur_per_kwh")
    if p_imp is None:
        return None
    p_exp = run.col("prices", "price", "export_eur_per_kwh")
    cost = imp * p_imp - (exp * p_exp if p_exp is not None else 0.0)
    return float(np.nansum(cost)) * run.dt_h / 1000.0


def _register_steps(e_wh: np.ndarray, first_wh: float) -> np.ndarray:
    """Energy per step from a cumulative register recorded at the end of each step. The register before the first
    step is not recorded: ``first_wh`` (from the power reading) stands in for the first step. A register that rolls
    over (a real one keeps a fixed number of digits) is unwrapped at the power of ten above its largest reading."""
    d = np.diff(e_wh, prepend=np.nan)
    d[0] = first_wh
    top = float(np.nanmax(e_wh)) if np.isfinite(e_wh).any() else 0.0
    if top > 0:
        d = np.where(d < 0, d + 10.0 ** (math.floor(math.log10(top)) + 1), d)
    return d


def site_energy(run: RunData, site: dict[str, Any]) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """(net, import, export) mean power per step at a site's PCC, in W. From its meter's registers when the site
    has one (meta.json ``sites[].meter``: a device whose family meters its point), else from the simulated PCC."""
    meter = site.get("meter")
    if meter:
        p = run.col("devices", meter, "p_w")
        e_imp, e_exp = run.col("devices", meter, "e_import_wh"), run.col("devices", meter, "e_export_wh")
        if p is not None and e_imp is not None and e_exp is not None and len(p):
            h = run.dt_h
            p0 = float(p[0]) if math.isfinite(p[0]) else 0.0
            return (p, _register_steps(e_imp, max(p0, 0.0) * h) / h, _register_steps(e_exp, max(-p0, 0.0) * h) / h)
    pcc = run.col("sites", site["id"], "pcc_p_w")
    if pcc is None:
        return None, None, None
    imp, exp = _split(pcc)
    return pcc, imp, exp


def _site_devices(run: RunData, site: dict[str, Any]) -> list[dict[str, Any]]:
    listed = set(site.get("devices", []))
    return [d for d in run.meta.get("devices", []) if d["id"] in listed or d.get("site") == site["id"]]


def site_kpis(run: RunData, site: dict[str, Any], devices: dict[str, dict[str, Any]]) -> dict[str, Any]:
    sid = site["id"]
    dt_h = run.dt_h
    pcc, imp, exp = site_energy(run, site)
    out: dict[str, Any] = {
        "import_kwh": _kwh(imp, dt_h),
        "export_kwh": _kwh(exp, dt_h),
        "load_kwh": _kwh(run.col("sites", sid, "load_p_w"), dt_h),
        "peak_import_kw": _peak_kw(run.after_warmup(pcc)),
        "peak_export_kw": None if pcc is None else _peak_kw(-run.after_warmup(pcc)),
        "bill_eur": _bill_eur(run, imp, exp),
    }
    devs = [devices[d["id"]] for d in _site_devices(run, site)]
    out |= _aggregate_devices(devs)
    v = _supplied(run, sid, run.col("sites", sid, "v_pu"))
    out |= {"v_min_pu": _nanmin(v), "v_max_pu": _nanmax(v)}
    return _finish(out)


@overload
def _supplied(run: RunData, sid: str, v: np.ndarray) -> np.ndarray: ...
@overload
def _supplied(run: RunData, sid: str, v: np.ndarray | None) -> np.ndarray | None: ...


def _supplied(run: RunData, sid: str, v: np.ndarray | None) -> np.ndarray | None:
    """A site's voltages with the steps of an outage at its PCC (events: grid_present 0) left out: EN 50160 counts
    interruptions apart from voltage variations."""
    present = run.col("sites", sid, "grid_present")
    return v if v is None or present is None else np.where(present > 0.5, v, np.nan)


def _group_capacity(members: Sequence[dict[str, Any]]) -> Num:
    """Σ battery capacity of devices or sites; unknown if any battery's is, rather than understating cycles."""
    caps = [m["batt_capacity_kwh"] for m in members if m["batt_throughput_kwh"] > 0 or m["soc_min"] is not None]
    return None if not caps or any(c is None for c in caps) else float(sum(caps))


def _extremes(members: Sequence[dict[str, Any]]) -> dict[str, Num]:
    def pick(key: str, f: Any) -> Num:
        value: Num = f((m[key] for m in members if m[key] is not None), default=None)
        return value

    return {"soc_min": pick("soc_min", min), "soc_max": pick("soc_max", max)}


def _aggregate_devices(devs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    pv = float(sum(d["pv_kwh"] for d in devs))
    curtailed = float(sum(d["pv_curtailed_kwh"] for d in devs))
    throughput = float(sum(d["batt_throughput_kwh"] for d in devs))
    capacity = _group_capacity(devs)
    return {
        "pv_kwh": pv,
        "pv_curtailed_kwh": curtailed,
        "pv_curtailed_pct": _pct(curtailed, pv + curtailed),
        "batt_charge_kwh": float(sum(d["batt_charge_kwh"] for d in devs)),
        "batt_discharge_kwh": float(sum(d["batt_discharge_kwh"] for d in devs)),
        "batt_throughput_kwh": throughput,
        "batt_capacity_kwh": capacity,
        "batt_efc": _efc(throughput, capacity),
        **_extremes(devs),
    }


def _finish(k: dict[str, Any]) -> dict[str, Any]:
    """Add self-consumption (PV − export)/PV and self-sufficiency 1 − import/load, clamped to [0, 1]; order keys.

    The clamp matters when a battery moves grid energy: export can exceed PV production and import can exceed load.
    """
    pv, exp, imp, load_ = k["pv_kwh"], k["export_kwh"], k["import_kwh"], k["load_kwh"]
    k["self_consumption_ratio"] = None if exp is None or not pv else _ratio(pv - exp, pv)
    k["self_sufficiency_ratio"] = None if imp is None or not load_ else _ratio(load_ - imp, load_)
    return {key: k[key] for key in SITE_KEYS}


def total_kpis(run: RunData, sites: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Sums over sites for energies; peaks are coincident (peak of the summed PCC power), not sums of peaks."""
    members = list(sites.values())
    out: dict[str, Any] = {key: _sum(s[key] for s in members) for key in ADDITIVE_KEYS}
    pcc = _sum_series(site_energy(run, s)[0] for s in run.meta.get("sites", []) if s["id"] in sites)
    capacity = _group_capacity(members)
    v_min = [s["v_min_pu"] for s in members if s["v_min_pu"] is not None]
    v_max = [s["v_max_pu"] for s in members if s["v_max_pu"] is not None]
    out |= {
        "peak_import_kw": _peak_kw(run.after_warmup(pcc)),
        "peak_export_kw": None if pcc is None else _peak_kw(-run.after_warmup(pcc)),
        "pv_curtailed_pct": _pct(out["pv_curtailed_kwh"], (out["pv_kwh"] or 0.0) + (out["pv_curtailed_kwh"] or 0.0)),
        "batt_capacity_kwh": capacity,
        "batt_efc": None if out["batt_throughput_kwh"] is None else _efc(out["batt_throughput_kwh"], capacity),
        **_extremes(members),
        "v_min_pu": min(v_min, default=None),
        "v_max_pu": max(v_max, default=None),
    }
    return _finish(out)


# ---------------------------------------------------------------- grid


def substation_power(run: RunData) -> tuple[str | None, np.ndarray | None]:
    """Power into the modelled network (+ = import from upstream): Σ trafo p_hv_w, else the slack power."""
    trafos = run.tables.get("trafos")
    if trafos is not None and trafos.ids("p_hv_w"):
        return "trafo", _sum_series(trafos.get(t, "p_hv_w") for t in trafos.ids("p_hv_w"))
    slack = run.col("grid", "grid", "p_slack_w")
    return ("slack", slack) if slack is not None else (None, None)


def phase_matrices(run: RunData) -> dict[str, tuple[list[str], np.ndarray]]:
    """phase -> (buses, voltages (steps, buses)), slack bus excluded (its voltage is set, not a result)."""
    buses = run.tables.get("buses")
    if buses is None:
        return {}
    slack = run.meta.get("grid", {}).get("slack_bus")
    out = {}
    for attr, phase in PHASE_ATTRS.items():
        ids = [b for b in buses.ids(attr) if b != slack]
        if ids:
            out[phase] = buses.matrix(attr, ids)
    return out


def _extreme(t_s: np.ndarray, ids: list[str], m: np.ndarray, which: str) -> dict[str, Any]:
    """min or max of a (steps, ids) matrix with where and when it occurred; Nones without data."""
    if not np.isfinite(m).any():
        return {f"{which}_pu": None, f"{which}_bus": None, f"{which}_t_s": None}
    flat = np.nanargmin(m) if which == "min" else np.nanargmax(m)
    i, j = np.unravel_index(flat, m.shape)
    return {f"{which}_pu": float(m[i, j]), f"{which}_bus": ids[j], f"{which}_t_s": int(t_s[i])}


def _outside(v: np.ndarray, band: tuple[float, float]) -> int:
    """Values strictly outside the band (NaN is not counted). Compared with the limits themselves:
    |v − 1| > 0.1 would count v = 1.1 by rounding."""
    return int(np.count_nonzero((v < band[0]) | (v > band[1])))


def voltage_kpis(run: RunData) -> dict[str, Any]:
    """EN 50160 node-minutes outside ±10 % and ±5 % (each bus-phase per step counts step_s/60 min; NaN = no phase)."""
    phases = phase_matrices(run)
    minutes = run.step_s / 60.0
    out10 = out5 = 0
    per_phase: dict[str, Any] = {}
    t_s = run.tables["buses"].t_s if phases else _EMPTY
    for phase, (ids, m) in phases.items():
        out10 += _outside(m, run.v_band)
        out5 += _outside(m, run.v_band_tight)
        per_phase[phase] = _extreme(t_s, ids, m, "min") | _extreme(t_s, ids, m, "max")
    return {
        "v_band_pu": list(run.v_band),
        "v_band_tight_pu": list(run.v_band_tight),
        "v_minutes_outside_10pct": out10 * minutes if phases else None,
        "v_minutes_outside_5pct": out5 * minutes if phases else None,
        "voltage": per_phase,
    }


def _max_loading(run: RunData, table_name: str) -> tuple[Num, str | None]:
    t = run.tables.get(table_name)
    if t is None or not t.ids("loading_pct"):
        return None, None
    ids, m = t.matrix("loading_pct")
    if not np.isfinite(m).any():
        return None, None
    _, j = np.unravel_index(np.nanargmax(m), m.shape)
    return float(m.flat[np.nanargmax(m)]), ids[j]


def _site_voltage_ok(run: RunData) -> bool | None:
    """Pilot target: every PCC voltage within 230 V ±10 % (site v_pu in the wide band) at every recorded step."""
    sites = run.tables.get("sites")
    ids = sites.ids("v_pu") if sites is not None else []
    if sites is None or not ids:
        return None
    _, m = sites.matrix("v_pu", ids)
    m = np.column_stack([_supplied(run, sid, m[:, j]) for j, sid in enumerate(ids)]) if len(ids) else m
    if not np.isfinite(m).any():
        return None
    return _outside(m, run.v_band) == 0


def grid_kpis(run: RunData) -> dict[str, Any]:
    source, p = substation_power(run)
    imp, exp = _split(p) if p is not None else (None, None)
    import_kwh = _kwh(imp, run.dt_h)
    losses_kwh = _kwh(run.col("grid", "grid", "losses_w"), run.dt_h)
    line_pct, line = _max_loading(run, "lines")
    trafo_pct, trafo = _max_loading(run, "trafos")
    return {
        "power_source": source,
        "peak_import_kw": _peak_kw(run.after_warmup(p)),
        "peak_export_kw": None if p is None else _peak_kw(-run.after_warmup(p)),
        "import_kwh": import_kwh,
        "export_kwh": _kwh(exp, run.dt_h),
        "losses_kwh": losses_kwh,
        "losses_pct_of_import": _pct(losses_kwh, import_kwh),
        **voltage_kpis(run),
        "max_line_loading_pct": line_pct,
        "max_line_loading_line": line,
        "max_trafo_loading_pct": trafo_pct,
        "max_trafo_loading_trafo": trafo,
        "v_within_10pct": _site_voltage_ok(run),
    }


# ---------------------------------------------------------------- entry points


def run_info(run_dir: str | Path, run: RunData) -> dict[str, Any]:
    meta = run.meta
    duration = meta.get("duration_s")
    expected = int(duration) // run.step_s if duration else None
    return {
        "scenario": meta.get("scenario"),
        "status": run_status(run_dir),
        "start": meta.get("start"),
        "step_s": run.step_s,
        "steps_expected": expected,
        "steps_recorded": run.steps,
        "simulated_s": run.steps * run.step_s,
        "wall_time_s": _wall_time(read_run(run_dir) or {}),
        "warmup_s": run.warmup_s,
    }


def _wall_time(run_json: dict[str, Any]) -> Num:
    wall = run_json.get("wall_s", run_json.get("wall_time_s"))
    return None if wall is None else float(wall)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return _num(x)
    return x


def ev_kpis(run_dir: Path) -> dict[str, Any]:
    """Charging KPIs per EV fleet and in total, from sessions.jsonl (written by the EV fleet simulator)."""
    path = run_dir / "sessions.jsonl"
    if not path.is_file():
        return {}
    from simulators.ev_fleet import read_sessions, session_kpis

    _, sites = read_sessions(path)
    fleets = {s["site"]: session_kpis(path, site=s["site"]) for s in sites}
    return {"ev": {"total": session_kpis(path), "fleets": fleets}}


def _pilot(run: RunData) -> dict[str, Any]:
    """The scenario's pilot KPIs beside their targets (``kpis.pilot``; cosim/pilot_kpis.py)."""
    from cosim import pilot_kpis

    pilot = pilot_kpis.compute(run)
    return {} if pilot is None else {"pilot": pilot}


def compute(run_dir: str | Path, data: RunData | None = None) -> dict[str, Any]:
    """All KPIs of the run in ``run_dir``; also written to ``run_dir/kpis.json``.

    ``data``: the run's tables when the caller has already loaded them (:func:`load`), to avoid a second read.
    """
    run_dir = Path(run_dir)
    run = load(run_dir) if data is None else data
    devices = {d["id"]: device_kpis(run, d) for d in run.meta.get("devices", [])}
    sites = {s["id"]: site_kpis(run, s, devices) for s in run.meta.get("sites", [])}
    kpis: dict[str, Any] = _json_safe(
        {
            "run": run_info(run_dir, run),
            "total": total_kpis(run, sites),
            "grid": grid_kpis(run),
            "sites": sites,
            "devices": devices,
            **ev_kpis(run_dir),
            **_pilot(run),
        }
    )
    (run_dir / KPI_FILE).write_text(json.dumps(kpis, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return kpis


def read(run_dir: str | Path) -> dict[str, Any]:
    """kpis.json of a run (computed by :func:`compute`)."""
    kpis: dict[str, Any] = json.loads((Path(run_dir) / KPI_FILE).read_text(encoding="utf-8"))
    return kpis
