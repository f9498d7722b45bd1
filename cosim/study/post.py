"""KPIs a study adds to those of a run: battery lifetime (on the worker, from the SoC series) and economics (on
the client, from each variant's scenario document and KPIs)."""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cosim.study.economics import Assumptions, Case


def lifetime_kpis(run_dir: str | Path, spec: dict[str, Any]) -> dict[str, Any]:
    """``lifetime.<device>.*``: degradation rates, SoH after ``years``, years to ``eol_soh``, cycles per day."""
    from cosim.rundir import read_meta, read_table
    from devices.battery import ageing

    params = ageing.MODELS[spec.get("chemistry", "xu2018_lmo")]
    meta = read_meta(run_dir)
    devices = read_table(run_dir, "devices")
    ids = [d["id"] for d in meta.get("devices", [])]
    out: dict[str, Any] = {}
    years = int(spec.get("years", 20))
    for pattern in spec["devices"]:
        for dev in fnmatch.filter(ids, pattern):
            soc = None if devices is None else devices.get(dev, "soc")
            key = f"lifetime.{dev}"
            if soc is None or not np.isfinite(soc).any():
                out |= {f"{key}.soh_{years}y": None, f"{key}.rul_years": None}
                continue
            res = ageing.analyse(soc, float(meta["step_s"]), float(spec.get("temperature_c", 25.0)), params)
            out |= {
                f"{key}.efc_per_day": res.efc_per_day,
                f"{key}.fd_cycle_per_day": res.fd_cycle_per_day,
                f"{key}.fd_calendar_per_day": res.fd_calendar_per_day,
                f"{key}.soh_{years}y": res.soh_after(years * 365.25, params),
                f"{key}.rul_years": res.years_to(float(spec.get("eol_soh", 0.8)), params),
            }
    return out


def _capacity_kwh(devices: list[dict[str, Any]], patterns: list[str], kpis: dict[str, Any]) -> float:
    """Installed storage: the devices matching ``patterns`` whose battery moved energy in the run (a battery
    left idle, e.g. under ``no_storage``, counts as not installed)."""
    total = 0.0
    for dev in devices:
        moved = kpis.get(f"devices.{dev.get('id')}.batt_throughput_kwh")
        if moved is not None and moved <= 0:
            continue
        if any(fnmatch.fnmatch(str(dev.get("id")), p) for p in patterns):
            battery = (dev.get("config") or {}).get("battery") or {}
            total += float(battery.get("capacity_wh") or 0.0) / 1000.0
    return total


def energy_price(doc: dict[str, Any], default: float = 0.30) -> float:
    price = ((doc.get("profiles") or {}).get("price") or {})
    if price.get("kind", "fixed") == "fixed" and price.get("import_eur_per_kwh") is not None:
        return float(price["import_eur_per_kwh"])
    periods = price.get("periods") or []
    return float(np.mean([p["import_eur_per_kwh"] for p in periods])) if periods else default


def economics_case(doc: dict[str, Any], kpis: dict[str, Any], spec: dict[str, Any], breaks_grid: bool) -> Case:
    """The economic :class:`Case` of one variant (annualised from its simulated period)."""
    from cosim.study.economics import Case

    devices = doc.get("devices") or []
    pv_kwp = sum(float((d.get("config") or {}).get("pv_kwp") or 0.0) for d in devices)
    simulated_s = kpis.get("run.simulated_s") or 0
    per_year = 365.25 * 86400 / simulated_s if simulated_s else 0.0
    return Case(
        pv_kwp=pv_kwp,
        dso_storage_kwh=_capacity_kwh(devices, spec.get("dso_storage", []), kpis),
        household_storage_kwh=_capacity_kwh(devices, spec.get("household_storage", []), kpis),
        losses_kwh_per_year=float(kpis.get("grid.losses_kwh") or 0.0) * per_year,
        bill_eur_per_year=float(kpis.get("total.bill_eur") or 0.0) * per_year,
        strengthening=breaks_grid and spec.get("strengthening", "dsf-ee") != "none",
    )


def assumptions(spec: dict[str, Any], doc: dict[str, Any], lifetime_years: float | None) -> Assumptions:
    from cosim.study.economics import Assumptions

    keys = set(Assumptions.__dataclass_fields__)
    values = {k: v for k, v in spec.items() if k in keys and v is not None}
    values.setdefault("energy_eur_per_kwh", energy_price(doc))
    if "battery_lifetime_years" not in values and lifetime_years:
        values["battery_lifetime_years"] = lifetime_years
    return Assumptions(**values)


__all__ = ["assumptions", "economics_case", "energy_price", "lifetime_kpis"]
