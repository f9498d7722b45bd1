"""A pilot's own KPIs, each beside the pilot's target (met / not met), from the run directory alone.

A scenario names its pilot in ``kpis.pilot``; :func:`compute` then adds ``kpis.json["pilot"]`` =
``{"name", "rows": [{"key", "label", "value", "unit", "target", "met"}]}`` (``met`` is None where the KPI has
no target, or cannot be computed in this run). The general KPIs are cosim/kpi.py; this module only reads the
tables it is given (``run``: a cosim.kpi.RunData) and the run's events.

Bucharest (the Energy Router site; targets from the S4G pilot facts):

- storage service deviation: mean |delivered − requested battery power| over the grid-connected steps in which a
  controller requested one (the request applies one step after it is sent), as % of the mean |PCC power|: ≤ 10 %.
- black start: the longest island the router formed from its battery with 100-500 W of AC load served and the AC
  voltage within ±10 %: held ≥ 5 min (the pilot's 5-15 min test).
- DC load in an outage: the longest time during an outage with the DC loads served up to 100 W and the DC bus
  within ±10 % of nominal: ≥ 30 min (the pilot's 30-60 min test).
- export / contracted power: peak PCC export over the site's contracted power: < 10 %.
- curtailment: PV energy curtailed over PV production: < 20 %.
- grid share of the load: PCC import over all the site's load energy (AC at the PCC, the router's AC and DC
  loads): < 70 %.
- energy not served during outages (the site's AC loads at the open PCC plus what the router shed), time to restore
  (grid back → router grid-connected again), DC bus voltage min / max over energised steps, operating-state changes.

Bolzano residential, per house: peak PCC import (15-min means, as a meter's demand register) after the warm-up
≤ 10 kW, and ≤ the run without S4G (a row with a ``relative`` target, judged by ``s4g compare`` against the
scenario's ``kpis.reference_variant``); peak export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable

import numpy as np

PILOTS = ("bucharest", "bolzano_residential")
ENERGISED = (2, 3, 4, 5, 6)  # the router's states with the DC bus up (devices/energy_router: STATE_NAMES)
GRID, ISLAND, RESYNC = 6, 4, 5


def _row(key: str, label: str, value: float | None, unit: str, target: str, met: bool | None) -> dict[str, Any]:
    return {"key": key, "label": label, "value": None if value is None or not np.isfinite(value) else float(value),
            "unit": unit, "target": target, "met": met}


def _longest(mask: np.ndarray) -> int:
    """Length of the longest run of True."""
    best = cur = 0
    for x in mask:
        cur = cur + 1 if x else 0
        best = max(best, cur)
    return best


def _cmp(value: float | None, ok: bool) -> bool | None:
    return None if value is None or not np.isfinite(value) else bool(ok)


def _router(run: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The pilot's router (the first energy_router device) and its site."""
    dev = next((d for d in run.meta.get("devices", []) if d.get("family") == "energy_router"), None)
    if dev is None:
        return None, None
    site = next((s for s in run.meta.get("sites", []) if s["id"] == dev.get("site")), None)
    return dev, site


def _requested(run: Any, dev_id: str) -> np.ndarray | None:
    """The battery power a controller asked of the router for each step (sent one step earlier)."""
    t = run.tables.get("controllers")
    if t is None:
        return None
    cols = [c for c in t.columns if c.endswith((f"/{dev_id}.batt_set_w", f"/{dev_id}.p_set_w"))]
    if not cols:
        return None
    sent = np.asarray(t.columns[cols[0]], dtype=float)
    return cast(np.ndarray, np.r_[np.nan, sent[:-1]])


