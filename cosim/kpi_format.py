"""How KPIs look to a person: labels, units and definitions of every key, numbers and durations formatted for
reading, and the rich tables of one run (:func:`table`) and of several runs side by side (:func:`compare_table`).

Computing KPIs is :mod:`cosim.kpi`; this module only presents the dict it returns (``kpis.json``). The terminal
and the HTML report show the same rows (:func:`summary`), labels and numbers, so what one says the other says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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


# ---------------------------------------------------------------- what each key means


@dataclass(frozen=True)
class Info:
    """How one KPI is shown: label, display unit, factor from the stored unit to it, and what it means."""

    label: str
    unit: str = ""
    scale: float = 1.0
    help: str = ""


#: per-site, per-device and total keys (the same formulas at each level; docs/results.md has them in full)
LEAF: dict[str, Info] = {
    "import_kwh": Info("energy imported", "kWh", help="energy drawn from the grid at the connection points"),
    "export_kwh": Info("energy exported", "kWh", help="energy fed into the grid at the connection points"),
    "load_kwh": Info("consumption", "kWh", help="energy the sites' loads consumed (devices not included)"),
    "pv_kwh": Info("PV production", "kWh", help="AC energy of the PV systems"),
    "self_consumption_ratio": Info("self-consumption", "%", 100, "share of the PV energy used on site: "
                                   "(PV − export) / PV"),
    "self_sufficiency_ratio": Info("self-sufficiency", "%", 100, "share of the consumption not imported: "
                                   "1 − import / consumption"),
    "peak_import_kw": Info("peak import", "kW", help="highest import at the connection point after the warm-up"),
    "peak_export_kw": Info("peak export", "kW", help="highest export at the connection point after the warm-up"),
    "pv_curtailed_kwh": Info("PV curtailed", "kWh", help="available PV energy that was not used"),
    "pv_curtailed_pct": Info("PV curtailed", "%", help="curtailed share of the available PV energy"),
    "bill_eur": Info("energy bill", "EUR", help="import × import price − export × export price, step by step"),
    "batt_charge_kwh": Info("battery charged", "kWh"),
    "batt_discharge_kwh": Info("battery discharged", "kWh"),
    "batt_throughput_kwh": Info("battery throughput", "kWh", help="charged + discharged"),
    "batt_capacity_kwh": Info("battery capacity", "kWh", help="usable capacity"),
    "batt_efc": Info("battery full cycles", "", help="equivalent full cycles: throughput / (2 × capacity)"),
    "soc_min": Info("SoC min", "%", 100),
    "soc_max": Info("SoC max", "%", 100),
    "v_min_pu": Info("PCC voltage min", "pu", help="lowest voltage at a site's connection point"),
    "v_max_pu": Info("PCC voltage max", "pu", help="highest voltage at a site's connection point"),
    "net_kwh": Info("net energy drawn", "kWh", help="AC energy drawn by the device (− = delivered)"),
    "family": Info("family"),
    "site": Info("site"),
}

#: keys of the run, total, grid and EV sections (flattened)
KEYS: dict[str, Info] = {
    "run.scenario": Info("scenario"),
    "run.status": Info("status"),
    "run.start": Info("start"),
    "run.step_s": Info("step", "s"),
    "run.steps_expected": Info("steps expected"),
    "run.steps_recorded": Info("steps recorded"),
    "run.simulated_s": Info("simulated time", "s"),
    "run.wall_time_s": Info("wall time", "s", help="building the world and running it"),
    "run.warmup_s": Info("warm-up", "s", help="first seconds left out of the peak powers: no controller "
                         "setpoint has reached a device yet"),
    "total.peak_import_kw": Info("peak import at the sites (coincident)", "kW",
                                 help="highest import of all sites together at one step, after the warm-up; "
                                      "without the grid's other loads and losses"),
    "total.peak_export_kw": Info("peak export at the sites (coincident)", "kW",
                                 help="highest export of all sites together at one step, after the warm-up"),
    "total.v_min_pu": Info("PCC voltage min", "pu", help="lowest voltage at any site's connection point"),
    "total.v_max_pu": Info("PCC voltage max", "pu", help="highest voltage at any site's connection point"),
    "grid.power_source": Info("substation power from"),
    "grid.peak_import_kw": Info("peak import at the transformer", "kW",
                                help="highest power into the feeder at its transformer after the warm-up: all "
                                     "loads of the grid, the sites and the losses"),
    "grid.peak_export_kw": Info("peak export at the transformer", "kW",
                                help="highest power back through the transformer after the warm-up"),
    "grid.import_kwh": Info("energy through the transformer", "kWh", help="energy into the feeder"),
    "grid.export_kwh": Info("energy back through the transformer", "kWh"),
    "grid.losses_kwh": Info("grid losses", "kWh", help="line and transformer losses"),
    "grid.losses_pct_of_import": Info("grid losses", "%", help="share of the energy into the feeder"),
    "grid.v_band_pu": Info("voltage band (wide)", "pu"),
    "grid.v_band_tight_pu": Info("voltage band (tight)", "pu"),
    "grid.v_minutes_outside_10pct": Info("node-minutes outside the wide band", "node-min",
                                         help="bus-phase minutes outside ±10 % (EN 50160), slack bus excluded"),
    "grid.v_minutes_outside_5pct": Info("node-minutes outside the tight band", "node-min",
                                        help="bus-phase minutes outside ±5 %, slack bus excluded"),
    "grid.max_line_loading_pct": Info("max line loading", "%"),
    "grid.max_line_loading_line": Info("most loaded line"),
    "grid.max_trafo_loading_pct": Info("max transformer loading", "%"),
    "grid.max_trafo_loading_trafo": Info("most loaded transformer"),
    "grid.v_within_10pct": Info("PCC voltage within 230 V ±10 %", help="pilot target: every site's voltage in "
                                "the wide band at every step"),
    "ev.total.arrivals": Info("EV arrivals"),
    "ev.total.served": Info("EVs that got a charger"),
    "ev.total.services_completed": Info("EVs charged as requested", help="left with all the energy they wanted"),
    "ev.total.energy_wanted_wh": Info("EV energy requested", "kWh", 1e-3),
    "ev.total.energy_delivered_wh": Info("EV energy delivered", "kWh", 1e-3),
    "ev.total.unmet_energy_wh": Info("EV energy not delivered", "kWh", 1e-3,
                                     help="requested minus delivered at departure; EVs that never got a charger "
                                          "count with all they wanted"),
    "ev.total.peak_charging_w": Info("EV peak charging power", "kW", 1e-3),
    "ev.total.waiting_mean_s": Info("EV mean waiting time", "min", 1 / 60, "from arrival to plug-in, over all "
                                    "arrivals"),
    "ev.total.waiting_max_s": Info("EV longest wait", "min", 1 / 60),
    "ev.total.n_waited": Info("EVs that had to wait"),
}
_PHASES = {"a": "phase a", "b": "phase b", "c": "phase c", "pos": "positive sequence"}


def info(key: str) -> Info:
    """The Info of a flattened key; unknown keys get a readable label from the key itself."""
    if key in KEYS:
        return KEYS[key]
    parts = key.split(".")
    if parts[:2] == ["grid", "voltage"] and len(parts) == 4:  # grid.voltage.<phase>.<min_pu|max_bus|...>
        phase, what = _PHASES.get(parts[2], parts[2]), parts[3]
        word = "lowest" if what.startswith("min") else "highest"
        if what.endswith("_pu"):
            return Info(f"{word} bus voltage, {phase}", "pu")
        if what.endswith("_bus"):
            return Info(f"bus with the {word} voltage, {phase}")
        return Info(f"time of the {word} voltage, {phase}", "s")
    if parts[0] == "ev" and len(parts) >= 3:  # a fleet's keys read as the total's
        base = KEYS.get(f"ev.total.{parts[-1]}")
        if base is not None:
            return Info(f"{base.label} ({parts[-2]})" if parts[1] == "fleets" else base.label, base.unit, base.scale,
                        base.help)
    leaf = LEAF.get(parts[-1])
    if leaf is not None:
        return leaf
    return Info(parts[-1].replace("_", " "), _unit_of(parts[-1]))


def label(key: str) -> str:
    return info(key).label


_SUFFIX_UNITS = (("_kwh", "kWh"), ("_kw", "kW"), ("_wh", "Wh"), ("_w", "W"), ("_eur", "EUR"), ("_pu", "pu"),
                 ("_pct", "%"), ("_s", "s"))


def _unit_of(key: str) -> str:
    return next((u for suffix, u in _SUFFIX_UNITS if key.endswith(suffix)), "")


# ---------------------------------------------------------------- numbers for people


def number(x: float, unit: str = "") -> str:
    """A number as a person writes it: 0 without decimals, large values grouped, three significant digits."""
    if not math.isfinite(x):
        return "—"
    if unit == "pu":
        return f"{x:.4f}"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100 or (float(x).is_integer() and unit not in ("%",)):
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.01:
        return f"{x:.2f}"
    return f"{x:.2g}"


def duration(seconds: float | None) -> str:
    """"1 d", "1 d 6 h", "90 min", "45 s"; wall-clock seconds below a minute keep one decimal ("34.5 s")."""
    if seconds is None:
        return "—"
    s = float(seconds)
    if s < 60:
        return f"{s:.1f} s" if not s.is_integer() else f"{s:.0f} s"
    s = round(s)
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    return f"{minutes} min" + (f" {secs} s" if secs else "")


def fmt(key: str, value: Any) -> str:
    """One KPI value in its display unit, without the unit (tables put it in a column or the header)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "–".join(fmt(key, v) for v in value)
    if isinstance(value, (int, float)):
        i = info(key)
        if i.unit == "s" and key.endswith("_s") and not key.endswith("_t_s"):
            return duration(value)
        if key.endswith("_t_s"):
            return duration(value)
        v = float(value) * i.scale
        if i.unit == "%":
            return f"{v:.1f}"
        return number(v, i.unit)
    return str(value)


