"""What the GUIs show, computed from the SensorThings store (the tables the API serves), never from the live world.

``home(store, site)``: one household — power now (PV, battery, house load, grid), energy per day and month,
self-consumption, bill and what storage saved, the plan of the next hours, alerts. ``tech(store)``: every Data
Broker topic with its last value and age, per-device status, message rates per broker role.

Energies come from the telemetry samples: each Observation stands for its Datastream's sampling period (the
median spacing of its phenomenon times), so an energy is Σ p · period. Signs: the load arrow (+ = drawn from the
grid; battery charging +, PV producing −); the page shows PV production and export as positive numbers.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone, UTC
from pathlib import Path
from typing import Any

import numpy as np

from cosim.sta.engine import iso
from cosim.sta.store import Store

COMM_LOST_PERIODS = 2  # no observation for this many sampling periods: communication lost
CLOCK_DRIFT_S = 60.0  # |resultTime − phenomenonTime| above this: the device clock drifts (as the S4G wrapper flagged)


def _rows(cur: Any, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    res = cur.execute(sql, params)
    names = [d[0] for d in res.description]
    return [dict(zip(names, r, strict=True)) for r in res.fetchall()]


def sites(store: Store, run: str | None = None) -> list[str]:
    cur = store.cursor()
    try:
        rows = cur.execute("SELECT DISTINCT properties->>'site' FROM things WHERE properties->>'site' IS NOT NULL "
                           "AND ($run IS NULL OR properties->>'run' = $run) ORDER BY 1", {"run": run}).fetchall()
    finally:
        cur.close()
    return [r[0] for r in rows]


def _offset(store: Store, run: str) -> timezone:
    """The scenario's UTC offset at its start (days and months are local days)."""
    cur = store.cursor()
    try:
        row = cur.execute("SELECT min(time) FROM historical_locations h JOIN things t ON t.id = h.thing_id "
                          "WHERE t.properties->>'run' = $run", {"run": run}).fetchone()
    finally:
        cur.close()
    run_dir = store.run_dirs.get(run)
    if run_dir is not None and (Path(run_dir) / "meta.json").exists():
        meta = json.loads((Path(run_dir) / "meta.json").read_text(encoding="utf-8"))
        start = datetime.fromisoformat(str(meta["start"]))
        if start.utcoffset() is not None:
            return timezone(start.utcoffset() or timedelta(0))
    del row
    return UTC


def _run_of_site(store: Store, site: str) -> str | None:
    cur = store.cursor()
    try:
        row = cur.execute("SELECT properties->>'run' FROM things WHERE properties->>'site' = $s ORDER BY id LIMIT 1",
                          {"s": site}).fetchone()
    finally:
        cur.close()
    return row[0] if row else None


