"""Report sections about energy and control: the energy balance with the price, storage, EV service, controller
setpoints against what the devices did, and the timeline of events."""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from cosim.report_context import ReportContext
from cosim.report_sections import Section, bucket_size, downsample, e, figure, note

MAX_SETPOINT_DEVICES = 12
MAX_EVENT_ROWS = 200


def _sum(series: list[np.ndarray], n: int) -> np.ndarray:
    return np.nansum(np.vstack(series), axis=0) if series else np.zeros(n)


# ---------------------------------------------------------------- energy balance


def _site_devices(ctx: ReportContext) -> list[dict[str, Any]]:
    return [d for d in ctx.meta.get("devices", []) if d.get("site")]


def balance_series(ctx: ReportContext) -> dict[str, np.ndarray] | None:
    """Per step (W, load arrow, sums over the sites): consumption, PV, battery, other devices (EV chargers, ...),
    import and export at the PCCs. import − export = consumption + PV + battery + other at every step."""
    sites, devices = ctx.table("sites"), ctx.table("devices")
    if sites is None or not sites.ids("pcc_p_w"):
        return None
    n = len(sites.t_s)
    site_ids = [s["id"] for s in ctx.meta.get("sites", []) if sites.get(s["id"], "pcc_p_w") is not None]
    pcc = [cast(np.ndarray, sites.get(s, "pcc_p_w")) for s in site_ids]  # site_ids have the column
    imp = _sum([np.where(p > 0, p, 0.0) for p in pcc], n)
    exp = _sum([np.where(p < 0, -p, 0.0) for p in pcc], n)
    load = _sum([x for s in site_ids if (x := sites.get(s, "load_p_w")) is not None], n)
    pv, batt, other = np.zeros(n), np.zeros(n), np.zeros(n)
    if devices is not None and len(devices.t_s) == n:
        for d in _site_devices(ctx):
            p = devices.get(d["id"], "p_w")
            if p is None:
                continue
            p_pv = devices.get(d["id"], "pv_p_w")
            p_b = devices.get(d["id"], "batt_p_w")
            p_pv = np.zeros(n) if p_pv is None else np.nan_to_num(p_pv)
            p_b = np.zeros(n) if p_b is None else np.nan_to_num(p_b)
            pv += p_pv
            batt += p_b
            other += np.nan_to_num(p) - p_pv - p_b  # what the terminal draws beyond PV and battery
    return {"t_s": sites.t_s, "consumption": load, "pv": pv, "battery": batt, "other": other, "import": imp,
            "export": exp}


def energy_balance(ctx: ReportContext) -> Section | None:
    s = balance_series(ctx)
    if s is None:
        return None
    step = ctx.run.step_s
    span = len(s["t_s"]) * step
    per_s = 86400 if span > 3 * 86400 else 3600
    k = max(1, per_s // step)
    label = "day" if per_s == 86400 else "hour"
    to_kwh = step / 3600 / 1000

    def bucket(x: np.ndarray) -> np.ndarray:
        return downsample(x, "mean", k) * k * to_kwh  # kWh per bucket (a short tail bucket: its own energy)

    x = ctx.times(downsample(s["t_s"].astype(float), "first", k).astype(np.int64))
    batt = s["battery"]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    bars = (("consumption", s["consumption"], "#7f7f7f"), ("battery charging", np.maximum(batt, 0), "#17becf"),
            ("EV charging and other devices", np.maximum(s["other"], 0), "#9467bd"),
            ("PV production", s["pv"], "#ffbf00"), ("battery discharging", np.minimum(batt, 0), "#1f77b4"),
            ("other devices feeding in", np.minimum(s["other"], 0), "#c5b0d5"))
    for name, y, color in bars:
        yb = bucket(y)
        if np.nanmax(np.abs(yb), initial=0) > 1e-9:
            fig.add_trace(go.Bar(x=x, y=yb, name=name, marker_color=color), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=bucket(s["import"]), name="import", mode="lines+markers",
                             line={"color": "black", "width": 2}), secondary_y=False)
    fig.add_trace(go.Scatter(x=x, y=-bucket(s["export"]), name="export (−)", mode="lines+markers",
                             line={"color": "#2ca02c", "width": 2}), secondary_y=False)
    prices = ctx.table("prices")
    if prices is not None:
        t = prices.t_s
        for attr, name, dash in (("import_eur_per_kwh", "import price", "solid"),
                                 ("export_eur_per_kwh", "export price", "dot")):
            y = prices.get("price", attr)
            if y is not None:
                kp = bucket_size(len(t))
                fig.add_trace(go.Scatter(x=ctx.times(downsample(t.astype(float), "first", kp).astype(np.int64)),
                                         y=downsample(y, "first", kp), name=name, line_shape="hv",
                                         line={"color": "#d62728", "dash": dash}), secondary_y=True)
    fig.update_layout(barmode="relative", height=460, template="plotly_white", hovermode="x unified",
                      title={"text": f"Energy per {label} at the sites (+ drawn, − supplied)", "x": 0},
                      margin={"l": 60, "r": 60, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.15})
    fig.update_yaxes(title_text=f"kWh per {label}", secondary_y=False)
    fig.update_yaxes(title_text="EUR/kWh", secondary_y=True, rangemode="tozero", showgrid=False)
    tot = {name: round(float(np.nansum(v)) * to_kwh, 1) + 0.0 for name, v in s.items() if name != "t_s"}
    intro = note(f"Over the run the sites consumed {tot['consumption']:,.1f} kWh, their PV produced "
                 f"{-tot['pv']:,.1f} kWh, batteries took {tot['battery']:+,.1f} kWh net and EV chargers and other "
                 f"devices {tot['other']:,.1f} kWh; {tot['import']:,.1f} kWh were imported and {tot['export']:,.1f} "
                 f"kWh exported at the connection points. The bars of a {label} add up to its import minus export.")
    return Section("energy", "Energy balance and price", intro, [fig])


