"""The GESSCon schedule on the wire: 24 hourly battery set-points as one SenML pack (RFC 8428).

Wire format (the seed's "Table 8", as far as this code knows it): one SenML pack (RFC 8428) per ESS with
24 records, the first carrying ``bn`` = ``"<ess id>/"``, ``bt`` = UNIX time of the first hour and
``bu`` = ``"W"``; record ``h`` has ``n`` = ``"p_set"``, ``t`` = ``3600 h`` and ``v`` = the set-point
(+ = charging). See :func:`to_senml` / :func:`from_senml`.

GESSCon encodes, LESSAg decodes; neither imports the other for it.
"""

from __future__ import annotations

import math

import numpy as np

HOURS = 24
SENML_NAME = "p_set"


def to_senml(ess_id: str, t0_unix_s: float, setpoints_w) -> list[dict]:
    """24 hourly set-points (W, + = charging) as one SenML pack."""
    v = np.asarray(setpoints_w, dtype=float)
    if v.shape != (HOURS,):
        raise ValueError(f"expected {HOURS} hourly set-points, got shape {v.shape}")
    pack = [{"n": SENML_NAME, "t": 3600 * h, "v": float(v[h])} for h in range(HOURS)]
    pack[0] = {"bn": f"{ess_id}/", "bt": float(t0_unix_s), "bu": "W", **pack[0]}
    return pack


def from_senml(pack: list[dict]) -> tuple[str, float, np.ndarray]:
    """(ess id, UNIX time of the first hour, 24 set-points W) from a pack made by :func:`to_senml`.

    Resolves base name, base time and base unit as RFC 8428 says; raises ValueError on anything else."""
    if not isinstance(pack, list) or not pack:
        raise ValueError("a SenML pack is a non-empty list of records")
    bn, bt, bu = "", 0.0, None
    values: dict[float, float] = {}
    name = None
    for rec in pack:
        if not isinstance(rec, dict):
            raise ValueError("SenML records are objects")
        bn = _text(rec.get("bn", bn), "bn")
        bt = _number(rec.get("bt", bt), "bt")
        bu = rec.get("bu", bu)
        unit = rec.get("u", bu)
        if unit not in ("W", "kW"):
            raise ValueError(f"unexpected unit {unit!r} (W)")
        full = bn + _text(rec.get("n", ""), "n")
        if name is None:
            name = full
        elif full != name:
            raise ValueError(f"pack mixes names {name!r} and {full!r}")
        if "v" not in rec:
            raise ValueError("record without a numeric value 'v'")
        t = bt + _number(rec.get("t", 0.0), "t")
        values[t] = _number(rec["v"], "v") * (1e3 if unit == "kW" else 1.0)
    times = np.array(sorted(values))
    if times.size != HOURS or np.any(np.diff(times) != 3600):
        raise ValueError(f"expected {HOURS} records one hour apart")
    ess = name[: -len(SENML_NAME)].rstrip("/") if name and name.endswith(SENML_NAME) else (name or "")
    return ess, float(times[0]), np.array([values[t] for t in times])


def _number(value: object, key: str) -> float:
    # JSON numbers only: a bool is SenML's "vb", a string is "vs"; NaN and inf cannot travel in JSON.
    try:
        number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int beyond float range
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"SenML field {key!r} must be a finite number, got {value!r}"[:120])
    return number


def _text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"SenML field {key!r} must be a string, got {value!r}")
    return value


def schedule_value(pack: list[dict] | None, now_unix_s: float) -> float | None:
    """The set-point valid at ``now`` (hour ``floor((now - t0) / 3600)``), or None if not covered."""
    if not pack:
        return None
    try:
        _, t0, v = from_senml(pack)
    except ValueError:
        return None
    h = int(np.floor((now_unix_s - t0) / 3600.0))
    return float(v[h]) if 0 <= h < HOURS else None
