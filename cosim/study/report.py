"""``report.html`` of a study: one self-contained page (figures embedded as PNG, matplotlib's Agg canvas as in
:mod:`cosim.report`): the table, which variants meet each target, KPI-vs-axis plots, the Pareto front of two
objectives, search results, voltage heat maps (node x time) of chosen variants, battery SoH over the years and
the economics."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, cast

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


REPORT = "report.html"
MAX_ROWS = 300
MAX_KPI_PLOTS = 8


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})  # type: ignore[no-untyped-call]  # matplotlib: FigureCanvasAgg.print_png is unannotated
    return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _num(x: Any) -> float | None:
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _fmt(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.4g}"
    return html.escape(str(x))


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows[:MAX_ROWS])
    more = f"<p>{len(rows) - MAX_ROWS} more rows in table.parquet</p>" if len(rows) > MAX_ROWS else ""
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def pareto(points: list[tuple[float, float]], senses: tuple[str, str]) -> list[int]:
    """Indices of the non-dominated points (both objectives minimised after flipping ``max`` ones)."""
    sign = [1.0 if s == "min" else -1.0 for s in senses]
    pts = [(a * sign[0], b * sign[1]) for a, b in points]
    front = []
    for i, (a, b) in enumerate(pts):
        if not any((c <= a and d <= b) and (c < a or d < b) for j, (c, d) in enumerate(pts) if j != i):
            front.append(i)
    return front


def _kpi_plots(runner: Any, rows: list[dict[str, Any]]) -> str:
    study = runner.study
    axes = [a.name for a in study.axes if any(_num(r.get(a.name)) is not None for r in rows)]
    cats = [a.name for a in study.axes if a.name not in axes]
    kpis = [k for k in study.kept_kpis if any(_num(r.get(k)) is not None for r in rows)][:MAX_KPI_PLOTS]
    if not kpis or not (axes or cats):
        return ""
    xs = axes or cats
    fig = Figure(figsize=(4.2 * len(xs), 3.0 * len(kpis)), layout="constrained")
    grid = fig.subplots(len(kpis), len(xs), squeeze=False)
    for i, k in enumerate(kpis):
        for j, ax_name in enumerate(xs):
            ax = grid[i, j]
            ok = [r for r in rows if _num(r.get(k)) is not None]
            if ax_name in axes:
                x = [_num(r.get(ax_name)) for r in ok]
            else:
                labels = sorted({str(r.get(ax_name)) for r in ok})
                x = [labels.index(str(r.get(ax_name))) for r in ok]
                ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
            group = cats[0] if axes and cats else None
            if group is None:
                colour = ["tab:green" if r.get("targets_met") else "tab:red" if r.get("targets_met") is False
                          else "tab:blue" for r in ok]
                ax.scatter(x, [_num(r.get(k)) for r in ok], c=colour, s=14)
            else:  # a numeric x: one colour per value of the first categorical axis; x marks a broken target
                for n, label in enumerate(sorted({str(r.get(group)) for r in ok})):
                    for met, marker in ((True, "o"), (False, "x")):
                        pts = [(xv, _num(r.get(k))) for xv, r in zip(x, ok)
                               if str(r.get(group)) == label and bool(r.get("targets_met")) == met]
                        if pts:
                            ax.scatter(*zip(*pts), color=f"C{n}", marker=marker, s=18,
                                       label=f"{group}={label}" if met or not any(
                                           bool(r.get("targets_met")) for r in ok if str(r.get(group)) == label)
                                       else None)
                if i == 0 and j == 0:
                    ax.legend(fontsize=7)
            ax.set_xlabel(ax_name)
            ax.set_ylabel(k, fontsize=8)
            ax.grid(alpha=0.3)
    return ("<h2>KPIs against the axes</h2><p>green or a dot: every target met; red or a cross: a target "
            "broken.</p>" + _png(fig))


def _pareto_html(runner: Any, rows: list[dict[str, Any]]) -> str:
    objs = runner.study.objectives
    if len(objs) != 2:
        return ""
    ok = [r for r in rows if _num(r.get(objs[0].kpi)) is not None and _num(r.get(objs[1].kpi)) is not None]
    if not ok:
        return ""
    # ok holds the rows where both are numbers
    pts = [(cast(float, _num(r[objs[0].kpi])), cast(float, _num(r[objs[1].kpi]))) for r in ok]
    front = pareto(pts, (objs[0].sense, objs[1].sense))
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=14, color="tab:grey", label="variants")
    fp = sorted(pts[i] for i in front)
    ax.plot([p[0] for p in fp], [p[1] for p in fp], "o-", color="tab:red", label="Pareto front")
    ax.set_xlabel(f"{objs[0].kpi} ({objs[0].sense})")
    ax.set_ylabel(f"{objs[1].kpi} ({objs[1].sense})")
    ax.legend()
    ax.grid(alpha=0.3)
    cols = ["variant"] + [a.name for a in runner.study.axes] + [objs[0].kpi, objs[1].kpi]
    return "<h2>Pareto front</h2>" + _png(fig) + _table([ok[i] for i in front], cols)


def _targets_html(runner: Any, rows: list[dict[str, Any]]) -> str:
    if not runner.study.targets:
        return ""
    parts = ["<h2>Pilot targets</h2><table><tr><th>target</th><th>KPI</th><th>bound</th><th>variants meeting it"
             "</th></tr>"]
    for t in runner.study.targets:
        meeting = [r["variant"] for r in rows if r.get(f"target.{t.name}")]
        bound = " and ".join(x for x in (f"≥ {t.min:g}" if t.min is not None else "",
                                         f"≤ {t.max:g}" if t.max is not None else "") if x)
        listed = ", ".join(meeting[:30]) + (f" … ({len(meeting)} in all)" if len(meeting) > 30 else "")
        parts.append(f"<tr><td>{html.escape(t.label or t.name)}</td><td>{html.escape(t.kpi)}</td><td>{bound}</td>"
                     f"<td>{len(meeting)} of {len(rows)}: {html.escape(listed)}</td></tr>")
    return "".join(parts) + "</table>"


def _heatmaps(runner: Any) -> str:
    from cosim.rundir import read_meta, read_table
    from cosim.study.store import RUNS

    out = []
    root = runner.out / RUNS
    chosen = [vid for vid in runner.order if (root / vid / "timeseries" / "buses.parquet").is_file()]
    for vid in chosen[: runner.study.report.max_heatmaps]:
        run_dir = root / vid
        buses = read_table(run_dir, "buses")
        assert buses is not None  # chosen: the run has buses.parquet
        meta = read_meta(run_dir) if (run_dir / "meta.json").is_file() else {}
        slack = (meta.get("grid") or {}).get("slack_bus")
        attrs = [a for a in ("v_a_pu", "v_b_pu", "v_c_pu", "v_pu") if buses.ids(a)]
        ids = [b for b in dict.fromkeys(i for a in attrs for i in buses.ids(a)) if b != slack]
        if not ids:
            continue
        stack = np.stack([buses.matrix(a, ids)[1] for a in attrs])  # (phases, steps, buses)
        with np.errstate(all="ignore"):
            dev = np.where(np.abs(np.nanmax(stack, 0) - 1) > np.abs(np.nanmin(stack, 0) - 1),
                           np.nanmax(stack, 0), np.nanmin(stack, 0))  # the phase furthest from 1 pu
        fig = Figure(figsize=(11, 0.12 * len(ids) + 1.8), layout="constrained")
        ax = fig.subplots()
        hours = buses.t_s / 3600.0
        im = ax.imshow(dev.T, aspect="auto", cmap="RdBu_r", vmin=0.9, vmax=1.1, interpolation="nearest",
                       extent=(hours[0], hours[-1] if len(hours) > 1 else 1.0, len(ids) - 0.5, -0.5))
        ax.set_yticks(range(len(ids)), ids, fontsize=5 if len(ids) > 30 else 7)
        ax.set_xlabel("hours from the start")
        fig.colorbar(im, ax=ax, label="voltage (pu), the phase furthest from 1")
        axes_txt = ", ".join(f"{k}={_fmt(v)}" for k, v in runner.variants[vid].axes.items())
        out.append(f"<h3>{vid}: {html.escape(axes_txt)}</h3>" + _png(fig))
    return "<h2>Voltage heat maps (node × time)</h2>" + "".join(out) if out else ""


def _lifetime_html(runner: Any, rows: list[dict[str, Any]]) -> str:
    spec = runner.study.lifetime
    if spec is None:
        return ""
    from devices.battery import ageing

    p = ageing.MODELS[spec.chemistry]
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    years = np.linspace(0, spec.years, 200)
    n = 0
    for r in rows[:12]:
        for k in [k for k in r if k.startswith("lifetime.") and k.endswith(".fd_cycle_per_day")]:
            dev = k.split(".")[1]
            per_day = (_num(r[k]) or 0) + (_num(r.get(f"lifetime.{dev}.fd_calendar_per_day")) or 0)
            ax.plot(years, 1 - ageing.loss(per_day * years * 365.25, p), label=f"{r['variant']} {dev}")
            n += 1
    if not n:
        return ""
    ax.axhline(spec.eol_soh, color="grey", ls="--", label="end of life")
    ax.set_xlabel("years")
    ax.set_ylabel("state of health")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return f"<h2>Battery state of health ({html.escape(p.name)})</h2>" + _png(fig)


def _economics_html(rows: list[dict[str, Any]]) -> str:
    eco = [r for r in rows if r.get("eco.tco_community_eur") is not None][:30]
    if not eco:
        return ""
    fig = Figure(figsize=(max(6, 0.5 * len(eco) + 3), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(eco))
    ax.bar(x - 0.2, [r["eco.tco_dso_eur"] / 1000 for r in eco], 0.4, label="DSO")
    ax.bar(x + 0.2, [r["eco.tco_households_eur"] / 1000 for r in eco], 0.4, label="households")
    ax.set_xticks(x, [r["variant"] for r in eco], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("TCO (kEUR, discounted)")
    ax.legend()
    cols = ["variant", "eco.case", "eco.strengthening", "eco.tco_dso_eur", "eco.tco_households_eur",
            "eco.tco_community_eur", "eco.npv_eur", "eco.payback_years"]
    return "<h2>Economics (total cost of ownership)</h2>" + _png(fig) + _table(eco, cols)


CSS = ("body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
       "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}img{max-width:100%}")


def render(runner: Any) -> str:
    from cosim.study.tables import search_rows

    rows = runner.rows()
    study = runner.study
    s = runner.status
    cols = ["variant", "status"] + [a.name for a in study.axes] + list(study.kept_kpis) + \
        (["targets_met"] if study.targets else []) + ["wall_s"]
    failed = [r for r in rows if r["status"] == "failed"]
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>study {html.escape(study.name)}</title>"
             f"<style>{CSS}</style></head><body><h1>Study {html.escape(study.name)}</h1>",
             f"<p>{html.escape(study.description)}</p>",
             f"<p>state: <b>{s.state}</b>; {s.done} variants run, {s.failed} failed, {s.cached} reused from an "
             f"earlier run; base scenario {html.escape(str(runner.ls.scenario_path.name))}"
             f"{' (' + html.escape(study.scenario.variant) + ')' if study.scenario.variant else ''}</p>",
             _targets_html(runner, rows)]
    if runner.searches:
        srows = search_rows(runner)
        parts.append("<h2>Search</h2>" + _table(srows, list(srows[0])))
    parts += [_pareto_html(runner, rows), _kpi_plots(runner, rows), _heatmaps(runner),
              _lifetime_html(runner, rows), _economics_html(rows), "<h2>All variants</h2>", _table(rows, cols)]
    if failed:
        parts.append("<h2>Failed variants</h2>" + _table(failed, ["variant", "error"]))
    parts.append("</body></html>")
    path = runner.out / REPORT
    path.write_text("\n".join(p for p in parts if p), encoding="utf-8")
    return str(path)


__all__ = ["pareto", "render"]