# ---------------------------------------------------------------- storage


def storage_ids(ctx: ReportContext) -> list[str]:
    """Stationary batteries: devices with a battery power column and a known capacity (a PV inverter without a
    battery, or a wallbox reporting its EV's SoC, is not storage)."""
    devices = ctx.table("devices")
    if devices is None:
        return []
    kd = ctx.kpis.get("devices", {})
    return [d for d in devices.ids("batt_p_w") if devices.get(d, "soc") is not None
            and (kd.get(d, {}).get("batt_capacity_kwh") or 0) > 0]


def storage(ctx: ReportContext) -> Section | None:
    ids = storage_ids(ctx)
    if not ids:
        return None
    devices = ctx.table("devices")
    assert devices is not None  # storage_ids come from it
    k = bucket_size(len(devices.t_s))
    x = ctx.times(downsample(devices.t_s.astype(float), "first", k).astype(np.int64))
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=["State of charge", "Battery power (+ charging)"])
    for did in ids:
        cap = ctx.kpis["devices"][did]["batt_capacity_kwh"]
        soc, batt = cast(np.ndarray, devices.get(did, "soc")), cast(np.ndarray, devices.get(did, "batt_p_w"))
        fig.add_trace(go.Scatter(x=x, y=downsample(soc * 100, "mean", k),
                                 name=f"{did} ({cap:g} kWh)", legendgroup=did), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=downsample(batt / 1000, "mean", k), name=did,
                                 legendgroup=did, showlegend=False), row=2, col=1)
    fig.update_yaxes(title="%", range=[-2, 102], row=1, col=1)
    fig.update_yaxes(title="kW", row=2, col=1)
    fig.update_layout(height=560, template="plotly_white", hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.1})
    return Section("storage", "Stationary storage", note(f"{len(ids)} batteries (EV batteries are in the EV "
                                                         "section)."), [fig])


# ---------------------------------------------------------------- EV service


def _fleet_limit(ctx: ReportContext, wallboxes: list[str]) -> float | None:
    """The site charging limit of the controller that governs a fleet's wallboxes (a ``*limit_w`` parameter)."""
    for c in ctx.meta.get("controllers", []):
        devs = c.get("devices") or []
        if devs == "*" or set(devs) & set(wallboxes):
            for key, value in (c.get("params") or {}).items():
                if key.endswith("limit_w") and isinstance(value, (int, float)):
                    return float(value)
    return None


def ev_summary(sessions: list[dict[str, Any]]) -> dict[str, float]:
    wanted = sum(float(s.get("e_wanted_wh") or 0) for s in sessions) / 1000
    delivered = sum(float(s.get("e_delivered_wh") or 0) for s in sessions) / 1000
    unmet = sum(float(s.get("e_unmet_wh") or 0) for s in sessions) / 1000
    return {"arrivals": len(sessions), "wanted_kwh": wanted, "delivered_kwh": delivered, "unmet_kwh": unmet,
            "short": sum(1 for s in sessions if not s.get("completed")),
            "never": sum(1 for s in sessions if not s.get("served"))}


