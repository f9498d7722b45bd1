"""How KPIs look on the terminal: flattened keys, value formatting, units from key suffixes, labels, and the
rich tables of one run (:func:`table`) and of several runs side by side (:func:`compare_table`).

Computing KPIs is :mod:`cosim.kpi`; this module only presents the dict it returns (``kpis.json``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.table import Table as RichTable


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested KPIs -> {"grid.voltage.a.min_pu": value, ...}."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out |= flatten(v, key + ".")
        else:
            out[key] = v
    return out


def headline(kpis: dict[str, Any]) -> dict[str, Any]:
    """The KPIs shown in terminal tables: run, total and grid (per-site detail is in kpis.json and the report)."""
    return {k: v for k, v in flatten(kpis).items() if k.split(".", 1)[0] in ("run", "total", "grid")}


def fmt(key: str, value: Any) -> str:
    """Human formatting of one KPI value; the unit is read from the key."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if key.endswith("_ratio"):
            return f"{100 * value:.1f} %"
        if key.endswith("_pct"):
            return f"{value:.1f} %"
        if key.endswith(("soc_min", "soc_max")):
            return f"{100 * value:.1f} %"
        if key.endswith("_pu"):
            return f"{value:.4f}"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


#: (label, key in the flattened KPIs) of the terminal summary; everything else is in kpis.json and the report
SUMMARY_ROWS = (
    ("energy imported at the PCCs", "total.import_kwh"),
    ("energy exported at the PCCs", "total.export_kwh"),
    ("household load", "total.load_kwh"),
    ("PV production", "total.pv_kwh"),
    ("self-consumption", "total.self_consumption_ratio"),
    ("self-sufficiency", "total.self_sufficiency_ratio"),
    ("PV curtailed", "total.pv_curtailed_pct"),
    ("energy bill", "total.bill_eur"),
    ("battery equivalent full cycles", "total.batt_efc"),
    ("peak import at the transformer", "grid.peak_import_kw"),
    ("peak export at the transformer", "grid.peak_export_kw"),
    ("grid losses", "grid.losses_kwh"),
    ("voltage min", "total.v_min_pu"),
    ("voltage max", "total.v_max_pu"),
    ("node-minutes outside ±10 %", "grid.v_minutes_outside_10pct"),
    ("node-minutes outside ±5 %", "grid.v_minutes_outside_5pct"),
    ("max line loading", "grid.max_line_loading_pct"),
    ("max transformer loading", "grid.max_trafo_loading_pct"),
    ("PCC voltage within 230 V ±10 %", "grid.v_within_10pct"),
    ("EV arrivals", "ev.total.arrivals"),
    ("EV charging services completed", "ev.total.services_completed"),
    ("EV energy delivered", "ev.total.energy_delivered_wh"),
    ("EV energy unmet at departure", "ev.total.unmet_energy_wh"),
    ("EV peak charging power", "ev.total.peak_charging_w"),
    ("EV mean waiting time", "ev.total.waiting_mean_s"),
)

_UNITS = (("_kwh", "kWh"), ("_kw", "kW"), ("_wh", "Wh"), ("_w", "W"), ("_eur", "EUR"), ("_pu", "pu"),
          ("_10pct", "node-min"), ("_5pct", "node-min"), ("_s", "s"))

SITE_COLUMNS = (("import kWh", "import_kwh"), ("export kWh", "export_kwh"), ("load kWh", "load_kwh"),
                ("PV kWh", "pv_kwh"), ("self-cons.", "self_consumption_ratio"),
                ("self-suff.", "self_sufficiency_ratio"), ("peak imp. kW", "peak_import_kw"),
                ("SoC min", "soc_min"), ("SoC max", "soc_max"), ("V min pu", "v_min_pu"))


def _compact(key: str, value: Any) -> str:
    """Short cell text for the per-site table (the unit is in the column header)."""
    if not isinstance(value, float) or key.endswith("_pu"):
        return fmt(key, value)
    if key.endswith(("_ratio", "soc_min", "soc_max")):
        return f"{100 * value:.0f} %"
    return f"{value:.1f}"


def _unit(key: str) -> str:
    return next((u for suffix, u in _UNITS if key.endswith(suffix) and "within" not in key), "")


def table(kpis: dict[str, Any], wall_time_s: float | None = None, sites: bool = True) -> Group:
    """The terminal summary: headline KPIs, then one row per site; wall time in the caption when given."""
    flat = flatten(kpis)
    caption = f"wall time {wall_time_s:.2f} s" if wall_time_s is not None else None
    head = RichTable(title=f"KPIs: {kpis.get('run', {}).get('scenario') or 'run'}", caption=caption)
    head.add_column("KPI")
    head.add_column("value", justify="right")
    head.add_column("unit")
    for label, key in SUMMARY_ROWS:
        if key in flat:
            head.add_row(label, fmt(key, flat[key]), _unit(key))
    parts: list[Any] = [head]
    site_kpis = kpis.get("sites") or {}
    if sites and site_kpis:
        st = RichTable(title="per site")
        st.add_column("site")
        for label, _ in SITE_COLUMNS:
            st.add_column(label, justify="right")
        for site, k in site_kpis.items():
            st.add_row(site, *(_compact(key, k.get(key)) for _, key in SITE_COLUMNS))
        parts.insert(0, st)
    if kpis.get("pilot"):
        from cosim.pilot_kpis import rich_table

        parts.append(rich_table(kpis["pilot"]))
    return Group(*parts)


def compare_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> RichTable:
    """Headline KPIs of several runs side by side (rows = KPIs, one column per run)."""
    t = RichTable(title="KPI comparison")
    t.add_column("KPI")
    flat = [(name, headline(k)) for name, k in runs]
    keys: dict[str, None] = {}
    for _, f in flat:
        keys |= dict.fromkeys(f)
    for name, _ in flat:
        t.add_column(name, justify="right")
    for key in keys:
        t.add_row(key, *(fmt(key, f.get(key)) for _, f in flat))
    return t
