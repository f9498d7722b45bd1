"""Compare runs: the KPIs a pilot's variants are judged by, side by side, as a table and a plot.

Everything is read from the run directories (kpis.json, computed when missing), never from a live world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table as RichTable

from cosim import kpi

#: equivalent full cycles over every device with a battery, those without a site (a grid battery) included
ALL_EFC = "derived.all_batt_efc"

#: (label, flattened KPI key, format) — the rows of the comparison
ROWS = (
    ("self-consumption", "total.self_consumption_ratio", "pct"),
    ("self-sufficiency", "total.self_sufficiency_ratio", "pct"),
    ("peak import at the transformer (kW)", "grid.peak_import_kw", "1f"),
    ("peak export at the transformer (kW)", "grid.peak_export_kw", "1f"),
    ("PV curtailed", "total.pv_curtailed_pct", "pct100"),
    ("PV curtailed (kWh)", "total.pv_curtailed_kwh", "1f"),
    ("node-minutes outside ±10 %", "grid.v_minutes_outside_10pct", "0f"),
    ("node-minutes outside ±5 %", "grid.v_minutes_outside_5pct", "0f"),
    ("voltage max (pu)", "total.v_max_pu", "4f"),
    ("voltage min (pu)", "total.v_min_pu", "4f"),
    ("grid losses (kWh)", "grid.losses_kwh", "2f"),
    ("energy bill (EUR)", "total.bill_eur", "2f"),
    ("battery full cycles (site batteries)", "total.batt_efc", "2f"),
    ("battery full cycles (every battery)", ALL_EFC, "2f"),
    ("target: PCC voltage within 230 V ±10 %", "grid.v_within_10pct", "met"),
)


@dataclass
class Comparison:
    names: list[str]
    rows: list[tuple[str, list[str]]]
    days: float


def _kpis(run_dir: Path) -> dict[str, Any]:
    path = run_dir / kpi.KPI_FILE
    return json.loads(path.read_text()) if path.is_file() else kpi.compute(run_dir)


def _name(run_dir: Path, kpis: dict[str, Any]) -> str:
    scenario = kpis.get("run", {}).get("scenario") or ""
    return scenario.rsplit("-", 1)[-1] if "-" in scenario else (scenario or run_dir.name)


def _fmt(value: Any, how: str) -> str:
    if value is None:
        return "—"
    if how == "met":
        return "met" if value else "NOT met"
    if how == "pct":
        return f"{100 * value:.1f} %"
    if how == "pct100":
        return f"{value:.1f} %"
    return f"{value:.{how[0]}f}"


def _all_efc(flat: dict[str, Any]) -> float | None:
    """Σ throughput / (2 Σ capacity) over the devices' KPIs (kpi.device_kpis), whatever their site."""
    through = cap = 0.0
    for key, value in flat.items():
        if key.startswith("devices.") and key.endswith(".batt_capacity_kwh") and value:
            cap += value
            through += flat.get(key.removesuffix("capacity_kwh") + "throughput_kwh") or 0.0
    return through / (2.0 * cap) if cap else None


def table(run_dirs: list[Path]) -> Comparison:
    flats = [kpi.flatten(_kpis(d)) for d in run_dirs]
    for f in flats:
        f[ALL_EFC] = _all_efc(f)
    names = [_name(d, _kpis(d)) for d in run_dirs]
    rows = [(label, [_fmt(f.get(key), how) for f in flats]) for label, key, how in ROWS]
    from cosim.pilot_kpis import compare_rows

    meta = json.loads((run_dirs[0] / "meta.json").read_text())
    # a pilot's KPIs with its targets, met / NOT met (relative ones against the scenario's reference variant)
    rows += compare_rows([_kpis(d) for d in run_dirs], names, (meta.get("kpis") or {}).get("reference_variant"))
    return Comparison(names, rows, meta.get("duration_s", 0) / 86400)


def rich_table(comp: Comparison) -> RichTable:
    t = RichTable(title=f"comparison ({comp.days:g} d)")
    t.add_column("KPI")
    for name in comp.names:
        t.add_column(name, justify="right")
    for label, cells in comp.rows:
        t.add_row(label, *cells)
    return t


def markdown(comp: Comparison) -> str:
    lines = ["| KPI | " + " | ".join(comp.names) + " |", "|---|" + "---:|" * len(comp.names)]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in comp.rows]
    return "\n".join(lines) + "\n"


START, END = "<!-- compare:start -->", "<!-- compare:end -->"


def update_readme(path: Path, table_md: str) -> None:
    """Replace the block between the compare markers (the markers must exist: nothing is appended blindly)."""
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{path}: no {START} ... {END} block to replace")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{table_md}{END}{tail}", encoding="utf-8")


def plot(run_dirs: list[Path], out: Path) -> Path:
    """Bars of the main KPIs per run, and each run's feeder voltage maximum over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from cosim.rundir import read_table

    flats = [kpi.flatten(_kpis(d)) for d in run_dirs]
    names = [_name(d, _kpis(d)) for d in run_dirs]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7.5))
    bars = (("self-consumption (%)", "total.self_consumption_ratio", 100.0),
            ("peak import at the transformer (kW)", "grid.peak_import_kw", 1.0),
            ("node-minutes outside ±5 %", "grid.v_minutes_outside_5pct", 1.0))
    for ax, (label, key, scale) in zip(axes.flat, bars):
        values = [(f.get(key) or 0.0) * scale for f in flats]
        ax.bar(names, values, color="tab:blue")
        ax.set_title(label)
        ax.tick_params(axis="x", rotation=20)
    ax = axes.flat[3]
    for d, name in zip(run_dirs, names):
        buses = read_table(d, "buses")
        if buses is None:
            continue
        cols = [c for c in buses.columns if c.endswith("_pu")]
        v = np.nanmax(np.vstack([buses.columns[c] for c in cols]), axis=0)
        ax.plot(buses.t_s / 3600.0, v, label=name, lw=0.8)
    ax.axhline(1.05, color="tab:orange", ls="--", lw=0.8)
    ax.axhline(1.10, color="tab:red", ls="--", lw=0.8)
    ax.set_title("feeder voltage maximum (pu)")
    ax.set_xlabel("hours")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
