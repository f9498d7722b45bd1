"""The load and PV power of every point of a grid over a run, one row per point and one column per step.

Loads: ``file`` follows the DSF-SE document's own ``powerProfiles`` where a load names one (OpenDSS semantics:
a normalised profile multiplies the load's kW, otherwise items are kW), a constant kW elsewhere;
``constant`` is the grid's kW throughout; ``s4g-residential`` gives each load a measured S4G household
(normalised to its peak over the run, times the load's kW, so kW is the peak as in OpenDSS). PV units of a
DSF-SE document follow their own profile if they name one, else the S4G PV measurement of the grid's country.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import numpy as np

from simulators.profiles import load_profile, pv_profile, s4g_columns

from .errors import ApiError

PV_COLUMN = {"denmark": "fur_denmark", "italy": "bolzano_italy"}


def _profile_table(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for ri, radial in enumerate(doc.get("radials") or []):
        if not isinstance(radial, dict):
            continue
        profiles = radial.get("powerProfiles") or []
        if not isinstance(profiles, list):
            raise ApiError(422, f"radials[{ri}].powerProfiles: expected a list")
        for k, prof in enumerate(profiles):
            where = f"radials[{ri}].powerProfiles[{k}]"
            if not isinstance(prof, dict) or not isinstance(prof.get("id"), str):
                raise ApiError(422, f"{where}: expected an object with an 'id'")
            items = prof.get("items")
            if (not isinstance(items, list) or not items or len(items) > 1_000_000
                    or not all(_finite(v) for v in items)):
                raise ApiError(422, f"{where}.items: expected a non-empty list of finite numbers")
            interval = prof.get("interval", 1)
            mult = prof.get("multiplier", 1)
            if not _finite(interval) or interval <= 0:
                raise ApiError(422, f"{where}.interval: expected hours per item > 0, found {interval!r}")
            if not _finite(mult):
                raise ApiError(422, f"{where}.multiplier: expected a number, found {mult!r}")
            table[prof["id"]] = {"items": np.asarray(items, dtype=float), "interval_h": float(interval),
                                 "normalized": bool(prof.get("normalized", True)), "multiplier": float(mult)}
    return table


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _sample(prof: dict[str, Any], t_h: np.ndarray, base_kw: float) -> np.ndarray:
    """Profile values at times ``t_h`` (repeating), in W."""
    items = prof["items"][(t_h // prof["interval_h"]).astype(int) % len(prof["items"])] * prof["multiplier"]
    out: np.ndarray = (items * base_kw if prof["normalized"] else items) * 1000.0
    return out


def load_powers(doc: dict[str, Any], names: list[str], base_w: np.ndarray, how: str, start: datetime,
                step_s: int, n: int) -> np.ndarray:
    """(loads, steps) in W; ``base_w`` is each load's kW of the grid file (in W)."""
    t_h = np.arange(n) * step_s / 3600.0
    out = np.repeat(base_w[:, None], n, axis=1)
    if how == "file":
        table = _profile_table(doc)
        wanted = _dsf_profile_ids(doc, "loads", "power_profile_id")
        for k, name in enumerate(names):
            prof = table.get(wanted.get(name, ""))
            if prof is not None:
                out[k] = _sample(prof, t_h, base_w[k] / 1000.0)
    elif how == "s4g-residential":
        columns = s4g_columns("s4g-residential")
        for k, name in enumerate(names):
            column = columns[sum(name.encode()) % len(columns)]  # stable: the same load, the same household
            shape = load_profile("s4g-residential", column, start=start, duration_s=n * step_s, step_s=step_s)
            peak = float(np.max(shape)) if len(shape) else 0.0
            out[k] = base_w[k] * (shape / peak if peak > 0 else 0.0)
    return out


def _dsf_profile_ids(doc: dict[str, Any], key: str, field: str) -> dict[str, str]:
    ids: dict[str, str] = {}
    for radial in doc.get("radials") or []:
        for item in (radial.get(key) or []) if isinstance(radial, dict) else []:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ids[item["id"]] = str(item.get(field) or "")
    return ids


def pv_powers(doc: dict[str, Any], units: list[dict[str, Any]], start: datetime, step_s: int,
              n: int) -> np.ndarray:
    """(PV units, steps) in W, load arrow (production is negative)."""
    out = np.zeros((len(units), n))
    if not units:
        return out
    t_h = np.arange(n) * step_s / 3600.0
    table = _profile_table(doc)
    country = str((doc.get("common") or {}).get("country", "")).lower()
    measured = pv_profile("s4g-pv", PV_COLUMN.get(country, "fur_denmark"), start=start, duration_s=n * step_s,
                          step_s=step_s)
    for k, unit in enumerate(units):
        data = unit["data"]
        kwp = data.get("max_power_kW", data.get("kVA", 0))
        if not _finite(kwp) or kwp < 0:
            raise ApiError(422, f"photovoltaics {unit['id']!r}: max_power_kW must be a number >= 0, found {kwp!r}")
        prof = table.get(str(data.get("power_profile_id") or ""))
        out[k] = -(_sample(prof, t_h, float(kwp)) if prof is not None else measured * float(kwp))
    return out