def ev_service(ctx: ReportContext) -> Section | None:
    fleets = ctx.table("ev_fleets")
    if fleets is None and not ctx.sessions:
        return None
    figs: list[go.Figure] = []
    specs = {f["id"]: f for f in ctx.meta.get("ev_fleets", [])}
    devices = ctx.table("devices")
    for fid in (fleets.ids("p_w") if fleets is not None else []):
        assert fleets is not None  # the ids come from it
        k = bucket_size(len(fleets.t_s))
        x = ctx.times(downsample(fleets.t_s.astype(float), "first", k).astype(np.int64))
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.65, 0.35],
                            subplot_titles=[f"{fid}: charging power", "EVs plugged in and waiting for a charger"])
        wbs = specs.get(fid, {}).get("wallboxes", [])
        if devices is not None and wbs:
            for wb in wbs:
                p = devices.get(wb, "p_w")
                if p is not None:
                    fig.add_trace(go.Scatter(x=x, y=downsample(p / 1000, "mean", k), name=wb, stackgroup="wb",
                                             line={"width": 0.5}), row=1, col=1)
        else:
            fleet_p = cast(np.ndarray, fleets.get(fid, "p_w"))  # fid comes from the p_w columns
            fig.add_trace(go.Scatter(x=x, y=downsample(fleet_p / 1000, "mean", k), name="fleet"),
                          row=1, col=1)
        limit = _fleet_limit(ctx, wbs)
        if limit is not None:
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[limit / 1000] * 2, name="site charging limit",
                                     line={"color": "#c0392b", "dash": "dash"}), row=1, col=1)
        for attr, name, color in (("n_plugged", "plugged in", "#1f77b4"), ("n_waiting", "waiting", "#d62728")):
            y = fleets.get(fid, attr)
            if y is not None:
                fig.add_trace(go.Scatter(x=x, y=downsample(y, "max", k), name=name, line_shape="hv",
                                         line={"color": color}), row=2, col=1)
        fig.update_yaxes(title="kW", row=1, col=1)
        fig.update_yaxes(title="EVs", row=2, col=1)
        fig.update_layout(height=560, template="plotly_white", hovermode="x unified",
                          margin={"l": 60, "r": 20, "t": 50, "b": 40}, legend={"orientation": "h", "y": -0.1})
        figs.append(fig)
    intro, after = "", ""
    if ctx.sessions:
        sessions = sorted(ctx.sessions, key=lambda s: (s.get("t_arrival_s") or 0, str(s.get("ev_id"))))
        sm = ev_summary(sessions)
        share = 100 * sm["unmet_kwh"] / sm["wanted_kwh"] if sm["wanted_kwh"] else 0.0
        kind = "warn" if sm["unmet_kwh"] > 0.005 * max(sm["wanted_kwh"], 1e-9) else "note"
        intro = note(f"<b>{sm['unmet_kwh']:,.1f} of {sm['wanted_kwh']:,.1f} kWh requested were not delivered "
                     f"({share:.0f} %)</b>: {sm['short']} of {sm['arrivals']} EVs left without all they asked for, "
                     f"{sm['never']} of them never got a charger. {sm['delivered_kwh']:,.1f} kWh were delivered.",
                     kind)
        labels = [f"{ctx.clock(s.get('t_arrival_s'))[11:]} {s.get('ev_id')}" for s in sessions]
        fig = figure("Energy requested and delivered per EV (by arrival)", height=460, barmode="group",
                     legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
                     margin={"l": 60, "r": 20, "t": 60, "b": 120})
        fig.add_trace(go.Bar(x=labels, y=[(s.get("e_wanted_wh") or 0) / 1000 for s in sessions], name="requested",
                             marker_color="#bbbbbb"))
        fig.add_trace(go.Bar(x=labels, y=[(s.get("e_delivered_wh") or 0) / 1000 for s in sessions],
                             name="delivered", marker_color="#2ca02c"))
        fig.add_trace(go.Bar(x=labels, y=[(s.get("e_unmet_wh") or 0) / 1000 for s in sessions], name="not delivered",
                             marker_color="#d62728"))
        fig.update_yaxes(title="kWh")
        fig.update_xaxes(title="arrival and EV", tickangle=-60)
        figs.append(fig)
        rows = "".join(
            f"<tr><td>{e(s.get('ev_id'))}</td><td>{e(s.get('ev_type', ''))}</td>"
            f"<td>{e(ctx.clock(s.get('t_arrival_s')))}"
            f"</td><td>{e(ctx.clock(s.get('t_plug_s')) if s.get('t_plug_s') is not None else 'never')}</td>"
            f"<td>{e(ctx.clock(s.get('t_departure_s')))}</td><td>{(s.get('wait_s') or 0) / 60:.0f}</td>"
            f"<td>{(s.get('e_wanted_wh') or 0) / 1000:.1f}</td><td>{(s.get('e_delivered_wh') or 0) / 1000:.1f}</td>"
            f"<td>{(s.get('e_unmet_wh') or 0) / 1000:.1f}</td></tr>" for s in sessions)
        after = ('<details><summary>Every charging session</summary><div class="scroll"><table><tr><th>EV</th>'
                 "<th>type</th><th>arrival</th><th>plugged in</th><th>departure</th><th>wait min</th>"
                 "<th>requested kWh</th><th>delivered kWh</th><th>not delivered kWh</th></tr>"
                 f"{rows}</table></div></details>")
    return Section("ev", "EV charging service", intro, figs, after)


