"""The report of one run: PNG figures and one self-contained report.html, from the run directory alone.

``render(run_dir)`` recomputes the KPIs (so the page always matches the data), draws the figures with
matplotlib's Agg canvas (no pyplot: no global state, no display) and embeds them as base64 in the page, which
needs no other file and no network. A partial run (status other than "complete") is rendered and flagged.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cosim import kpi
from cosim.kpi import RunData
from cosim.rundir import start_time

REPORT_DIR = "report"
REPORT_FILE = "report.html"
MAX_LEGEND = 12  # beyond this many lines a legend hides the plot
PHASE_COLORS = {"a": "tab:orange", "b": "tab:green", "c": "tab:purple", "pos": "tab:blue"}


# ---------------------------------------------------------------- figures


def _times(run: RunData, t_s: np.ndarray) -> np.ndarray:
    """Wall-clock times in the scenario's own UTC offset (naive datetime64, so matplotlib does not shift them)."""
    start = start_time(run.meta).replace(tzinfo=None)
    return np.datetime64(start, "s") + t_s.astype("timedelta64[s]")


def _time_label(run: RunData) -> str:
    start: datetime = start_time(run.meta)
    return f"local time ({start.strftime('%z')[:3]}:{start.strftime('%z')[3:]} UTC offset)"


