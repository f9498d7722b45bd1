"""Report sections about the grid: the voltage profile along the feeder, the bus × time heat map, per-phase voltages
and unbalance, loading duration curves, and a single-line view coloured by the worst voltage."""

from __future__ import annotations

import warnings
from typing import Any, cast

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cosim import kpi
from cosim.report_context import ReportContext
from cosim.rundir import Table
from cosim.report_sections import (PHASE_COLORS, PHASE_NAMES, Section, band_lines, bucket_size, downsample, e,
                                   figure, note)

HEATMAP_COLUMNS = 288  # time buckets of the heat map (5 min over a day)
HEATMAP_MAX_BUSES = 150
TOP_LINES = 10
UNBALANCE_LIMIT_PCT = 2.0  # EN 50160's limit for the negative-sequence unbalance; LVUR approximates it


def _quiet(f: Any, *args: Any, **kw: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (a bus without that phase)
        return f(*args, **kw)


def _phases(ctx: ReportContext) -> dict[str, tuple[list[str], np.ndarray]]:
    return kpi.phase_matrices(ctx.run)


def _bands(ctx: ReportContext) -> list[tuple[tuple[float, float], str]]:
    return [(ctx.run.v_band_tight, "dash"), (ctx.run.v_band, "solid")]


# ---------------------------------------------------------------- voltage profile along the feeder


def _tree_xy(ctx: ReportContext, ids: list[str], values: np.ndarray) -> tuple[list[Any], list[Any], list[Any]]:
    """Segments parent -> bus along the feeder (x = distance, y = value), None-separated, so branches show."""
    f = ctx.feeder
    v = dict(zip(ids, values))
    xs: list[Any] = []
    ys: list[Any] = []
    names: list[Any] = []
    for bus in ids:
        up = f.parent.get(bus)
        if bus not in f.distance_m or not np.isfinite(v[bus]):
            continue
        while up is not None and (up not in v or not np.isfinite(v.get(up, np.nan))):
            up = f.parent.get(up)  # skip buses without this phase (or the slack) up to the next that has it
        if up is not None:
            xs += [f.distance_m[up], f.distance_m[bus], None]
            ys += [float(v[up]), float(v[bus]), None]
            names += [up, bus, None]
        else:
            xs += [f.distance_m[bus], None]
            ys += [float(v[bus]), None]
            names += [bus, None]
    return xs, ys, names


def voltage_profile(ctx: ReportContext) -> Section | None:
    phases = _phases(ctx)
    if not phases:
        return None
    if not ctx.feeder.known:
        return Section("profile", "Voltage profile along the feeder",
                       note("The run directory has no grid topology (meta.json grid.topology, written since this "
                            "report exists): no distances to draw the profile against."))
    t_s = cast(Table, ctx.table("buses")).t_s  # the phases come from the bus table
    fig = figure("Voltage against distance from the transformer", height=480, hovermode="closest")
    text = []
    for phase, (ids, m) in phases.items():
        color = PHASE_COLORS.get(phase, "#1f77b4")
        name = PHASE_NAMES.get(phase, phase)
        vmin, vmax = _quiet(np.nanmin, m, axis=0), _quiet(np.nanmax, m, axis=0)
        if not np.isfinite(m).any():
            continue
        i_low = int(np.unravel_index(np.nanargmin(m), m.shape)[0])
        i_high = int(np.unravel_index(np.nanargmax(m), m.shape)[0])
        series = ((vmin, "min over the run", "dot", 1, "#fc9272"), (vmax, "max over the run", "dot", 1, "#9ecae1"),
                  (m[i_low], f"lowest instant {ctx.clock(t_s[i_low])}", "solid", 2, "#a50f15"),
                  (m[i_high], f"highest instant {ctx.clock(t_s[i_high])}", "dash", 2, "#08519c"))
        for values, label, dash, width, own in series:
            xs, ys, names = _tree_xy(ctx, ids, values)
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=f"{name}: {label}",
                                     line={"color": own if phase == "pos" else color, "dash": dash, "width": width},
                                     marker={"size": 4},
                                     customdata=names, hovertemplate="%{customdata}<br>%{x:.0f} m: %{y:.4f} pu"))
        text.append(f"{e(name)}: lowest {float(m[i_low].min() if np.isfinite(m[i_low]).any() else np.nan):.4f} pu "
                    f"at {e(ctx.clock(t_s[i_low]))}, highest {float(np.nanmax(m[i_high])):.4f} pu at "
                    f"{e(ctx.clock(t_s[i_high]))}")
    band_lines(fig, _bands(ctx))
    fig.update_xaxes(title="distance from the transformer along the lines [m]")
    fig.update_yaxes(title="voltage [pu]")
    intro = note("Every bus (the slack excluded) at its distance from the transformer, lines drawn along the "
                 "feeder's branches: the band a bus swept over the run (dotted), and the feeder at the instants "
                 "of its lowest and highest voltage. Red lines: the tight (dashed) and wide (solid) voltage band. "
                 + "; ".join(text) + ".")
    return Section("profile", "Voltage profile along the feeder", intro, [fig])


