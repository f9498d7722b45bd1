"""The bench part of a run's report: ``report/bench.html`` with the lateness of every step, from the run dir alone.

It reads ``bench.json`` and ``timing.parquet`` (never the live run): the timing summary, a plot of each step's
lateness against the tolerance with its histogram, the devices with their identity, watchdog history and
refused setpoints, and the bench events. The offline report (report/report.html) covers the grid and KPIs.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

REPORT_FILE = "bench.html"


def _e(x: Any) -> str:
    return html.escape("-" if x is None else str(x))


def _lateness_png(run_dir: Path, tolerance_ms: float) -> bytes | None:
    import pyarrow.parquet as pq

    path = run_dir / "timing.parquet"
    if not path.is_file():
        return None
    t = pq.read_table(path).to_pydict()
    if not t["t_s"]:
        return None
    late_ms = np.array(t["late_s"], dtype=float) * 1000.0
    fig = Figure(figsize=(10, 3.2))
    ax, hx = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
    ax.plot(np.array(t["t_s"]) / 60.0, late_ms, ".", ms=3)
    ax.axhline(tolerance_ms, color="tab:red", lw=1, label=f"tolerance {tolerance_ms:g} ms")
    ax.set_xlabel("simulated time (min)")
    ax.set_ylabel("lateness (ms)")
    ax.legend(loc="upper right")
    hx.hist(late_ms, bins=30, orientation="horizontal")
    hx.set_xlabel("steps")
    fig.tight_layout()
    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def render(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    bench = json.loads((run_dir / "bench.json").read_text(encoding="utf-8"))
    timing = bench["timing"]
    lat = timing["lateness"]
    png = _lateness_png(run_dir, timing["tolerance_ms"] or 0.0)
    img = f'<img alt="lateness" src="data:image/png;base64,{base64.b64encode(png).decode()}">' if png else ""
    summary = [
        ("real-time factor", bench["rt_factor"]), ("cycle", f"{bench['cycle_s'] * 1000:g} ms"),
        ("policy", bench["policy"]), ("tolerance", f"{timing['tolerance_ms']} ms"),
        ("steps", f"{timing['steps']} ({timing.get('warmup_steps', 0)} warm-up steps: recorded, "
                  "not in the statistics)"),
        ("lateness p50 / p99 / max", f"{lat['p50_ms']} / {lat['p99_ms']} / {lat['max_ms']} ms"),
        ("late steps", timing["late_steps"]), ("skipped steps", timing["skipped_steps"]),
        ("setpoint round trip p50 / p99", f"{timing['write_roundtrip']['p50_ms']} / "
                                          f"{timing['write_roundtrip']['p99_ms']} ms"),
        ("read round trip p50 / p99",
         f"{timing['read_roundtrip']['p50_ms']} / {timing['read_roundtrip']['p99_ms']} ms"),
        ("status", bench["status"]), ("stop reason", bench.get("stop_reason")),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in summary)
    devs = "".join(
        f"<tr><td>{_e(d)}</td><td>{_e(i['kind'])}</td><td>{_e(i['family'])}</td>"
        f"<td>{_e(i['driver_address'] or i['address'])}</td>"
        f"<td>{_e(', '.join(f'{k}={v}' for k, v in (i.get('identity') or {}).items() if k != 'address'))}</td>"
        f"<td>{_e(i['state'])}</td><td>{_e(i['faults'])}</td><td>{_e(i['refused'])}</td></tr>"
        for d, i in bench["devices"].items())
    events = "".join(f"<tr><td>{_e(e['t_s'])}</td><td>{_e(e['device'])}</td><td>{_e(e['kind'])}</td>"
                     f"<td>{_e(e['message'])}</td></tr>" for e in bench["events"])
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Bench report</title>'
        "<style>body{font:14px system-ui,sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}</style></head><body>"
        f"<h1>Bench report</h1><table>{rows}</table><h2>Lateness of the device exchange</h2>{img}"
        "<h2>Devices</h2><table><tr><th>device</th><th>kind</th><th>family</th><th>address</th><th>identity</th>"
        f"<th>state</th><th>faults</th><th>refused</th></tr>{devs}</table>"
        f"<h2>Bench events</h2><table><tr><th>t (s)</th><th>device</th><th>kind</th><th>message</th></tr>{events}"
        "</table><p>Per-step timing: timing.parquet; every exchange with every device: device_io/.</p></body></html>"
    )
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    path = out / REPORT_FILE
    path.write_text(page, encoding="utf-8")
    return path
