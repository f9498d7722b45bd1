"""What a report section reads: the run directory loaded once (tables, KPIs, EV sessions, events), the feeder's
topology as distances from the transformer and a single-line layout, and the baseline's KPIs when there is one.

Everything comes from the run directory (docs/results.md); nothing here looks at a live world.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosim import kpi
from cosim.kpi import RunData
from cosim.rundir import Table, read_table, start_time
from simulators.sessions_file import read_sessions

log = logging.getLogger(__name__)

#: tables a report reads besides the KPIs' own
EXTRA_TABLES = ("ev_fleets", "controllers")
BASELINE_VARIANT = "baseline"


@dataclass
class Feeder:
    """The grid as a tree from the slack bus: distance of every bus (m, along the lines; a transformer counts 0)
    and a single-line layout (x = distance, y = branch row)."""

    distance_m: dict[str, float]
    parent: dict[str, str | None]
    edges: list[tuple[str, str, str]]  # (element id, bus, bus) of every line and transformer
    row: dict[str, float] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return len(self.distance_m) > 1


def feeder(meta: dict[str, Any]) -> Feeder:
    """Distances by Dijkstra over the in-service lines from the slack bus; buses it cannot reach are left out."""
    grid = meta.get("grid") or {}
    topo = grid.get("topology") or {}
    adj: dict[str, list[tuple[str, float]]] = {}
    edges: list[tuple[str, str, str]] = []
    for line in topo.get("lines", []):
        a, b = line.get("from_bus"), line.get("to_bus")
        if a is None or b is None or not line.get("in_service", True):
            continue
        length = float(line.get("length_km") or 0.0) * 1000.0
        adj.setdefault(a, []).append((b, length))
        adj.setdefault(b, []).append((a, length))
        edges.append((line["id"], a, b))
    for trafo in topo.get("trafos", []):
        a, b = trafo.get("hv_bus"), trafo.get("lv_bus")
        if a is None or b is None:
            continue
        adj.setdefault(a, []).append((b, 0.0))
        adj.setdefault(b, []).append((a, 0.0))
        edges.append((trafo["id"], a, b))
    root = grid.get("slack_bus")
    dist: dict[str, float] = {}
    parent: dict[str, str | None] = {}
    if root and root in adj:
        heap: list[tuple[float, str, str | None]] = [(0.0, root, None)]
        while heap:
            d, bus, up = heapq.heappop(heap)
            if bus in dist:
                continue
            dist[bus], parent[bus] = d, up
            for nxt, length in adj.get(bus, []):
                if nxt not in dist:
                    heapq.heappush(heap, (d + length, nxt, bus))
    f = Feeder(dist, parent, edges)
    f.row = _rows(f, root) if root in dist else {}
    return f


def _rows(f: Feeder, root: str) -> dict[str, float]:
    """A single-line layout: the longest branch of each node goes straight on, every other branch gets a row of
    its own below the rows used so far (like a feeder drawn on paper)."""
    children: dict[str, list[str]] = {}
    for bus, up in f.parent.items():
        if up is not None:
            children.setdefault(up, []).append(bus)
    reach: dict[str, float] = {}

    def far(bus: str) -> float:  # farthest distance below a bus, iteratively (feeders can be deep)
        order, stack = [], [bus]
        while stack:
            b = stack.pop()
            order.append(b)
            stack.extend(children.get(b, []))
        for b in reversed(order):
            reach[b] = max([f.distance_m[b]] + [reach[c] for c in children.get(b, [])])
        return reach[bus]

    far(root)
    row: dict[str, float] = {}
    next_row = 0
    # (bus, its row or None = a new row below every row used so far); a branch's rows are taken when it is
    # drawn, after its elder siblings' subtrees, so no branch crosses another
    stack: list[tuple[str, int | None]] = [(root, 0)]
    while stack:
        bus, r = stack.pop()
        if r is None:
            next_row += 1
            r = next_row
        row[bus] = r
        kids = sorted(children.get(bus, []), key=lambda c: -reach[c])
        for i, kid in reversed(list(enumerate(kids))):
            stack.append((kid, r if i == 0 else None))
    return {b: -float(r) for b, r in row.items()}


@dataclass
class ReportContext:
    run_dir: Path
    run: RunData
    kpis: dict[str, Any]
    feeder: Feeder
    sessions: list[dict[str, Any]]
    fleets: list[dict[str, Any]]
    events: list[dict[str, Any]]
    baseline: tuple[str, dict[str, Any]] | None = None
    events_unreadable: int = 0  # lines of events.jsonl that could not be read
    events_truncated: bool = False

    @property
    def meta(self) -> dict[str, Any]:
        return self.run.meta

    def times(self, t_s: np.ndarray) -> np.ndarray:
        """Local wall-clock times (naive datetime64, in the scenario's own UTC offset) of ``t_s``."""
        start = start_time(self.meta).replace(tzinfo=None)
        return np.datetime64(start, "s") + np.asarray(t_s).astype("timedelta64[s]")

    def clock(self, t_s: float | None) -> str:
        """"2019-06-15 13:42" for a time in seconds from the start."""
        if t_s is None:
            return "—"
        return str(self.times(np.array([int(t_s)]))[0]).replace("T", " ")[:16]

    @property
    def time_label(self) -> str:
        z = start_time(self.meta).strftime("%z")
        return f"local time (UTC{z[:3]}:{z[3:]})"

    def table(self, name: str) -> Table | None:
        return self.run.tables.get(name)


@dataclass
class JsonLines:
    rows: list[dict[str, Any]]
    unreadable: int = 0  # lines that are not one JSON object (a crash mid-write): skipped, counted, warned about
    truncated: bool = False  # more than the limit: the first ones are kept


def _jsonl(path: Path, limit: int = 100_000) -> JsonLines:
    """One JSON object per line; a line that is not one is skipped and counted, not fatal."""
    out = JsonLines([])
    if not path.is_file():
        return out
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if len(out.rows) >= limit:
                out.truncated = True
                break
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                out.rows.append(obj)
            elif line.strip():
                out.unreadable += 1
    if out.unreadable:
        log.warning("%s: %d line(s) are not JSON objects and were skipped", path, out.unreadable)
    return out


def find_baseline(run_dir: Path, kpis: dict[str, Any]) -> Path | None:
    """The newest sibling run of the same scenario's baseline variant (``<scenario>-baseline`` in its meta.json),
    or None; a baseline run never has a baseline of its own."""
    name = str(kpis.get("run", {}).get("scenario") or "")
    base = name.rsplit("-", 1)[0] if "-" in name else name
    if not base or name == f"{base}-{BASELINE_VARIANT}":
        return None
    want = f"{base}-{BASELINE_VARIANT}"
    found: list[tuple[float, Path]] = []
    parent = run_dir.resolve().parent
    for d in parent.iterdir() if parent.is_dir() else []:
        meta = d / "meta.json"
        if d.resolve() == run_dir.resolve() or not meta.is_file():
            continue
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("scenario") == want:
                found.append((meta.stat().st_mtime, d))
        except (OSError, ValueError):
            continue
    return max(found)[1] if found else None


def _baseline_kpis(path: Path) -> dict[str, Any]:
    f = path / kpi.KPI_FILE
    if f.is_file():
        try:
            return kpi.read(path)
        except ValueError:
            pass
    return kpi.compute(path)


def load(run_dir: Path, baseline: Path | None = None) -> ReportContext:
    """Load the run (its KPIs are recomputed so the page always matches the data) and its baseline."""
    run = kpi.load(run_dir)
    kpis = kpi.compute(run_dir, data=run)
    for name in EXTRA_TABLES:
        t = read_table(run_dir, name)
        if t is not None:
            run.tables[name] = t
    # Tables without rows (a run that failed at once) are treated as absent.
    run = RunData(run.meta, run.step_s, {n: t for n, t in run.tables.items() if len(t)})
    sessions_path = run_dir / "sessions.jsonl"
    # one reader for the sessions file: a cut-short last record is dropped with a warning, corruption is an error
    sessions, fleets = read_sessions(sessions_path) if sessions_path.is_file() else ([], [])
    events = _jsonl(run_dir / "events.jsonl")
    base_dir = baseline if baseline is not None else find_baseline(run_dir, kpis)
    base = None
    if base_dir is not None:
        base_kpis = _baseline_kpis(base_dir)
        base = (str(base_kpis.get("run", {}).get("scenario") or base_dir.name), base_kpis)
    return ReportContext(run_dir, run, kpis, feeder(run.meta), sessions, fleets, events.rows, base,
                         events.unreadable, events.truncated)


def finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