def _no_data(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def _png(fig: Figure) -> bytes:
    for ax in fig.axes:
        if ax.has_data() and isinstance(ax.xaxis.get_major_formatter(), mdates.AutoDateFormatter):
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def _band(m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-step min, 5th/50th/95th percentile and max across buses (steps where all are NaN stay NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN steps (partial rows) are expected
        p5, p50, p95 = np.nanpercentile(m, [5, 50, 95], axis=1)
        return {"min": np.nanmin(m, axis=1), "p5": p5, "p50": p50, "p95": p95, "max": np.nanmax(m, axis=1)}


def plot_voltage(run: RunData) -> Figure:
    """Feeder voltage band per phase across all buses (slack excluded), with the ±5 % and ±10 % limits."""
    phases = kpi.phase_matrices(run)
    fig = Figure(figsize=(11, 2.6 * max(len(phases), 1)), layout="constrained")
    axes = fig.subplots(max(len(phases), 1), 1, sharex=True, squeeze=False)[:, 0]
    if not phases:
        _no_data(axes[0], "bus voltages")
        return fig
    x = _times(run, run.tables["buses"].t_s)
    for ax, (phase, (ids, m)) in zip(axes, phases.items()):
        b = _band(m)
        color = PHASE_COLORS.get(phase, "tab:blue")
        ax.fill_between(x, b["min"], b["max"], color=color, alpha=0.2, lw=0, label="min–max")
        ax.fill_between(x, b["p5"], b["p95"], color=color, alpha=0.45, lw=0, label="5–95 %")
        ax.plot(x, b["p50"], color=color, lw=1, label="median")
        for (lo, hi), style in ((run.v_band, "-"), (run.v_band_tight, "--")):
            ax.axhline(lo, color="tab:red", ls=style, lw=0.8)
            ax.axhline(hi, color="tab:red", ls=style, lw=0.8)
        ax.set_ylabel(f"phase {phase} [pu]" if phase != "pos" else "V [pu]")
        ax.set_title(f"{len(ids)} buses", loc="right", fontsize=8)
    axes[0].legend(loc="upper left", fontsize=8, ncols=3)
    wide, tight = run.v_band, run.v_band_tight
    axes[0].set_title(f"Feeder voltage band (limits: {tight[0]:g}–{tight[1]:g} pu dashed, {wide[0]:g}–{wide[1]:g} solid)")
    axes[-1].set_xlabel(_time_label(run))
    return fig


def plot_power(run: RunData) -> Figure:
    """PCC power of every site and the power at the transformer (or slack), + = import."""
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax_sites, ax_grid = fig.subplots(2, 1, sharex=True)
    sites = run.tables.get("sites")
    ids = sites.ids("pcc_p_w") if sites is not None else []
    if sites is not None and ids:
        x = _times(run, sites.t_s)
        for sid in ids:
            ax_sites.plot(x, sites.get(sid, "pcc_p_w") / 1000.0, lw=0.8, label=sid)
        if len(ids) <= MAX_LEGEND:
            ax_sites.legend(loc="upper left", fontsize=7, ncols=min(len(ids), 4))
        ax_sites.axhline(0, color="black", lw=0.5)
        ax_sites.set_ylabel("PCC power [kW]")
        ax_sites.set_title(f"PCC power per site ({len(ids)} sites, + = import)")
    else:
        _no_data(ax_sites, "site PCC power")
    source, p = kpi.substation_power(run)
    table = run.tables.get("trafos" if source == "trafo" else "grid")
    if p is not None and table is not None:
        ax_grid.plot(_times(run, table.t_s), p / 1000.0, color="black", lw=1)
        ax_grid.axhline(0, color="grey", lw=0.5)
        ax_grid.set_ylabel("P [kW]")
        ax_grid.set_title("Transformer power (HV side)" if source == "trafo" else "Slack power")
        ax_grid.set_xlabel(_time_label(run))
    else:
        _no_data(ax_grid, "transformer or slack power")
    return fig


def plot_soc(run: RunData) -> Figure:
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax = fig.subplots()
    devices = run.tables.get("devices")
    ids = devices.ids("soc") if devices is not None else []
    if devices is None or not ids:
        _no_data(ax, "battery SoC")
        return fig
    x = _times(run, devices.t_s)
    for did in ids:
        ax.plot(x, 100.0 * devices.get(did, "soc"), lw=0.9, label=did)
    if len(ids) <= MAX_LEGEND:
        ax.legend(loc="upper left", fontsize=7, ncols=min(len(ids), 4))
    ax.set_ylim(-2, 102)
    ax.set_ylabel("SoC [%]")
    ax.set_title(f"State of charge of {len(ids)} batteries")
    ax.set_xlabel(_time_label(run))
    return fig


def plot_loading(run: RunData) -> Figure:
    """Loading of every transformer and the most loaded line at each step."""
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax = fig.subplots()
    drawn = False
    trafos = run.tables.get("trafos")
    for tid in trafos.ids("loading_pct") if trafos is not None else []:
        ax.plot(_times(run, trafos.t_s), trafos.get(tid, "loading_pct"), lw=1, label=tid)
        drawn = True
    lines = run.tables.get("lines")
    if lines is not None and lines.ids("loading_pct"):
        _, m = lines.matrix("loading_pct")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            label = f"max over {m.shape[1]} lines"
            ax.plot(_times(run, lines.t_s), np.nanmax(m, axis=1), lw=1, color="black", label=label)
        drawn = True
    if not drawn:
        _no_data(ax, "line or transformer loading")
        return fig
    ax.axhline(100, color="tab:red", lw=0.8)
    ax.set_ylabel("loading [%]")
    ax.set_title("Transformer and maximum line loading")
    ax.legend(loc="upper left", fontsize=7)
    ax.set_xlabel(_time_label(run))
    return fig


FIGURES: dict[str, tuple[str, Callable[[RunData], Figure]]] = {
    "voltage": ("Feeder voltage band", plot_voltage),
    "power": ("PCC and transformer power", plot_power),
    "soc": ("Battery state of charge", plot_soc),
    "loading": ("Transformer and line loading", plot_loading),
}


# ---------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
.banner{background:#fff3cd;border:1px solid #e0b100;padding:.7em 1em;margin:1em 0;border-radius:4px}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4}.scroll{overflow-x:auto}img{max-width:100%;display:block;margin:.5em 0 2em}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _kv_table(flat: dict[str, Any]) -> str:
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(kpi.fmt(k, v))}</td></tr>" for k, v in flat.items())
    return f"<table><tr><th>KPI</th><th>value</th></tr>{rows}</table>"


def _matrix_table(entities: dict[str, dict[str, Any]], label: str) -> str:
    """Rows = KPI keys, one column per entity (site or device)."""
    if not entities:
        return f"<p>No {label}s in this run.</p>"
    keys: dict[str, None] = {}
    for values in entities.values():
        keys |= dict.fromkeys(values)
    head = "".join(f"<th>{_e(name)}</th>" for name in entities)
    rows = "".join(
        f"<tr><td>{_e(k)}</td>" + "".join(f"<td>{_e(kpi.fmt(k, v.get(k)))}</td>" for v in entities.values()) + "</tr>"
        for k in keys
    )
    return f'<div class="scroll"><table><tr><th>{label}</th>{head}</tr>{rows}</table></div>'


def _banner(info: dict[str, Any]) -> str:
    status = info.get("status")
    if status == "complete":
        return ""
    steps = f"{info.get('steps_recorded')} of {info.get('steps_expected') or '?'} steps recorded"
    why = "run.json is missing: the run may not have finished" if status == "unknown" else f"status “{status}”"
    return f'<div class="banner"><b>Partial run</b> ({_e(why)}): {_e(steps)}. KPIs cover the recorded steps only.</div>'


def _html(kpis: dict[str, Any], images: dict[str, bytes], extra: str = "") -> str:
    info = kpis["run"]
    flat = kpi.flatten({k: kpis[k] for k in ("run", "total", "grid")})
    figures = "".join(
        f"<h3>{_e(FIGURES[name][0])}</h3>"
        f'<img alt="{_e(FIGURES[name][0])}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        for name, png in images.items()
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Run report: {_e(info.get('scenario'))}</title><style>{_CSS}</style></head><body>"
        f"<h1>Run report: {_e(info.get('scenario'))}</h1>"
        f'<p class="sub">start {_e(info.get("start"))} · step {_e(info.get("step_s"))} s · '
        f"status {_e(info.get('status'))}</p>"
        f"{_banner(info)}"
        f"<h2>Summary</h2>{_kv_table(flat)}"
        f"{extra}"
        f"<h2>Figures</h2>{figures}"
        f"<h2>Sites</h2>{_matrix_table(kpis['sites'], 'site')}"
        f"<h2>Devices</h2>{_matrix_table(kpis['devices'], 'device')}"
        "<p class='sub'>Definitions of every KPI: docs/results.md.</p></body></html>"
    )


def render(run_dir: str | Path) -> Path:
    """Write run_dir/report/{voltage,power,soc,loading}.png and report.html; return the path of report.html."""
    run_dir = Path(run_dir)
    run = kpi.load(run_dir)
    kpis = kpi.compute(run_dir, data=run)
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    # Tables without rows (a run that failed at once) are plotted as "no data", like absent ones.
    plotted = RunData(run.meta, run.step_s, {n: t for n, t in run.tables.items() if len(t)})
    images: dict[str, bytes] = {}
    for name, (_, plot) in FIGURES.items():
        images[name] = _png(plot(plotted))
        (out / f"{name}.png").write_bytes(images[name])
    page = out / REPORT_FILE
    from cosim.outage_report import section  # pilot targets, events, the router through an outage

    page.write_text(_html(kpis, images, section(run_dir, plotted, kpis, out)), encoding="utf-8")
    return page