# ---------------------------------------------------------------- bus × time heat map


def _colorscale(lo: float, hi: float, band: tuple[float, float], tight: tuple[float, float]) -> list[list[Any]]:
    """Sharp colour steps at the band limits: dark red below the wide band, orange in the tight margin, a light
    diverging ramp inside the tight band, purple and dark purple above."""
    def at(v: float) -> float:
        return min(max((v - lo) / (hi - lo), 0.0), 1.0)

    eps = 1e-6
    return [[0.0, "#67000d"], [at(band[0]) - eps, "#a50f15"], [at(band[0]), "#f16913"],
            [at(tight[0]) - eps, "#fdae6b"], [at(tight[0]), "#fc9272"], [at(1.0), "#ffffff"],
            [at(tight[1]), "#6baed6"], [at(tight[1]) + eps, "#9e9ac8"], [at(band[1]), "#6a51a3"],
            [at(band[1]) + eps, "#3f007d"], [1.0, "#3f007d"]]


def voltage_heatmap(ctx: ReportContext) -> Section | None:
    phases = _phases(ctx)
    if not phases:
        return None
    t_s = cast(Table, ctx.table("buses")).t_s  # the phases come from the bus table
    k = bucket_size(len(t_s), HEATMAP_COLUMNS)
    x = ctx.times(downsample(t_s.astype(float), "first", k).astype(np.int64))
    band, tight = ctx.run.v_band, ctx.run.v_band_tight
    lo, hi = band[0] - 0.05, band[1] + 0.05
    fig = make_subplots(rows=len(phases), cols=1, shared_xaxes=True, vertical_spacing=0.04,
                        subplot_titles=[PHASE_NAMES.get(p, p) for p in phases] if len(phases) > 1 else None)
    n_buses = 0
    for r, (_phase, (ids, m)) in enumerate(phases.items(), start=1):
        order = sorted(range(len(ids)), key=lambda j: (ctx.feeder.distance_m.get(ids[j], np.inf), ids[j]))
        if len(order) > HEATMAP_MAX_BUSES:  # the buses that deviate most
            dev = _quiet(np.nanmax, np.abs(m - 1.0), axis=0)
            keep = set(np.argsort(-np.nan_to_num(dev, nan=-1))[:HEATMAP_MAX_BUSES].tolist())
            order = [j for j in order if j in keep]
        mm = m[:, order]
        # per bucket the value farthest from 1 pu, so a short excursion is not averaged away
        low, high = downsample(mm, "min", k), downsample(mm, "max", k)
        z = np.where(np.abs(low - 1.0) > np.abs(high - 1.0), low, high)
        n_buses = max(n_buses, len(order))
        fig.add_trace(go.Heatmap(z=z.T, x=x, y=[ids[j] for j in order], zmin=lo, zmax=hi,
                                 colorscale=_colorscale(lo, hi, band, tight), showscale=r == 1,
                                 colorbar={"title": "pu", "tickvals": [band[0], tight[0], 1.0, tight[1], band[1]]},
                                 hovertemplate="%{y}<br>%{x}<br>%{z:.4f} pu<extra></extra>"), row=r, col=1)
        fig.update_yaxes(autorange="reversed", showticklabels=n_buses <= 60, row=r, col=1)
    fig.update_layout(height=min(260 + 11 * n_buses * len(phases), 1600), template="plotly_white",
                      margin={"l": 140, "r": 20, "t": 50, "b": 40},
                      title={"text": "Bus voltages over time (buses by distance from the transformer)", "x": 0})
    intro = note(f"Each row a bus (nearest to the transformer at the top), each column {k * ctx.run.step_s // 60} "
                 f"min (the value farthest from 1 pu in it). Light red to white to blue: inside the tight band "
                 f"{tight[0]:g}–{tight[1]:g} pu; orange below and purple above it: between the tight and the wide "
                 f"band; dark red and dark purple: outside {band[0]:g}–{band[1]:g} pu.")
    return Section("heatmap", "Bus voltages in space and time", intro, [fig])