def bucharest(run: Any) -> list[dict[str, Any]]:
    dev, site = _router(run)
    if dev is None or site is None:
        return [_row("router", "Energy Router at a site", None, "", "present", False)]
    did, sid, dt_h = dev["id"], site["id"], run.dt_h
    # a column the router did not record is None; the checks below go by n (the length of its state column)
    col: Callable[[str], Any] = lambda attr: run.col("devices", did, attr)  # noqa: E731
    state, batt = col("state"), col("batt_p_w")
    pcc = run.col("sites", sid, "pcc_p_w")
    n = len(state) if state is not None else 0
    steps_min = run.step_s / 60.0
    rows = []

    # storage service: delivered vs requested battery power while grid-connected
    req = _requested(run, did)
    dev_pct = None
    if req is not None and batt is not None and pcc is not None:
        ok = (state == GRID) & np.isfinite(req) & np.isfinite(batt)
        mean_pcc = float(np.nanmean(np.abs(pcc)))
        if ok.any() and mean_pcc > 0:
            dev_pct = 100.0 * float(np.mean(np.abs(batt[ok] - req[ok]))) / mean_pcc
    rows.append(_row("storage_service_deviation_pct", "storage service deviation (of mean PCC power)", dev_pct, "%",
                     "≤ 10 %", _cmp(dev_pct, (dev_pct or 0) <= 10.0)))

    # outages as the router saw them (its grid_present), island episodes, black start
    grid_in = col("grid_present")
    outage = (grid_in < 0.5) if grid_in is not None else np.zeros(n, dtype=bool)
    v_ac, ac = col("v_v"), col("ac_load_w")
    v_nom = 230.0
    island = np.isin(state, (ISLAND, RESYNC)) if n else np.zeros(0, dtype=bool)
    held_ok = island & (ac >= 100.0 - 1e-6) & (ac <= 500.0 + 1e-6) & (np.abs(v_ac - v_nom) <= 0.1 * v_nom)
    mc = col("mode_changes")
    black_started = bool(n and mc is not None and outage.any() and np.nanmax(np.diff(mc, prepend=mc[0])) >= 3)
    held = _longest(held_ok) * steps_min if n else None
    rows.append(_row("black_start_island_held_min", "black start: 100-500 W island held within ±10 % V", held,
                     "min", "≥ 5 min (5-15 min test)",
                     None if not outage.any() else bool(black_started and (held or 0) >= 5.0)))

    # a 100 W DC load kept during an outage within ±10 % of the DC bus voltage
    dc, dem = col("dc_load_w"), run.col("sites", sid, "dc_load_p_w")
    vmin, vmax = col("v_dc_min_v"), col("v_dc_max_v")
    v_dc_nom = float((dev.get("config") or {}).get("dc_v_nom_v") or 400.0)
    dc_held = None
    if outage.any() and dc is not None and vmin is not None:
        want = np.minimum(dem if dem is not None else np.full(n, 100.0), 100.0)
        kept = outage & (dc >= want - 0.5) & (vmin >= 0.9 * v_dc_nom) & (vmax <= 1.1 * v_dc_nom)
        dc_held = _longest(kept) * steps_min
    rows.append(_row("dc_load_held_min", "100 W DC load kept in an outage within ±10 % V_dc", dc_held, "min",
                     "≥ 30 min (30-60 min test)", None if dc_held is None else dc_held >= 30.0))

    contract = site.get("contract_import_w")
    exp_pct = None
    if pcc is not None and contract:
        exp_pct = 100.0 * max(float(np.nanmax(-pcc)), 0.0) / float(contract)
    rows.append(_row("export_contract_pct", "peak export / contracted power", exp_pct, "%", "< 10 %",
                     _cmp(exp_pct, (exp_pct or 0) < 10.0)))

    pv, curt = col("pv_p_w"), col("pv_curtail_w")
    curt_pct = None
    if pv is not None and curt is not None:
        prod = float(np.nansum(np.maximum(-pv, 0.0)))
        lost = float(np.nansum(np.maximum(curt, 0.0)))
        curt_pct = 100.0 * lost / (prod + lost) if prod + lost > 0 else None
    rows.append(_row("curtailment_pct", "PV curtailed / PV production", curt_pct, "%", "< 20 %",
                     _cmp(curt_pct, (curt_pct or 0) < 20.0)))

    site_load = run.col("sites", sid, "load_p_w")
    share = None
    if pcc is not None:
        load_wh = sum(float(np.nansum(x)) for x in (site_load, ac, dc) if x is not None) * dt_h
        imp_wh = float(np.nansum(np.maximum(pcc, 0.0))) * dt_h
        share = 100.0 * imp_wh / load_wh if load_wh > 0 else None
    rows.append(_row("grid_share_pct", "grid share of the load energy", share, "%", "< 70 %",
                     _cmp(share, (share or 0) < 70.0)))

    # no targets: what an outage cost, how fast the grid connection came back, the DC bus, the state changes
    site_present = run.col("sites", sid, "grid_present")
    open_pcc = (site_present < 0.5) if site_present is not None else outage
    unserved = col("unserved_w")
    ens = None
    if open_pcc.any():
        ens = float(np.nansum(site_load[open_pcc]) if site_load is not None else 0.0) * dt_h
        ens += float(np.nansum(unserved[outage | open_pcc]) if unserved is not None else 0.0) * dt_h
    rows.append(_row("energy_not_served_wh", "energy not served during outages", ens, "Wh", "", None))
    restore = None
    if outage.any() and n:
        t = run.tables["devices"].t_s
        waits = []
        for k in np.flatnonzero(outage[:-1] & ~outage[1:]) + 1:  # first step with the grid back
            back = np.flatnonzero(state[k:] == GRID)
            if back.size:
                waits.append(float(t[k + back[0]] - t[k]) + run.step_s)
        restore = max(waits) if waits else None
    rows.append(_row("time_to_restore_s", "time to restore (grid back → grid-connected)", restore, "s", "", None))
    if n and vmin is not None and vmax is not None:
        # energised through the whole step: at its start and end, with no state change in between (a black start's
        # precharge ramps the bus from 0 V)
        still = np.diff(mc, prepend=mc[0]) == 0 if mc is not None else np.ones(n, dtype=bool)
        up = np.isin(state, ENERGISED) & np.isin(np.r_[state[0], state[:-1]], ENERGISED) & still
        lo = float(np.nanmin(vmin[up])) if up.any() else None
        hi = float(np.nanmax(vmax[up])) if up.any() else None
    else:
        lo = hi = None
    rows.append(_row("v_dc_min_v", "DC bus voltage min (energised)", lo, "V", "", None))
    rows.append(_row("v_dc_max_v", "DC bus voltage max (energised)", hi, "V", "", None))
    changes = float(mc[-1] - mc[0]) if mc is not None and n else None
    rows.append(_row("mode_changes", "operating-state changes", changes, "", "", None))
    return rows