def show(key: str, value: Any) -> str:
    """Value and unit in one string ("1,114 kWh", "93.7 %", "4 h 2 min")."""
    text = fmt(key, value)
    unit = display_unit(key)
    return text if value is None or not unit or isinstance(value, bool) else f"{text} {unit}"


def display_unit(key: str) -> str:
    """The unit shown next to a value (durations carry their own)."""
    i = info(key)
    return "" if i.unit == "s" else i.unit


# ---------------------------------------------------------------- the summary rows (terminal and report)

#: (section, flattened key) of the summary, in order; rows whose key is absent are left out
SUMMARY: tuple[tuple[str, str], ...] = (
    ("sites", "total.import_kwh"),
    ("sites", "total.export_kwh"),
    ("sites", "total.load_kwh"),
    ("sites", "total.pv_kwh"),
    ("sites", "total.self_consumption_ratio"),
    ("sites", "total.self_sufficiency_ratio"),
    ("sites", "total.pv_curtailed_pct"),
    ("sites", "total.bill_eur"),
    ("sites", "total.batt_efc"),
    ("sites", "total.peak_import_kw"),
    ("sites", "total.v_min_pu"),
    ("sites", "total.v_max_pu"),
    ("grid", "grid.peak_import_kw"),
    ("grid", "grid.peak_export_kw"),
    ("grid", "grid.import_kwh"),
    ("grid", "grid.losses_kwh"),
    ("grid", "grid.v_minutes_outside_10pct"),
    ("grid", "grid.v_minutes_outside_5pct"),
    ("grid", "grid.max_line_loading_pct"),
    ("grid", "grid.max_trafo_loading_pct"),
    ("grid", "grid.v_within_10pct"),
    ("EV charging", "ev.total.arrivals"),
    ("EV charging", "ev.total.services_completed"),
    ("EV charging", "ev.total.energy_wanted_wh"),
    ("EV charging", "ev.total.energy_delivered_wh"),
    ("EV charging", "ev.total.unmet_energy_wh"),
    ("EV charging", "ev.total.peak_charging_w"),
    ("EV charging", "ev.total.waiting_mean_s"),
    ("EV charging", "ev.total.waiting_max_s"),
)
# kept for callers of the earlier name: (label, key)
SUMMARY_ROWS = tuple((info(k).label, k) for _, k in SUMMARY)