# ---------------------------------------------------------------- per-phase voltages and unbalance


def lvur_pct(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Line-voltage unbalance rate in % (IEEE, from magnitudes only): the largest deviation from the mean of the
    three phase voltages, over that mean. NaN where a phase is missing."""
    stack = np.stack([a, b, c])
    mean = stack.mean(axis=0)
    return cast(np.ndarray, np.abs(stack - mean).max(axis=0) / mean * 100.0)


def unbalance(ctx: ReportContext) -> Section | None:
    phases = _phases(ctx)
    if not all(p in phases for p in "abc"):
        return None
    t_s = cast(Table, ctx.table("buses")).t_s  # the phases come from the bus table
    k = bucket_size(len(t_s))
    x = ctx.times(downsample(t_s.astype(float), "first", k).astype(np.int64))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["Lowest and highest bus voltage per phase",
                                        "Largest voltage unbalance of any bus (LVUR)"])
    for phase in "abc":
        _, m = phases[phase]
        color = PHASE_COLORS[phase]
        for how, dash in (("min", "solid"), ("max", "dot")):
            y = downsample(_quiet(getattr(np, f"nan{how}"), m, axis=1), how, k)
            fig.add_trace(go.Scatter(x=x, y=y, name=f"phase {phase} {how}", line={"color": color, "dash": dash}),
                          row=1, col=1)
    ids_a, _ma = phases["a"]
    common = [b for b in ids_a if b in phases["b"][0] and b in phases["c"][0]]
    col = {p: {b: j for j, b in enumerate(phases[p][0])} for p in "abc"}
    u = lvur_pct(*(phases[p][1][:, [col[p][b] for b in common]] for p in "abc"))
    worst = _quiet(np.nanmax, u, axis=1)
    fig.add_trace(go.Scatter(x=x, y=downsample(worst, "max", k), name="max LVUR over buses",
                             line={"color": "black"}), row=2, col=1)
    fig.add_hline(y=UNBALANCE_LIMIT_PCT, line={"color": "#c0392b", "dash": "dash"}, row=2, col=1)
    fig.update_yaxes(title="pu", row=1, col=1)
    fig.update_yaxes(title="%", row=2, col=1)
    fig.update_layout(height=620, template="plotly_white", margin={"l": 60, "r": 20, "t": 60, "b": 40},
                      hovermode="x unified", legend={"orientation": "h", "y": -0.08})
    per_bus = _quiet(np.nanmax, u, axis=0)
    top = [j for j in np.argsort(-np.nan_to_num(per_bus, nan=-1))[:8] if np.isfinite(per_bus[j])]
    rows = "".join(f"<tr><td>{e(common[j])}</td><td>{per_bus[j]:.2f}</td>"
                   f"<td>{ctx.feeder.distance_m.get(common[j], float('nan')):.0f}</td></tr>" for j in top)
    single = len(ids_a) - len(common)
    intro = note("An unbalanced feeder: the three phase voltages apart, and their unbalance. LVUR (IEEE 112) is the "
                 "largest deviation of a phase voltage from the mean of the three over that mean; it approximates "
                 f"the negative-sequence unbalance EN 50160 limits to {UNBALANCE_LIMIT_PCT:g} % (dashed). "
                 f"{len(common)} buses have three phases" + (f", {single} fewer" if single > 0 else "") + ".")
    after = ("<h4>Buses with the largest unbalance</h4><table><tr><th>bus</th><th>max LVUR %</th>"
             f"<th>distance m</th></tr>{rows}</table>") if rows else ""
    return Section("unbalance", "Per-phase voltages and unbalance", intro, [fig], after)


# ---------------------------------------------------------------- loading duration curves


def _duration(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.sort(y[np.isfinite(y)])[::-1]
    x = np.arange(1, len(y) + 1) / max(len(y), 1) * 100.0
    k = bucket_size(len(y))
    return downsample(x, "first", k), downsample(y, "first", k)


def loading_duration(ctx: ReportContext) -> Section | None:
    trafos, lines = ctx.table("trafos"), ctx.table("lines")
    if (trafos is None or not trafos.ids("loading_pct")) and (lines is None or not lines.ids("loading_pct")):
        return None
    fig = figure("Loading duration curves: share of the time a loading is reached or exceeded", hovermode="closest")
    if trafos is not None:
        for tid in trafos.ids("loading_pct"):
            x, y = _duration(cast(np.ndarray, trafos.get(tid, "loading_pct")))  # tid has the column
            fig.add_trace(go.Scatter(x=x, y=y, name=f"transformer {tid}", line={"color": "black", "width": 3}))
    if lines is not None and lines.ids("loading_pct"):
        ids, m = lines.matrix("loading_pct")
        peak = _quiet(np.nanmax, m, axis=0)
        top = [j for j in np.argsort(-np.nan_to_num(peak, nan=-1))[:TOP_LINES] if np.isfinite(peak[j])]
        for j in top:
            x, y = _duration(m[:, j])
            fig.add_trace(go.Scatter(x=x, y=y, name=f"line {ids[j]}", line={"width": 1.5}))
        x, y = _duration(_quiet(np.nanmax, m, axis=1))
        fig.add_trace(go.Scatter(x=x, y=y, name=f"most loaded of all {len(ids)} lines at each step",
                                 line={"color": "grey", "dash": "dot"}))
    fig.add_hline(y=100, line={"color": "#c0392b"})
    fig.update_xaxes(title="share of the time [%]", range=[0, 100])
    fig.update_yaxes(title="loading [%]", rangemode="tozero")
    intro = note(f"The transformer and the {TOP_LINES} lines with the highest peak loading, each sorted from its "
                 "highest value down: where a curve meets 100 % (red), the element was overloaded for that share "
                 "of the run.")
    return Section("loading", "Loading of lines and the transformer", intro, [fig])


# ---------------------------------------------------------------- single-line view


def _worst_per_bus(ctx: ReportContext) -> dict[str, tuple[float, float, float]]:
    """bus -> (worst voltage = the extreme farthest from 1 pu, min, max) over phases and the run."""
    low: dict[str, float] = {}
    high: dict[str, float] = {}
    for ids, m in _phases(ctx).values():
        mn, mx = _quiet(np.nanmin, m, axis=0), _quiet(np.nanmax, m, axis=0)
        for j, b in enumerate(ids):
            if np.isfinite(mn[j]):
                low[b] = min(low.get(b, np.inf), float(mn[j]))
                high[b] = max(high.get(b, -np.inf), float(mx[j]))
    return {b: (low[b] if 1 - low[b] > high[b] - 1 else high[b], low[b], high[b]) for b in low}


def single_line(ctx: ReportContext) -> Section | None:
    f = ctx.feeder
    if not f.known or not f.row:
        return None
    worst = _worst_per_bus(ctx)
    band, tight = ctx.run.v_band, ctx.run.v_band_tight
    sites_at: dict[str, list[str]] = {}
    for s in ctx.meta.get("sites", []):
        if s.get("bus"):
            sites_at.setdefault(s["bus"], []).append(s["id"])
    line_peak: dict[str, float] = {}
    lines = ctx.table("lines")
    if lines is not None and lines.ids("loading_pct"):
        ids, m = lines.matrix("loading_pct")
        line_peak = dict(zip(ids, _quiet(np.nanmax, m, axis=0).tolist()))
    fig = figure("Single-line view: worst voltage at each bus", height=max(360, 40 + 28 * (1 - min(f.row.values()))),
                 hovermode="closest", showlegend=True)
    ex, ey, hx, hy, htext = [], [], [], [], []
    for eid, a, b in f.edges:
        if a not in f.row or b not in f.row:
            continue
        xa, ya, xb, yb = f.distance_m[a], f.row[a], f.distance_m[b], f.row[b]
        ex += [xa, xa, xb, None]
        ey += [ya, yb, yb, None]
        hx.append((xa + xb) / 2)
        hy.append(yb)
        peak = line_peak.get(eid)
        htext.append(f"{eid}" + (f"<br>peak loading {peak:.0f} %" if peak is not None and np.isfinite(peak) else ""))
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#888", "width": 1.5}, hoverinfo="skip",
                             name="lines"))
    fig.add_trace(go.Scatter(x=hx, y=hy, mode="markers", marker={"size": 6, "color": "rgba(0,0,0,0)"},
                             text=htext, hovertemplate="%{text}<extra></extra>", showlegend=False))
    buses = [b for b in f.row if b in worst]
    lo, hi = band
    fig.add_trace(go.Scatter(
        x=[f.distance_m[b] for b in buses], y=[f.row[b] for b in buses], mode="markers", name="bus (worst voltage)",
        marker={"size": [12 if b in sites_at else 8 for b in buses], "color": [worst[b][0] for b in buses],
                "cmin": lo, "cmax": hi, "colorscale": "RdBu", "reversescale": False,
                "symbol": ["square" if b in sites_at else "circle" for b in buses], "line": {"width": 0.5},
                "colorbar": {"title": "pu", "tickvals": [band[0], tight[0], 1.0, tight[1], band[1]]}},
        text=[f"{b}<br>min {worst[b][1]:.4f} / max {worst[b][2]:.4f} pu<br>{f.distance_m[b]:.0f} m"
              + (f"<br>sites: {', '.join(sites_at[b][:5])}" if b in sites_at else "") for b in buses],
        hovertemplate="%{text}<extra></extra>"))
    critical = [b for b in buses if worst[b][1] < tight[0] or worst[b][2] > tight[1]]
    label = "outside the tight band"
    if not critical and buses:  # no violation: still mark the weakest buses, low and high
        critical = list(dict.fromkeys([min(buses, key=lambda b: worst[b][1]), max(buses, key=lambda b: worst[b][2])]))
        label = "lowest and highest voltage"
    shown = sorted(critical, key=lambda b: -abs(worst[b][0] - 1))
    named = set(shown[:3])  # the worst few by name; every critical node is ringed
    fig.add_trace(go.Scatter(x=[f.distance_m[b] for b in shown], y=[f.row[b] for b in shown], mode="markers+text",
                             name=f"critical node ({label})", text=[b if b in named else "" for b in shown],
                             textposition="top center", textfont={"size": 10},
                             marker={"symbol": "circle-open", "size": 17, "color": "#c0392b", "line": {"width": 2}},
                             hoverinfo="skip"))
    slack = ctx.meta.get("grid", {}).get("slack_bus")
    if slack in f.row:
        fig.add_trace(go.Scatter(x=[f.distance_m[slack]], y=[f.row[slack]], mode="markers+text", text=["slack"],
                                 textposition="middle left", name="slack / transformer",
                                 marker={"symbol": "triangle-right", "size": 14, "color": "black"}))
    fig.update_xaxes(title="distance from the transformer [m]")
    fig.update_yaxes(showticklabels=False, zeroline=False, showgrid=False)
    n_crit = sum(1 for b in buses if worst[b][1] < tight[0] or worst[b][2] > tight[1])
    intro = note(f"The feeder drawn from its transformer (left) along the lines: each branch on a row of its own, "
                 f"distances to scale. A bus's colour is its worst voltage over the run and the phases (red below, "
                 f"blue above 1 pu, full colour at the wide band's limits); squares carry sites. {n_crit} buses left "
                 "the tight band "
                 f"{tight[0]:g}–{tight[1]:g} pu" + (" (ringed red)." if n_crit else "; the weakest buses are ringed."))
    return Section("single_line", "Single-line view", intro, [fig])
