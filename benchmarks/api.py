"""The DSF-SE API and study endpoints over HTTP: request latency, a grid run end to end, concurrent polling.

    python -m benchmarks.api [--quick]

One process serves two apps with the same server (uvicorn on a background thread, :class:`HttpServer`): ours
(``create_api_app``: the web gate, the body limit, the handlers) and a bare FastAPI app with one no-op route, the
baseline: what any Python HTTP API costs on this machine. The client is httpx with a kept-alive connection.

- latency of ``GET /se/commands/status/{id}``, ``GET /api/studies/{id}`` and ``GET /api/studies/{id}/table``
  (JSON, a finished study of the tiny test scenario), median and p95, against the no-op route's;
- a grid end to end: ``POST /se/simulation`` (the Fur feeder, DSF-SE JSON) + ``PUT /se/commands/run`` (one day
  at 15 min) + polling the status until done + ``GET`` the results, against the same power flows run directly
  (``store_grid`` + ``run_simulation`` in this process, no HTTP), alternately so both see the same load; the
  API's figure includes up to one poll interval (20 ms) and the server threads' share of the interpreter;
- concurrent polling: N clients polling the status endpoint at once, requests per second and p95 latency, against
  the no-op route under the same load.

Goals: status and table within 3x of the no-op route's median (the gate and a handler should not cost more than
the HTTP stack itself); a grid run through the API at most 10 % slower than the same run direct. Quick
(S4G_BENCH_TINY=1): fewer requests, a 3-hour run.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from benchmarks.common import Stat, median_spread, percentile, print_rows, row

ROOT = Path(__file__).resolve().parents[1]
FUR = ROOT / "scenarios" / "data" / "s4g" / "fur_feeder.json"
STUDY_DATA = ROOT / "tests" / "study_data"


def _bare_app():  # type: ignore[no-untyped-def]
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/noop")
    async def noop() -> float:  # the cheapest FastAPI route: no thread hop
        return 0.0

    return app


def _latencies(gets: list[Callable[[], object]], n: int, warmup: int = 20) -> list[list[float]]:
    """Seconds per call of each of ``gets``, called in turn (so all see the same machine load)."""
    for _ in range(warmup):
        for get in gets:
            get()
    out: list[list[float]] = [[] for _ in gets]
    for _ in range(n):
        for get, samples in zip(gets, out):
            t0 = time.perf_counter()
            get()
            samples.append(time.perf_counter() - t0)
    return out


def _ms(samples: list[float]) -> Stat:
    return median_spread([1000.0 * s for s in samples])


def _p95_ms(samples: list[float]) -> float:
    return 1000.0 * percentile(samples, 95)


def _within(r: dict, factor: float) -> dict:
    """The goal "ours at most ``factor`` times the baseline" on a row (lower is better)."""
    if r["ours"] is not None and r["baseline"]:
        r["goal"], r["met"] = f"<= {factor:g}x the baseline", r["ours"] <= factor * r["baseline"]
    return r


def _get(client, path: str) -> object:  # type: ignore[no-untyped-def]
    return _check(client.get(path))


def _check(r):  # type: ignore[no-untyped-def]
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:300]}")
    return r


def _grid_via_api(client, hours: float) -> float:  # type: ignore[no-untyped-def]
    """POST the grid, run it, poll until done (every 20 ms; the GUI polls every 300 ms), fetch the results:
    seconds."""
    body = FUR.read_bytes()
    t0 = time.perf_counter()
    gid = _check(client.post("/se/simulation", content=body)).json()
    _check(client.put(f"/se/commands/run/{gid}", json={"sim_duration_in_hours": hours}))
    while _check(client.get(f"/se/commands/status/{gid}")).json() < 100:
        time.sleep(0.02)
    result = _check(client.get(f"/se/simulation/{gid}")).json()
    elapsed = time.perf_counter() - t0
    assert result["summary"]["steps"] == round(hours * 4), result["summary"]
    _check(client.delete(f"/se/simulation/{gid}"))
    return elapsed


def _grid_direct(folder: Path, hours: float) -> float:
    from cosim.api.grids import parse_body, store_grid
    from cosim.api.simulation import RunRequest, run_simulation

    raw = FUR.read_bytes()
    t0 = time.perf_counter()
    grid = store_grid(parse_body(raw), raw, folder)
    run_simulation(grid, RunRequest(sim_duration_in_hours=hours), threading.Event())
    elapsed = time.perf_counter() - t0
    grid.path.unlink(missing_ok=True)
    return elapsed


def _concurrent(url: str, path: str, clients: int, per_client: int, headers: dict[str, str]) -> tuple[float, float]:
    """``clients`` threads, each with its own connection, ``per_client`` GETs: (requests/s, p95 seconds)."""
    import httpx

    def worker() -> list[float]:
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            c.get(path)
            out = []
            for _ in range(per_client):
                t0 = time.perf_counter()
                _check(c.get(path))
                out.append(time.perf_counter() - t0)
            return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        samples = [s for chunk in pool.map(lambda _: worker(), range(clients)) for s in chunk]
    wall = time.perf_counter() - t0
    return len(samples) / wall, percentile(samples, 95)


def run(quick: bool = False) -> list[dict]:
    import httpx

    from cosim.api.app import create_api_app
    from cosim.api.jobs import Limits, Registry
    from cosim.sta.server import HttpServer

    quick = quick or os.environ.get("S4G_BENCH_TINY") == "1"
    n = 50 if quick else 1000
    hours, repeats = (3.0, 1) if quick else (24.0, 5)
    clients, per_client = (4, 20) if quick else (8, 200)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="s4g-bench-api-") as tmp:
        reg = Registry(folder=Path(tmp) / "api", scenario_roots=[STUDY_DATA], limits=Limits())
        try:
            with HttpServer(create_api_app(reg)) as ours, HttpServer(_bare_app()) as bare, \
                    httpx.Client(base_url=ours.url, timeout=60) as c, httpx.Client(base_url=bare.url) as b:
                c.headers["X-CSRF-Token"] = c.get("/auth/me").json()["csrf"]
                # a finished grid run and a finished study to ask about
                gid = _check(c.post("/se/simulation", content=FUR.read_bytes())).json()
                _check(c.put(f"/se/commands/run/{gid}", json={"sim_duration_in_hours": 1}))
                reg.grid(gid).wait(120)
                study = (STUDY_DATA / "tiny_study.yaml").read_text().replace("values: [3, 7]", "values: [3]")
                sid = _check(c.post("/api/studies", json={"study": study + "until: 5min\n"})).json()["id"]
                reg.study(sid).wait(300)

                for label, path in (("DSF-SE status", f"/se/commands/status/{gid}"),
                                    ("study status", f"/api/studies/{sid}"),
                                    ("study table (JSON, 2 rows)", f"/api/studies/{sid}/table")):
                    ours_s, noop = _latencies([partial(_get, c, path), partial(_get, b, "/noop")], n)
                    rows.append(_within(row(f"GET {label}: median latency vs a bare FastAPI no-op route",
                                            _ms(ours_s), _ms(noop), "ms"), 3.0))
                    rows.append(row(f"GET {label}: p95 latency vs the no-op route's p95", _p95_ms(ours_s),
                                    _p95_ms(noop), "ms"))

                direct, via_api = [], []
                for _ in range(repeats + 1):  # interleaved: both see the same machine load; the first is warm-up
                    direct.append(_grid_direct(Path(tmp) / "direct", hours))
                    via_api.append(_grid_via_api(c, hours))
                rows.append(_within(row(f"Fur feeder {hours:g} h at 15 min: POST grid + run + poll + results vs "
                                        "the same power flows direct", median_spread(via_api[1:]),
                                        median_spread(direct[1:]), "s"), 1.1))

                headers = {"X-CSRF-Token": c.headers["X-CSRF-Token"]}
                rate, p95 = _concurrent(ours.url, f"/se/commands/status/{gid}", clients, per_client, headers)
                rate0, p95_0 = _concurrent(bare.url, "/noop", clients, per_client, {})
                rows.append(row(f"{clients} clients polling the status at once: requests/s vs the no-op route",
                                rate, rate0, "req/s", lower_is_better=False))
                rows.append(row(f"{clients} clients polling the status at once: p95 latency vs the no-op route",
                                1000.0 * p95, 1000.0 * p95_0, "ms"))
        finally:
            reg.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_rows(run(args.quick), title="api")


if __name__ == "__main__":
    main()