@dataclass(frozen=True)
class Row:
    section: str
    key: str
    label: str
    value: Any  # as stored in kpis.json
    text: str  # formatted, without unit
    unit: str
    help: str


def summary(kpis: dict[str, Any]) -> list[Row]:
    """The headline rows of a run, in order, with labels, display units and definitions."""
    flat = flatten(kpis)
    rows = []
    for section, key in SUMMARY:
        if key in flat:
            i = info(key)
            rows.append(Row(section, key, i.label, flat[key], fmt(key, flat[key]), display_unit(key), i.help))
    return rows


def _voltage_extremes(kpis: dict[str, Any]) -> tuple[Any, Any]:
    phases = (kpis.get("grid") or {}).get("voltage") or {}
    lows = [p.get("min_pu") for p in phases.values() if p.get("min_pu") is not None]
    highs = [p.get("max_pu") for p in phases.values() if p.get("max_pu") is not None]
    return (min(lows) if lows else None), (max(highs) if highs else None)


SITE_COLUMNS = (("import kWh", "import_kwh"), ("export kWh", "export_kwh"), ("consumption kWh", "load_kwh"),
                ("PV kWh", "pv_kwh"), ("self-cons. %", "self_consumption_ratio"),
                ("self-suff. %", "self_sufficiency_ratio"), ("peak imp. kW", "peak_import_kw"),
                ("V min pu", "v_min_pu"))