DEMAND_PERIOD_S = 900  # a meter's demand register: the mean power over each quarter-hour


def demand_w(run: Any, p_w: np.ndarray | None) -> np.ndarray | None:
    """Means over the meter's demand period (15 min; the step itself when the step does not divide it), so a peak is
    the one the SMM's demand register and the contract see, not a single step in which a controller has not yet
    answered a load (a setpoint applies one step after the reading)."""
    if p_w is None:
        return None
    n = DEMAND_PERIOD_S // run.step_s if run.step_s <= DEMAND_PERIOD_S and DEMAND_PERIOD_S % run.step_s == 0 else 1
    k = len(p_w) // n * n
    return np.asarray(p_w[:k], dtype=float).reshape(-1, n).mean(axis=1) if k else np.asarray(p_w, dtype=float)


def bolzano_residential(run: Any) -> list[dict[str, Any]]:
    """Per house: the peak 15-min PCC import after the warm-up (≤ 10 kW, and ≤ the reference run's: ``relative``), and
    the peak export (no target)."""
    t = run.tables.get("sites")
    rows = []
    for site in run.meta.get("sites", []):
        sid = site["id"]
        pcc = demand_w(run, run.after_warmup(t.get(sid, "pcc_p_w"))) if t is not None else None
        peak = None if pcc is None or not len(pcc) else max(float(np.nanmax(pcc)), 0.0) / 1000.0
        rows.append(_row(f"peak_import_kw.{sid}", f"peak 15-min import at {sid}", peak, "kW", "≤ 10 kW",
                         _cmp(peak, (peak or 0) <= 10.0)))
        label = f"peak 15-min import at {sid} vs the run without S4G"
        rows.append({**_row(f"peak_import_vs_reference.{sid}", label, peak, "kW", "≤ reference", None),
                     "relative": "le"})
        exp = None if pcc is None or not len(pcc) else max(float(np.nanmax(-pcc)), 0.0) / 1000.0
        rows.append(_row(f"peak_export_kw.{sid}", f"peak 15-min export at {sid}", exp, "kW", "", None))
    return rows