# ---------------------------------------------------------------- setpoints against what the devices did


_MEASURED = {"p_set_w": ("batt_p_w", "p_w"), "batt_p_set_w": ("batt_p_w",), "p_max_w": ("p_w",),
             "q_set_var": ("q_var",), "i_max_a": ("i_a",), "pv_limit_w": ("pv_p_w",)}


def _measured_attr(devices: Any, dev: str, attr: str) -> str | None:
    candidates = _MEASURED.get(attr) or (attr.replace("_set", ""), "p_w")
    return next((a for a in candidates if devices.get(dev, a) is not None), None)


def setpoints(ctx: ReportContext) -> Section | None:
    ctl, devices = ctx.table("controllers"), ctx.table("devices")
    if ctl is None or devices is None:
        return None
    pairs: dict[str, list[tuple[str, str]]] = {}
    for col in ctl.columns:
        if col == "t_s" or "/" not in col or "." not in col:
            continue
        head, attr = col.rsplit(".", 1)
        cid, dev = head.split("/", 1)
        if devices.get(dev, "p_w") is not None or _measured_attr(devices, dev, attr):
            pairs.setdefault(dev, []).append((cid, attr))
    if not pairs:
        return None
    shown = list(pairs)[:MAX_SETPOINT_DEVICES]
    k = bucket_size(len(ctl.t_s))
    x = ctx.times(downsample(ctl.t_s.astype(float), "first", k).astype(np.int64))
    fig = make_subplots(rows=len(shown), cols=1, shared_xaxes=True, vertical_spacing=min(0.04, 0.3 / len(shown)),
                        subplot_titles=shown)
    rejected = Counter(ev.get("device") for ev in ctx.events if ev.get("kind") == "setpoint_rejected")
    for r, dev in enumerate(shown, start=1):
        for cid, attr in pairs[dev]:
            unit = 1000 if attr.endswith("_w") else 1
            sp = cast(np.ndarray, ctl.get(f"{cid}/{dev}", attr))  # the pair comes from its columns
            fig.add_trace(go.Scatter(x=x, y=downsample(sp / unit, "mean", k), name="setpoint or limit",
                                     hovertext=f"{cid}: {attr}", line_shape="hv",
                                     line={"color": "#d62728", "dash": "dash"}, legendgroup="set",
                                     showlegend=r == 1), row=r, col=1)
            meas = _measured_attr(devices, dev, attr)
            if meas is not None:
                y = cast(np.ndarray, devices.get(dev, meas))  # _measured_attr found it
                yk = downsample(y / (1000 if meas.endswith("_w") else 1), "mean", bucket_size(len(devices.t_s)))
                fig.add_trace(go.Scatter(x=x[: len(yk)], y=yk, name="what the device did", hovertext=meas,
                                         line={"color": "#1f77b4"},
                                         legendgroup="meas", showlegend=r == 1), row=r, col=1)
        fig.update_yaxes(title="kW" if any(a.endswith("_w") for _, a in pairs[dev]) else "", row=r, col=1)
    fig.update_layout(height=180 + 170 * len(shown), template="plotly_white", hovermode="x unified",
                      margin={"l": 60, "r": 20, "t": 60, "b": 40}, legend={"orientation": "h", "y": -0.03},
                      title={"text": "Setpoints (dashed) and what the device did (solid)", "x": 0})
    extra = f" The first {MAX_SETPOINT_DEVICES} of {len(pairs)} controlled devices are drawn." if len(pairs) > len(
        shown) else ""
    refused = "; ".join(f"{e(d)}: {n}" for d, n in rejected.items())
    intro = note("Each controlled device: the setpoints its controller sent (a power setpoint against the battery "
                 "or terminal power, a limit against the power drawn) and what the device measured. Setpoints apply "
                 "from the step after they are computed." + extra
                 + (f" Refused setpoints per device: {refused}." if refused else " No setpoint was refused."))
    return Section("setpoints", "Controller setpoints and device response", intro, [fig])


