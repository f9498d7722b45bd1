"""Static figures of a run for papers: PNG and SVG drawn with matplotlib's Agg canvas (no pyplot: no global
state, no display), from the run directory alone. ``s4g report RUN --static`` writes them next to report.html.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import cast

import numpy as np
from matplotlib import dates as mdates
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cosim import kpi
from cosim.kpi import RunData
from cosim.rundir import start_time

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
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))  # type: ignore[no-untyped-call]  # matplotlib: ConciseDateFormatter is unannotated
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})  # type: ignore[no-untyped-call]  # matplotlib: FigureCanvasAgg.print_png is unannotated
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
    axes[0].set_title(f"Feeder voltage band (limits: {tight[0]:g}–{tight[1]:g} pu dashed, "
                      f"{wide[0]:g}–{wide[1]:g} solid)")
    axes[-1].set_xlabel(_time_label(run))
    return fig


def plot_power(run: RunData) -> Figure:
    """The sites' PCC power together (and the largest sites), and the power at the transformer (or slack)."""
    fig = Figure(figsize=(11, 6), layout="constrained")
    ax_sites, ax_grid = fig.subplots(2, 1, sharex=True)
    sites = run.tables.get("sites")
    ids = sites.ids("pcc_p_w") if sites is not None else []
    if sites is not None and ids:
        x = _times(run, sites.t_s)
        _, m = sites.matrix("pcc_p_w", ids)
        ax_sites.plot(x, np.nansum(m, axis=1) / 1000.0, color="black", lw=1.2, label=f"all {len(ids)} sites")
        if len(ids) > 1:
            energy = np.nansum(np.abs(m), axis=0)
            for j in np.argsort(-energy)[: min(5, len(ids))]:
                ax_sites.plot(x, m[:, j] / 1000.0, lw=0.8, label=ids[j])
        ax_sites.legend(loc="upper left", fontsize=7, ncols=3)
        ax_sites.axhline(0, color="black", lw=0.5)
        ax_sites.set_ylabel("PCC power [kW]")
        ax_sites.set_title("PCC power: all sites together and the largest sites (+ = import)")
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


def storage_ids(run: RunData) -> list[str]:
    """Stationary batteries: a battery power column and a state of charge (a wallbox's EV SoC is not storage, a PV
    inverter without a battery has no SoC)."""
    devices = run.tables.get("devices")
    if devices is None:
        return []
    return [d for d in devices.ids("batt_p_w") if (s := devices.get(d, "soc")) is not None and np.isfinite(s).any()
            and np.nanmax(s) > 0]


def plot_soc(run: RunData) -> Figure:
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax = fig.subplots()
    devices = run.tables.get("devices")
    ids = storage_ids(run)
    if devices is None or not ids:
        _no_data(ax, "battery SoC")
        return fig
    x = _times(run, devices.t_s)
    for did in ids:
        ax.plot(x, 100.0 * cast(np.ndarray, devices.get(did, "soc")), lw=0.9, label=did)  # ids have the column
    if len(ids) <= MAX_LEGEND:
        ax.legend(loc="upper left", fontsize=7, ncols=min(len(ids), 4))
    ax.set_ylim(-2, 102)
    ax.set_ylabel("SoC [%]")
    ax.set_title(f"State of charge of {len(ids)} stationary batteries")
    ax.set_xlabel(_time_label(run))
    return fig


def plot_loading(run: RunData) -> Figure:
    """Loading of every transformer and the most loaded line at each step."""
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    ax = fig.subplots()
    drawn = False
    trafos = run.tables.get("trafos")
    for tid in trafos.ids("loading_pct") if trafos is not None else []:
        assert trafos is not None  # ids come from it
        ax.plot(_times(run, trafos.t_s), cast(np.ndarray, trafos.get(tid, "loading_pct")), lw=1, label=tid)
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




def _svg(fig: Figure) -> bytes:
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buf = io.BytesIO()
    FigureCanvasSVG(fig).print_svg(buf, metadata={"Date": None})  # type: ignore[no-untyped-call]  # matplotlib: FigureCanvasSVG.print_svg is unannotated
    return buf.getvalue()


def write(run: RunData, out: Path, formats: tuple[str, ...] = ("png", "svg")) -> list[Path]:
    """Write every figure as ``<name>.png`` / ``<name>.svg`` into ``out``; returns the files."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (_, plot) in FIGURES.items():
        fig = plot(run)
        for fmt in formats:
            data = _png(fig) if fmt == "png" else _svg(fig)
            (out / f"{name}.{fmt}").write_bytes(data)
            written.append(out / f"{name}.{fmt}")
    return written
