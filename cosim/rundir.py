"""Read a run directory (the contract in docs/results.md): meta.json, run.json and the Parquet time series.

KPIs, the report and the command line read runs only through these helpers, never the live world.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow.parquet as pq

TIMESERIES_DIR = "timeseries"
STATUSES = ("complete", "interrupted", "failed")


def split_column(column: str) -> tuple[str, str]:
    """``"<id>.<attr>"`` -> (id, attr). Ids may contain dots and spaces, attributes never contain dots."""
    ident, dot, attr = column.rpartition(".")
    if not dot:
        raise ValueError(f"column {column!r} is not of the form '<id>.<attr>'")
    return ident, attr


@dataclass(frozen=True)
class Table:
    """One recorded table: ``t_s`` (int64 seconds from start) and float64 columns ``"<id>.<attr>"``."""

    name: str
    t_s: np.ndarray
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.t_s)

    def ids(self, attr: str) -> list[str]:
        """Ids that have attribute ``attr``, in column order."""
        out = []
        for col in self.columns:
            ident, a = split_column(col)
            if a == attr:
                out.append(ident)
        return out

    def get(self, ident: str, attr: str) -> np.ndarray | None:
        return self.columns.get(f"{ident}.{attr}")

    def matrix(self, attr: str, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """(ids, values of shape (steps, len(ids))); an id without the column gives a NaN column."""
        ids = self.ids(attr) if ids is None else ids
        out = np.full((len(self), len(ids)), np.nan)
        for j, ident in enumerate(ids):
            col = self.get(ident, attr)
            if col is not None:
                out[:, j] = col
        return ids, out

    def aligned(self, t_s: np.ndarray, ffill: bool = False) -> Table:
        """This table re-indexed onto ``t_s``: exact matches only, or with ``ffill`` the last row at or before
        each time (for piecewise-constant series such as prices at a coarser step). NaN where there is none."""
        t_s = np.asarray(t_s, dtype=np.int64)
        if np.array_equal(self.t_s, t_s):
            return self
        pos = np.searchsorted(self.t_s, t_s, side="right") - 1  # last row with time <= t
        hit = pos >= 0
        if not ffill:
            hit &= self.t_s[np.maximum(pos, 0)] == t_s if len(self) else False
        cols = {}
        for name, col in self.columns.items():
            new = np.full(len(t_s), np.nan)
            new[hit] = col[pos[hit]]
            cols[name] = new
        return Table(self.name, t_s, cols)


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as f:
        return cast("dict[str, Any] | None", json.load(f))


def read_meta(run_dir: str | Path) -> dict[str, Any]:
    """meta.json (written by the world builder before the run); required."""
    meta = _read_json(Path(run_dir) / "meta.json")
    if meta is None:
        raise FileNotFoundError(f"{run_dir}: no meta.json, not a run directory")
    return meta


def read_run(run_dir: str | Path) -> dict[str, Any] | None:
    """run.json (written by the run code at the end), or None if the run never got that far."""
    return _read_json(Path(run_dir) / "run.json")


def run_status(run_dir: str | Path) -> str:
    """"complete", "interrupted", "failed", or "unknown" when run.json is missing or has no status."""
    run = read_run(run_dir)
    status = (run or {}).get("status")
    return status if status in STATUSES else "unknown"


def start_time(meta: dict[str, Any]) -> datetime:
    """The scenario start as a timezone-aware datetime."""
    start = datetime.fromisoformat(str(meta["start"]))
    if start.tzinfo is None:
        raise ValueError(f"meta.json start {meta['start']!r} has no timezone")
    return start


def table_names(run_dir: str | Path) -> list[str]:
    """Names of the recorded tables (sorted)."""
    ts = Path(run_dir) / TIMESERIES_DIR
    return sorted(p.stem for p in ts.glob("*.parquet")) if ts.is_dir() else []


def read_table(run_dir: str | Path, name: str) -> Table | None:
    """The table ``name``, or None when the run did not record it."""
    path = Path(run_dir) / TIMESERIES_DIR / f"{name}.parquet"
    if not path.exists():
        return None
    try:
        data = pq.read_table(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends; say which file and why it may be broken
        raise ValueError(f"{path}: unreadable ({exc}); was the recorder closed (Recorder.close)?") from exc
    names = data.column_names
    if not names or names[0] != "t_s":
        raise ValueError(f"{path}: first column must be t_s, found {names[:1]}")
    t_s = data.column(0).to_numpy().astype(np.int64, copy=False)
    cols = {n: data.column(n).to_numpy().astype(np.float64, copy=False) for n in names[1:]}
    return Table(name, t_s, cols)


def read_tables(run_dir: str | Path) -> dict[str, Table]:
    tables = {}
    for name in table_names(run_dir):
        table = read_table(run_dir, name)
        if table is not None:
            tables[name] = table
    return tables