# ---------------------------------------------------------------- events


def _source(ev: dict[str, Any]) -> str:
    return str(ev.get("device") or ev.get("sender") or ev.get("source") or ev.get("role") or "run")


def events(ctx: ReportContext) -> Section:
    evs = [ev for ev in ctx.events if isinstance(ev.get("t_s"), (int, float))]
    counts = Counter(str(ev.get("kind", "event")) for ev in evs)
    messaging = _messaging_totals(ctx)
    if ctx.events_unreadable:
        messaging += (f" {ctx.events_unreadable} line(s) of events.jsonl could not be read (cut off by a crash?) "
                      "and are not shown.")
    if ctx.events_truncated:
        messaging += f" events.jsonl holds more than {len(ctx.events)} events: only the first are shown."
    if not evs:
        text = ("No events: no setpoint was refused, no device dropped out or came back, no message was lost."
                + messaging)
        return Section("events", "Events", note(text))
    fig = figure("Events over time", height=min(220 + 22 * len({_source(ev) for ev in evs}), 700),
                 hovermode="closest")
    palette = ["#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#1f77b4"]
    for i, kind in enumerate(counts):
        sel = [ev for ev in evs if str(ev.get("kind", "event")) == kind]
        fig.add_trace(go.Scatter(x=ctx.times(np.array([int(ev["t_s"]) for ev in sel])), y=[_source(ev) for ev in sel],
                                 mode="markers", name=f"{kind} ({counts[kind]})",
                                 marker={"size": 9, "color": palette[i % len(palette)], "symbol": "diamond"},
                                 text=[str(ev.get("message", ""))[:200] for ev in sel],
                                 hovertemplate="%{y}<br>%{x}<br>%{text}<extra></extra>"))
    fig.update_xaxes(title=ctx.time_label)
    rows = "".join(f"<tr><td>{e(ctx.clock(ev['t_s']))}</td><td>{e(ev.get('kind', ''))}</td><td>{e(_source(ev))}</td>"
                   f"<td>{e(str(ev.get('message', ''))[:300])}</td></tr>" for ev in evs[:MAX_EVENT_ROWS])
    more = f" (the first {MAX_EVENT_ROWS} of {len(evs)})" if len(evs) > MAX_EVENT_ROWS else ""
    summary = ", ".join(f"{n} × {e(k)}" for k, n in counts.most_common())
    intro = note(f"{len(evs)} events: {summary}. Faults, fallbacks, refused setpoints, devices lost and back, "
                 f"messages that could not be delivered (events.jsonl)." + messaging)
    after = (f'<details><summary>Event list{more}</summary><div class="scroll"><table><tr><th>time</th><th>kind</th>'
             f"<th>source</th><th>message</th></tr>{rows}</table></div></details>")
    return Section("events", "Events", intro, [fig], after)


def _messaging_totals(ctx: ReportContext) -> str:
    """The message bus's counters from run.json, when the run had one."""
    import json

    path = ctx.run_dir / "run.json"
    try:
        totals = (json.loads(path.read_text(encoding="utf-8")).get("messaging") or {}).get("totals")
    except (OSError, ValueError):
        return ""
    if not totals:
        return ""
    shown = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in totals.items() if v)
    return f" Message bus: {e(shown)}." if shown else ""