def table(kpis: dict[str, Any], wall_time_s: float | None = None, sites: bool = False) -> Group:
    """The terminal summary: the headline KPIs by section; the per-site table only when ``sites``."""
    caption = f"wall time {duration(wall_time_s)}" if wall_time_s is not None else None
    warmup = (kpis.get("run") or {}).get("warmup_s")
    if warmup:
        note = f"peak powers after a {duration(warmup)} warm-up"
        caption = f"{caption}; {note}" if caption else note
    head = RichTable(title=f"KPIs: {(kpis.get('run') or {}).get('scenario') or 'run'}", caption=caption)
    head.add_column("KPI")
    head.add_column("value", justify="right")
    head.add_column("unit")
    section = None
    for r in summary(kpis):
        if r.section != section:
            if section is not None:
                head.add_section()
            section = r.section
        head.add_row(r.label, r.text, r.unit)
    low, high = _voltage_extremes(kpis)
    if low is not None:
        head.add_row("bus voltage min / max (slack excluded)", f"{low:.4f} / {high:.4f}", "pu")
    parts: list[Any] = [head]
    site_kpis = kpis.get("sites") or {}
    if sites and site_kpis:
        st = RichTable(title="per site")
        st.add_column("site")
        for name, _ in SITE_COLUMNS:
            st.add_column(name, justify="right")
        for site, k in site_kpis.items():
            st.add_row(site, *(fmt(key, k.get(key)) for _, key in SITE_COLUMNS))
        parts.append(st)
    if kpis.get("pilot"):
        from cosim.pilot_kpis import rich_table

        parts.insert(1, rich_table(kpis["pilot"]))  # the pilot's targets right after the headline KPIs
    return Group(*parts)


def compare_table(runs: Sequence[tuple[str, dict[str, Any]]]) -> RichTable:
    """Headline KPIs of several runs side by side (rows = KPIs, one column per run)."""
    t = RichTable(title="KPI comparison")
    t.add_column("KPI")
    t.add_column("unit")
    flat = [(name, headline(k)) for name, k in runs]
    keys: dict[str, None] = {}
    for _, f in flat:
        keys |= dict.fromkeys(f)
    for name, _ in flat:
        t.add_column(name, justify="right")
    for key in keys:
        t.add_row(label(key), display_unit(key), *(fmt(key, f.get(key)) for _, f in flat))
    return t
