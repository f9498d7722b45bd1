"""The report of one run: one self-contained, interactive report.html, from the run directory alone.

``render(run_dir)`` recomputes the KPIs (so the page always matches the data), loads what the sections read
(:mod:`cosim.report_context`), asks every section for its part and writes ``report/report.html``: plotly figures
(zoom, hover, toggle series) with plotly's JavaScript embedded once, so the page needs no other file and no
network. ``static=True`` also writes the figures for papers as PNG and SVG (:mod:`cosim.report_static`). A partial
run (status other than "complete") is rendered and flagged.

Sections are functions ``(ReportContext) -> Section | None``; :data:`SECTIONS` are the built-in ones in page order,
and a pilot adds its own by appending to :data:`EXTRA_SECTIONS` (drawn after the built-in ones)::

    from cosim import report
    from cosim.report_sections import Section

    def my_plot(ctx):                      # ctx.run.tables, ctx.kpis, ctx.meta, ctx.times(t_s), ...
        return Section("my_plot", "My pilot's view", "<p>...</p>", [plotly_figure])

    report.EXTRA_SECTIONS.append(my_plot)
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import cast

from cosim import outage_report, report_context, report_flows, report_grid, report_html
from cosim.report_sections import Section, SectionFn, e, note

REPORT_DIR = "report"
REPORT_FILE = "report.html"
log = logging.getLogger(__name__)

SECTIONS: list[SectionFn] = [
    outage_report.pilot_section,
    report_grid.voltage_profile,
    report_grid.voltage_heatmap,
    report_grid.unbalance,
    report_grid.single_line,
    report_flows.energy_balance,
    report_flows.storage,
    report_flows.ev_service,
    report_flows.setpoints,
    report_grid.loading_duration,
    report_flows.events,
]
#: sections a pilot or a plug-in adds (after the built-in ones); see the module docstring
EXTRA_SECTIONS: list[SectionFn] = []


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return cast(str, get_plotlyjs())


def sections(ctx: report_context.ReportContext) -> list[Section]:
    """Every section that has something to show; one that fails is replaced by a note saying why, so a bug in one
    plot never costs the whole report."""
    out = []
    for fn in [*SECTIONS, *EXTRA_SECTIONS]:
        try:
            s = fn(ctx)
        except Exception as exc:  # reported on the page and in the log
            log.warning("report section %s failed:\n%s", getattr(fn, "__name__", fn), traceback.format_exc())
            name = getattr(fn, "__name__", "section")
            s = Section(name, name.replace("_", " "), note(f"This section could not be drawn: "
                                                           f"{e(type(exc).__name__)}: {e(exc)}", "warn"))
        if s is not None:
            out.append(s)
    return out


def render(run_dir: str | Path, *, baseline: str | Path | None = None, static: bool = False) -> Path:
    """Write run_dir/report/report.html (and with ``static`` the figures as PNG and SVG); return the page's path.

    ``baseline``: a run directory whose KPIs stand beside this run's; by default the newest sibling run of the
    scenario's ``baseline`` variant, when there is one.
    """
    run_dir = Path(run_dir)
    ctx = report_context.load(run_dir, Path(baseline) if baseline is not None else None)
    out = run_dir / REPORT_DIR
    out.mkdir(exist_ok=True)
    if static:
        from cosim import report_static

        report_static.write(ctx.run, out)
    page = out / REPORT_FILE
    page.write_text(report_html.page(ctx, sections(ctx), _plotly_js()), encoding="utf-8")
    return page
