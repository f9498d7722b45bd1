"""The report page: one self-contained HTML file (plotly's JavaScript embedded once, no network), with the key
figures beside the baseline's, the sections' figures, compact site and device tables and the KPI definitions.

Every value in the key-figure table carries its kpis.json key and raw value (``data-kpi``, ``data-value``), so a
browser test can check the page against kpis.json.
"""

from __future__ import annotations

import json
from typing import Any

from cosim import kpi_format as kf
from cosim.report_context import ReportContext
from cosim.report_sections import Section, e

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em auto;max-width:1250px;color:#222;
padding:0 1em}
h1{margin-bottom:0}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}.sub{color:#666;margin-top:.2em}
.banner,.warn{background:#fff3cd;border:1px solid #e0b100;padding:.6em 1em;margin:.8em 0;border-radius:4px}
.note{color:#333;max-width:1100px}
nav{position:sticky;top:0;background:#fff;padding:.4em 0;border-bottom:1px solid #eee;z-index:10;font-size:14px}
nav a{margin-right:1em;color:#1f5fa8;text-decoration:none}
table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}th:first-child,td:first-child{text-align:left}
th{background:#f4f4f4;position:sticky;top:0}td.l{text-align:left}tr.sec td{background:#fafafa;font-weight:600}
.scroll{overflow:auto;max-height:460px}.better{color:#2a7a2a}.worse{color:#b03030}
.kpis td[title]{cursor:help;text-decoration:underline dotted #aaa}
details{margin:.5em 0 1.5em}summary{cursor:pointer;color:#1f5fa8}footer{margin:3em 0 1em;color:#666;font-size:13px}
"""

#: keys where a smaller value is better, for the baseline comparison's colour
LOWER_IS_BETTER = ("import_kwh", "peak_import_kw", "peak_export_kw", "bill_eur", "losses_kwh", "outside",
                   "loading_pct", "unmet", "waiting", "curtailed", "export_kwh")


def _json(x: Any) -> str:
    return e(json.dumps(x))


def _delta(key: str, value: Any, base: Any) -> str:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or isinstance(value, bool):
        return ""
    info = kf.info(key)
    d = (value - base) * info.scale
    text = f"{d:+.1f}" if info.unit == "%" else kf.number(d, info.unit)
    if text.lstrip("+-") in ("0", "0.0", "0.0000"):
        return "±0"
    lower = any(word in key for word in LOWER_IS_BETTER)
    good = (d < 0) == lower
    if not text.startswith(("+", "-")):
        text = "+" + text
    return f'<span class="{"better" if good else "worse"}">{e(text)}</span>'


def key_figures(ctx: ReportContext) -> str:
    base = kf.flatten(ctx.baseline[1]) if ctx.baseline else None
    head = "<tr><th>KPI</th><th>value</th><th>unit</th>"
    if base is not None:
        head += f"<th>baseline ({e(ctx.baseline[0] if ctx.baseline else '')})</th><th>change</th>"
    rows, section = [], None
    cols = 5 if base is not None else 3
    for r in kf.summary(ctx.kpis):
        if r.section != section:
            section = r.section
            rows.append(f'<tr class="sec"><td colspan="{cols}">{e(section)}</td></tr>')
        cells = (f'<tr data-kpi="{e(r.key)}" data-value="{_json(r.value)}"><td title="{e(r.help)}">{e(r.label)}</td>'
                 f'<td class="v">{e(r.text)}</td><td class="l">{e(r.unit)}</td>')
        if base is not None:
            b = base.get(r.key)
            cells += f'<td class="b">{e(kf.fmt(r.key, b))}</td><td>{_delta(r.key, r.value, b)}</td>'
        rows.append(cells + "</tr>")
    return f'<table class="kpis">{head}</tr>{"".join(rows)}</table>'


def _peaks_note(ctx: ReportContext) -> str:
    t, g = ctx.kpis.get("total", {}), ctx.kpis.get("grid", {})
    warm = ctx.kpis.get("run", {}).get("warmup_s") or 0
    warm_text = (f"Peak powers leave out the first {kf.duration(warm)} (warm-up): at the first step no controller "
                 "setpoint has reached a device yet. " if warm else "")
    if t.get("peak_import_kw") is None or g.get("peak_import_kw") is None:
        return f'<p class="note">{warm_text}</p>' if warm_text else ""
    return (f'<p class="note">{warm_text}Two peak imports: at the sites\' connection points '
            f"({kf.show('total.peak_import_kw', t['peak_import_kw'])}, all sites together at one step) and at the "
            f"transformer ({kf.show('grid.peak_import_kw', g['peak_import_kw'])}), which also carries the grid's "
            "loads without a site and the line losses. Hover a KPI for its definition; all are under "
            '<a href="#definitions">Definitions</a>.</p>')


SITE_COLUMNS = (("import", "import_kwh"), ("export", "export_kwh"), ("consumption", "load_kwh"),
                ("PV", "pv_kwh"), ("self-consumption", "self_consumption_ratio"),
                ("self-sufficiency", "self_sufficiency_ratio"), ("peak import", "peak_import_kw"),
                ("bill", "bill_eur"), ("V min", "v_min_pu"))
DEVICE_COLUMNS = (("family", "family"), ("site", "site"), ("net drawn", "net_kwh"), ("PV", "pv_kwh"),
                  ("PV curtailed", "pv_curtailed_pct"), ("battery throughput", "batt_throughput_kwh"),
                  ("full cycles", "batt_efc"), ("SoC min", "soc_min"), ("SoC max", "soc_max"))


def entity_table(entities: dict[str, dict[str, Any]], columns: tuple[tuple[str, str], ...], what: str,
                 sort_key: str | None = None) -> str:
    """One row per site or device, only the columns some row has a value in; the unit in the header."""
    if not entities:
        return f"<p>No {what}s in this run.</p>"
    used = [(name, key) for name, key in columns if any(v.get(key) not in (None, 0, 0.0) for v in entities.values())]
    items = list(entities.items())
    if sort_key:
        items.sort(key=lambda kv: -(kv[1].get(sort_key) or 0))
    head = "".join(f"<th>{e(name)}" + (f" {e(kf.display_unit(key))}" if kf.display_unit(key) else "") + "</th>"
                   for name, key in used)
    rows = "".join(f'<tr data-{what}="{e(ident)}"><td>{e(ident)}</td>'
                   + "".join(f"<td>{e(kf.fmt(key, v.get(key)))}</td>" for _, key in used) + "</tr>"
                   for ident, v in items)
    return f'<div class="scroll"><table><tr><th>{what}</th>{head}</tr>{rows}</table></div>'


def definitions() -> str:
    rows = []
    for key, info in list(kf.KEYS.items()) + [(f"(site, device) {k}", v) for k, v in kf.LEAF.items()]:
        if info.help or info.unit:
            rows.append(f"<tr><td>{e(info.label)}</td><td class='l'><code>{e(key)}</code></td><td class='l'>"
                        f"{e(info.unit)}</td><td class='l'>{e(info.help)}</td></tr>")
    return ("<table><tr><th>KPI</th><th>key in kpis.json</th><th>unit</th><th>definition</th></tr>"
            + "".join(rows) + "</table>")


def banner(ctx: ReportContext) -> str:
    info = ctx.kpis.get("run", {})
    out = []
    status = info.get("status")
    if status != "complete":
        steps = f"{info.get('steps_recorded')} of {info.get('steps_expected') or '?'} steps recorded"
        why = "run.json is missing: the run may not have finished" if status == "unknown" else f"status “{status}”"
        out.append(f'<div class="banner"><b>Partial run</b> ({e(why)}): {e(steps)}. KPIs cover the recorded steps '
                   "only.</div>")
    for w in ctx.meta.get("warnings") or []:
        out.append(f'<div class="warn"><b>Build warning:</b> {e(w)}</div>')
    return "".join(out)


def page(ctx: ReportContext, sections: list[Section], plotly_js: str) -> str:
    info = ctx.kpis.get("run", {})
    scenario = info.get("scenario")
    figure_html = []
    n = 0
    for s in sections:
        parts = [f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>{s.html}']
        for fig in s.figures:
            n += 1
            parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{s.id}-{n}",
                                     config={"displaylogo": False, "responsive": True,
                                             "toImageButtonOptions": {"format": "svg"}}))
        parts.append(s.after + "</section>")
        figure_html.append("".join(parts))
    nav = "".join(f'<a href="#{e(s.id)}">{e(s.title)}</a>' for s in sections)
    meta = ctx.meta
    profile_loads = len((meta.get("grid") or {}).get("profile_loads") or [])
    others = (f" · {profile_loads} further grid loads on their own profiles" if profile_loads else "")
    wall = info.get("wall_time_s")
    build = meta.get("build_s")
    timing = (f" · wall time {kf.duration(wall)}" + (f" (start-up {kf.duration(build)})" if build else "")
              if wall is not None else "")
    base = (f'<p class="note">Baseline: <b>{e(ctx.baseline[0])}</b> (its KPIs beside this run\'s).</p>'
            if ctx.baseline else "")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Run report: {e(scenario)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly_js}</script></head><body>'
        f"<h1>Run report: {e(scenario)}</h1>"
        f'<p class="sub">start {e(info.get("start"))} · {e(kf.duration(info.get("simulated_s") or 0))} simulated at '
        f'{e(kf.duration(info.get("step_s")))} steps · status <b id="status">{e(info.get("status"))}</b> · '
        f'{len(meta.get("sites", []))} sites, {len(meta.get("devices", []))} devices, '
        f'{len(meta.get("controllers", []))} controllers{e(others)}{e(timing)}</p>'
        f'<nav><a href="#summary">Key figures</a>{nav}<a href="#sites">Sites</a><a href="#devices">Devices</a>'
        '<a href="#definitions">Definitions</a></nav>'
        f"{banner(ctx)}"
        f'<section id="summary"><h2>Key figures</h2>{base}{key_figures(ctx)}{_peaks_note(ctx)}</section>'
        + "".join(figure_html)
        + '<section id="sites"><h2>Sites</h2>'
        + entity_table(ctx.kpis.get("sites", {}), SITE_COLUMNS, "site", sort_key="import_kwh")
        + '</section><section id="devices"><h2>Devices</h2>'
        + entity_table(ctx.kpis.get("devices", {}), DEVICE_COLUMNS, "device")
        + f'</section><section id="definitions"><h2>Definitions</h2>{definitions()}</section>'
        '<footer>Made by s4g-hil from the run directory alone (meta.json, run.json, timeseries/, sessions.jsonl, '
        'events.jsonl). <a href="#definitions">Definitions of every KPI</a>; the formulas in full are in '
        "docs/results.md of the s4g-hil sources.</footer></body></html>"
    )