def compute(run: Any) -> dict[str, Any] | None:
    """The pilot's rows for a run whose scenario names one (``kpis.pilot``), else None."""
    name = run.meta.get("kpis", {}).get("pilot")
    if name is None:
        return None
    rows = {"bucharest": bucharest, "bolzano_residential": bolzano_residential}[name](run)
    return {"name": name, "rows": rows}


def fmt_value(row: dict[str, Any]) -> str:
    v = row["value"]
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def verdict(row: dict[str, Any]) -> str:
    return "" if row["met"] is None and not row["target"] else "—" if row["met"] is None else \
        ("met" if row["met"] else "NOT met")


def rich_table(pilot: dict[str, Any]) -> Any:
    from rich.table import Table as RichTable

    t = RichTable(title=f"pilot targets: {pilot['name']}")
    for name, justify in (("KPI", "left"), ("value", "right"), ("unit", "left"), ("target", "left"),
                          ("", "left")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in pilot["rows"]:
        t.add_row(row["label"], fmt_value(row), row["unit"], row["target"], verdict(row))
    return t


def html_table(pilot: dict[str, Any]) -> str:
    import html

    e = html.escape
    rows = "".join(f"<tr><td>{e(r['label'])}</td><td>{e(fmt_value(r))} {e(r['unit'])}</td><td>{e(r['target'])}</td>"
                   f"<td>{e(verdict(r))}</td></tr>" for r in pilot["rows"])
    return f"<table><tr><th>KPI</th><th>value</th><th>target</th><th></th></tr>{rows}</table>"


#: relative targets a row may carry (``row["relative"]``): met when value OP the reference run's value
RELATIVE = {"le": lambda v, ref: v <= ref + 1e-9, "ge": lambda v, ref: v >= ref - 1e-9}


def compare_rows(kpis_list: list[dict[str, Any]], names: list[str] | None = None,
                 reference: str | None = None) -> list[tuple[str, list[str]]]:
    """Rows for ``s4g compare``: each pilot KPI with its target, as 'value (met / NOT met)' per run.

    A row with a ``relative`` target is judged against the same row of the ``reference`` run (one of ``names``,
    e.g. the scenario's ``kpis.reference_variant``); the reference's own cell says 'reference'."""
    pilots = [k.get("pilot") for k in kpis_list]
    first = next((p for p in pilots if p), None)
    if first is None:
        return []
    ref_i = names.index(reference) if names and reference in names else None
    out = []
    for i, row in enumerate(first["rows"]):
        label = f"{row['label']} ({row['unit']})" if row["unit"] else row["label"]
        if row["target"]:
            op = {"le": "≤", "ge": "≥"}.get(row.get("relative", ""))
            label += f" [target {row['target']}]" if op is None else f" [target {op} {reference}]"
        rel = RELATIVE.get(row.get("relative", ""))
        if rel is not None and ref_i is None:
            continue  # a relative target needs its reference run
        cells = []
        for j, p in enumerate(pilots):
            r = p["rows"][i] if p and i < len(p["rows"]) and p["rows"][i]["key"] == row["key"] else None
            shown = r is not None and r["value"] is not None
            if r is None or not shown:
                cells.append("—")
                continue
            if rel is not None:
                assert ref_i is not None  # rows with a relative target are skipped above without a reference
                ref_pilot = pilots[ref_i]
                ref = ref_pilot["rows"][i]["value"] if ref_pilot and i < len(ref_pilot["rows"]) else None
                cells.append("—" if ref is None else fmt_value(r) + " reference" if j == ref_i
                             else fmt_value(r) + (" met" if rel(r["value"], ref) else " NOT met"))
                continue
            cells.append(fmt_value(r) + (f" {verdict(r)}" if r["target"] else ""))
        out.append((label, cells))
    return out


def read(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / "kpis.json"
    return json.loads(path.read_text(encoding="utf-8")).get("pilot") if path.is_file() else None