def home(store: Store, site: str, run: str | None = None) -> dict[str, Any] | None:
    run = run or _run_of_site(store, site)
    if run is None:
        return None
    cur = store.cursor()
    try:
        obs = _rows(cur, """
            SELECT o.phenomenon_time AS t, d.id AS ds, d.properties->>'quantity' AS q, t.properties->>'kind' AS kind,
                   o.result AS v
            FROM observations o JOIN datastreams d ON d.id = o.datastream_id JOIN things t ON t.id = d.thing_id
            WHERE t.properties->>'site' = $site AND t.properties->>'run' = $run ORDER BY o.phenomenon_time, d.id""",
                    {"site": site, "run": run})
        prices = _rows(cur, """
            SELECT d.properties->>'quantity' AS q, o.phenomenon_time AS t, o.result AS v
            FROM observations o JOIN datastreams d ON d.id = o.datastream_id JOIN things t ON t.id = d.thing_id
            WHERE t.properties->>'kind' = 'tariff' AND t.properties->>'run' = $run ORDER BY 2""", {"run": run})
        status = _rows(cur, """
            SELECT t.properties->>'device' AS device, d.properties->>'quantity' AS q,
                   max(o.phenomenon_time) AS last_t, arg_max(o.result, o.phenomenon_time) AS last_v,
                   arg_max(epoch(o.result_time) - epoch(o.phenomenon_time), o.phenomenon_time) AS drift_s
            FROM observations o JOIN datastreams d ON d.id = o.datastream_id JOIN things t ON t.id = d.thing_id
            WHERE t.properties->>'site' = $site AND t.properties->>'run' = $run GROUP BY 1, 2 ORDER BY 1, 2""",
                       {"site": site, "run": run})
        run_end = cur.execute("SELECT max(o.phenomenon_time) FROM observations o JOIN datastreams d "
                              "ON d.id = o.datastream_id WHERE d.properties->>'run' = $run", {"run": run}).fetchone()
        plan = _rows(cur, """
            SELECT o.phenomenon_time AS t, o.result AS v
            FROM observations o JOIN datastreams d ON d.id = o.datastream_id
            JOIN things t ON t.id = d.thing_id WHERE t.properties->>'site' = $site AND t.properties->>'run' = $run
              AND d.properties->>'quantity' LIKE 'plan%' ORDER BY 1""", {"site": site, "run": run})
    finally:
        cur.close()
    series = _locf(obs)
    if not series:
        return {"site": site, "run": run, "now": None, "days": [], "months": [], "plan": [], "alerts": []}
    tz = _offset(store, run)
    t = [r["t"] for r in series]
    secs = np.array([(x - t[0]).total_seconds() for x in t])
    period = float(np.median(np.diff(secs))) if len(secs) > 1 else 900.0

    def col(name: str) -> np.ndarray:
        return np.array([np.nan if r[name] is None else r[name] for r in series], dtype=float)

    grid, dev, pv, batt, soc = col("grid_w"), col("devices_w"), col("pv_w"), col("batt_w"), col("soc")
    load = grid - np.nan_to_num(dev)
    price_imp = _step_prices(prices, "price_import_eur_kwh", t)
    price_exp = _step_prices(prices, "price_export_eur_kwh", t)
    k = period / 3600 / 1000  # W per sample -> kWh
    g = np.nan_to_num(grid)
    g0 = g - np.nan_to_num(batt)  # the same house without its battery
    per = {
        "import_kwh": np.maximum(g, 0) * k, "export_kwh": np.maximum(-g, 0) * k,
        "pv_kwh": np.maximum(-np.nan_to_num(pv), 0) * k, "load_kwh": np.maximum(np.nan_to_num(load), 0) * k,
        "batt_charge_kwh": np.maximum(np.nan_to_num(batt), 0) * k,
        "batt_discharge_kwh": np.maximum(-np.nan_to_num(batt), 0) * k,
    }
    has_price = price_imp is not None
    if has_price:
        pe = price_exp if price_exp is not None else np.zeros(len(t))
        per["bill_eur"] = np.maximum(g, 0) * k * price_imp - np.maximum(-g, 0) * k * pe
        bill0 = np.maximum(g0, 0) * k * price_imp - np.maximum(-g0, 0) * k * pe
        per["saved_eur"] = bill0 - per["bill_eur"]
    local = [x.replace(tzinfo=UTC).astimezone(tz) for x in t]
    days = _group(per, [d.strftime("%Y-%m-%d") for d in local])
    months = _group(per, [d.strftime("%Y-%m") for d in local])
    last = len(series) - 1
    now = {"t": iso(t[last]), "grid_w": _f(grid[last]), "pv_w": _f(pv[last]), "batt_w": _f(batt[last]),
           "load_w": _f(load[last]), "soc": _f(soc[last]), "period_s": period}
    end = run_end[0] if run_end and run_end[0] is not None else t[last]
    alerts = _alerts(status, end, period)
    return {"site": site, "run": run, "now": now, "days": days, "months": months, "has_price": has_price,
            "plan": [{"t": iso(p["t"]), "batt_w": p["v"]} for p in plan if p["t"] >= t[last]][:48],
            "alerts": alerts, "timezone": str(tz)}


