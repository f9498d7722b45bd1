"""The report's outage section: the scenario's events, a pilot's KPI targets, and the Energy Router through an
outage (DC bus voltage, battery SoC, PCC power and the router's state over time).

Self-contained so the report (cosim/report.py) only calls :func:`section`; everything is read from the run
directory's tables (``run``: a cosim.kpi.RunData) and events.jsonl.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any, cast

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cosim.event_sim import read_events

STATE_NAMES = ("off", "precharge", "dc_on", "ac_ramp", "island", "resync", "grid")  # devices/energy_router codes
MARGIN_S = 1800  # shown before and after the outage


def _window(run: Any, t_s: np.ndarray) -> np.ndarray:
    """Steps around the first outage of the run (all steps without one)."""
    outages = [e for e in run.meta.get("events", []) if e.get("kind") in ("outage", "device_trip")]
    if not outages:
        return np.ones(len(t_s), dtype=bool)
    e = outages[0]
    return cast(np.ndarray, (t_s >= e["from_s"] - MARGIN_S) & (t_s < e["until_s"] + MARGIN_S))


def plot_outage(run: Any) -> Figure | None:
    """DC bus voltage, SoC, PCC power and state of the first Energy Router around the first outage (None: no router)."""
    dev = next((d for d in run.meta.get("devices", []) if d.get("family") == "energy_router"), None)
    table = run.tables.get("devices")
    if dev is None or table is None or table.get(dev["id"], "state") is None or not len(table):
        return None
    did, t_all = dev["id"], table.t_s
    w = _window(run, t_all)
    hours = t_all[w] / 3600.0
    fig = Figure(figsize=(11, 8.5))
    axes = fig.subplots(4, 1, sharex=True)
    v = table.get(did, "v_dc_v")
    vmin, vmax = table.get(did, "v_dc_min_v"), table.get(did, "v_dc_max_v")
    ax = axes[0]
    if v is not None:
        ax.plot(hours, v[w], lw=1, label="mean over the step")
    if vmin is not None and vmax is not None:
        ax.fill_between(hours, vmin[w], vmax[w], alpha=0.3, step="post", label="min / max in the step")
    v_nom = float((dev.get("config") or {}).get("dc_v_nom_v") or 400.0)
    for k in (0.9, 1.1):
        ax.axhline(k * v_nom, color="tab:red", ls="--", lw=0.8)
    ax.set_ylabel("DC bus (V)")
    ax.legend(fontsize=8, loc="lower left")
    soc = table.get(did, "soc")
    if soc is not None:
        axes[1].plot(hours, 100 * soc[w], color="tab:green", lw=1)
    axes[1].set_ylabel("battery SoC (%)")
    site = dev.get("site")
    sites = run.tables.get("sites")
    pcc = sites.get(site, "pcc_p_w") if sites is not None and site else None
    if pcc is not None:
        axes[2].plot(hours, pcc[w] / 1000.0, color="tab:blue", lw=1, label=f"PCC {site}")
    er_p = table.get(did, "p_w")
    if er_p is not None:
        axes[2].plot(hours, er_p[w] / 1000.0, color="tab:orange", lw=1, label="router AC port")
    axes[2].axhline(0, color="grey", lw=0.5)
    axes[2].set_ylabel("power (kW, + = import)")
    axes[2].legend(fontsize=8, loc="upper left")
    state = table.get(did, "state")
    axes[3].step(hours, state[w], where="post", color="tab:purple", lw=1)
    axes[3].set_yticks(range(len(STATE_NAMES)), STATE_NAMES)
    axes[3].set_ylabel("state")
    axes[3].set_xlabel("hours since the start")
    for e in run.meta.get("events", []):
        for ax in axes:
            ax.axvspan(e["from_s"] / 3600.0, e["until_s"] / 3600.0, color="tab:red", alpha=0.08)
    fig.suptitle(f"{did} through the outage (shaded: scheduled events)")
    fig.tight_layout()
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})  # type: ignore[no-untyped-call]  # matplotlib: FigureCanvasAgg.print_png is unannotated
    return buf.getvalue()


def section(run_dir: str | Path, run: Any, kpis: dict[str, Any], out_dir: Path | None = None) -> str:
    """HTML of the pilot targets, the events and the outage figure ('' when the run has none of them)."""
    e = html.escape
    parts = []
    if kpis.get("pilot"):
        from cosim.pilot_kpis import html_table

        parts.append(f"<h2>Pilot targets: {e(kpis['pilot']['name'])}</h2>{html_table(kpis['pilot'])}")
    events = read_events(run_dir)
    if events:
        rows = "".join(f"<tr><td>{ev['t_s']}</td><td>{e(ev['kind'])}</td><td>{e(ev['edge'])}</td>"
                       f"<td>{e(ev['message'])}</td></tr>" for ev in events)
        parts.append(f"<h2>Events</h2><table><tr><th>t (s)</th><th>kind</th><th></th><th>what</th></tr>{rows}</table>")
    fig = plot_outage(run)
    if fig is not None:
        png = _png(fig)
        if out_dir is not None:
            (out_dir / "outage.png").write_bytes(png)
        parts.append(f"<h3>Energy Router through the outage</h3><img alt='outage' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    return "".join(parts)


def pilot_section(ctx: Any) -> Any:
    """The report's section for a pilot: its targets (met / not met) and the Energy Router through an outage.
    The events themselves are on the report's event timeline."""
    from cosim.report_sections import Section

    kpis = ctx.kpis
    parts = []
    if kpis.get("pilot"):
        from cosim.pilot_kpis import html_table

        parts.append(html_table(kpis["pilot"]))
    fig = plot_outage(ctx.run)
    if fig is not None:
        png = _png(fig)
        parts.append("<h3>Energy Router through the outage</h3><img alt='Energy Router through the outage' "
                     f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    if not parts:
        return None
    title = f"Pilot targets: {kpis['pilot']['name']}" if kpis.get("pilot") else "Outage"
    return Section("pilot", title, "".join(parts))