def _locf(obs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per time of any observation, the sums per quantity of each Datastream's last value at or before it:
    telemetry is published on change, so a value holds until the next one."""
    last: dict[int, tuple[str, str, float | None]] = {}
    out: list[dict[str, Any]] = []
    i = 0
    while i < len(obs):
        t = obs[i]["t"]
        while i < len(obs) and obs[i]["t"] == t:
            o = obs[i]
            last[o["ds"]] = (o["q"], o["kind"], o["v"])
            i += 1
        row: dict[str, Any] = {"t": t, "grid_w": None, "devices_w": None, "pv_w": None, "batt_w": None, "soc": None}
        socs = []
        for q, kind, v in last.values():
            if v is None:
                continue
            key = {"p_w": "grid_w" if kind == "site" else "devices_w", "pv_p_w": "pv_w", "batt_p_w": "batt_w"}.get(q)
            if key is not None:
                row[key] = (row[key] or 0.0) + v
            elif q == "soc":
                socs.append(v)
        row["soc"] = sum(socs) / len(socs) if socs else None
        out.append(row)
    return out


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _step_prices(prices: list[dict[str, Any]], q: str, t: list[datetime]) -> np.ndarray | None:
    pts = [(p["t"], p["v"]) for p in prices if p["q"] == q]
    if not pts:
        return None
    times = np.array([(p[0] - t[0]).total_seconds() for p in pts])
    at = np.array([(x - t[0]).total_seconds() for x in t])
    idx = np.searchsorted(times, at, side="right") - 1
    values = np.array([p[1] for p in pts], dtype=float)
    return np.where(idx >= 0, values[np.maximum(idx, 0)], np.nan)


def _group(per: dict[str, np.ndarray], keys: list[str]) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for i, key in enumerate(keys):
        row = out.setdefault(key, {"period": key, **dict.fromkeys(per, 0.0)})
        for name, arr in per.items():
            if np.isfinite(arr[i]):
                row[name] += float(arr[i])
    for row in out.values():
        pv, export = row["pv_kwh"], row["export_kwh"]
        row["self_consumption_ratio"] = None if pv <= 0 else min(1.0, max(0.0, (pv - export) / pv))
    return list(out.values())


def _alerts(status: list[dict[str, Any]], end: datetime, period: float) -> list[dict[str, Any]]:
    alerts = []
    lost: set[str] = set()
    for s in status:
        age = (end - s["last_t"]).total_seconds()
        if age > COMM_LOST_PERIODS * period and s["device"] not in lost:
            lost.add(s["device"])
            alerts.append({"kind": "communication_lost", "device": s["device"], "since": iso(s["last_t"]),
                           "text": f"communication lost with {s['device']} since {iso(s['last_t'])}"})
        if s["q"] == "soc" and s["last_v"] is not None and not 0.0 <= s["last_v"] <= 1.0:
            alerts.append({"kind": "battery_fault", "device": s["device"],
                           "text": f"battery fault at {s['device']}: state of charge {s['last_v']:.2f} out of 0..1"})
        if s["q"] == "available" and s["last_v"] == 0:
            alerts.append({"kind": "battery_fault", "device": s["device"], "text": f"{s['device']} is unavailable"})
        if s["drift_s"] is not None and abs(s["drift_s"]) > CLOCK_DRIFT_S:
            alerts.append({"kind": "clock_drift", "device": s["device"], "drift_s": float(s["drift_s"]),
                           "text": f"clock drift at {s['device']} ({s['q']}): {s['drift_s']:.0f} s"})
    return alerts


def tech(store: Store, run: str | None = None) -> dict[str, Any]:
    """Topics with their last value and age, per-device status, message rates per broker role."""
    cur = store.cursor()
    try:
        topics = _rows(cur, """
            SELECT d.properties->>'run' AS run, d.properties->>'topic' AS topic, d.properties->>'senmlName' AS name,
                   d.unit_of_measurement->>'symbol' AS unit, t.properties->>'device' AS device,
                   max(o.phenomenon_time) AS last_t, arg_max(o.result, o.phenomenon_time) AS value, count(*) AS n
            FROM datastreams d JOIN things t ON t.id = d.thing_id JOIN observations o ON o.datastream_id = d.id
            WHERE t.properties->>'kind' <> 'tariff' AND ($run IS NULL OR d.properties->>'run' = $run)
            GROUP BY ALL ORDER BY run, topic, name""", {"run": run})
        span = cur.execute("SELECT min(phenomenon_time), max(phenomenon_time) FROM observations").fetchone()
    finally:
        cur.close()
    end = span[1] if span and span[1] is not None else None
    devices: dict[str, dict[str, Any]] = {}
    for row in topics:
        row["age_s"] = (end - row["last_t"]).total_seconds() if end else None
        row["last_t"] = iso(row["last_t"])
        dev = devices.setdefault(row["device"], {"device": row["device"], "run": row["run"], "observations": 0,
                                                 "max_age_s": 0.0})
        dev["observations"] += row["n"]
        dev["max_age_s"] = max(dev["max_age_s"], row["age_s"] or 0.0)
    events = _events(store, run)
    for dev in devices.values():
        ev = events.get(dev["device"], {})
        dev["available"] = ev.get("available", True)
        dev["last_error"] = ev.get("last_error")
        dev["errors"] = ev.get("errors", 0)
    return {"end": iso(end), "topics": topics, "devices": sorted(devices.values(), key=lambda d: d["device"]),
            "roles": _roles(store, run)}


def _events(store: Store, run: str | None) -> dict[str, dict[str, Any]]:
    """Per device: the last error and availability from each run directory's events.jsonl."""
    out: dict[str, dict[str, Any]] = {}
    for name, run_dir in store.run_dirs.items():
        if run is not None and name != run:
            continue
        path = Path(run_dir) / "events.jsonl"
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            dev = ev.get("device") or ev.get("id")
            if not dev:
                continue
            entry = out.setdefault(str(dev), {"available": True, "errors": 0})
            kind = str(ev.get("kind") or ev.get("event") or "")
            if "lost" in kind or "unavailable" in kind:
                entry["available"] = False
            if "back" in kind or "restored" in kind:
                entry["available"] = True
            if "lost" in kind or "refused" in kind or "error" in kind or "reject" in kind:
                entry["errors"] += 1
                entry["last_error"] = f"{kind}: {ev.get('reason') or ev.get('message') or ''}".strip(": ")
    return out


def _roles(store: Store, run: str | None) -> list[dict[str, Any]]:
    """Messages per broker role and their rate over the simulated time (run.json "messaging")."""
    out = []
    for name, run_dir in store.run_dirs.items():
        if run is not None and name != run:
            continue
        path = Path(run_dir) / "run.json"
        if not path.exists():
            continue
        info = json.loads(path.read_text(encoding="utf-8"))
        meta = json.loads((Path(run_dir) / "meta.json").read_text(encoding="utf-8"))
        seconds = float(info.get("simulated_s") or meta.get("duration_s") or 0)
        for role, counters in sorted(((info.get("messaging") or {}).get("roles") or {}).items()):
            published = int(counters.get("published", 0))
            out.append({"run": name, "role": role, "broker": ((info.get("messaging") or {}).get("brokers") or {})
                        .get(role.split(":")[0], ""), "published": published,
                        "delivered": int(counters.get("delivered", 0)),
                        "dead_letters": int(counters.get("dead_letters", 0)),
                        "per_hour": published / seconds * 3600 if seconds else None})
    return out
