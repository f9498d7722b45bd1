"""The study directory: what was run (results.jsonl, appended and flushed per variant), the table, the runs kept.

``results.jsonl`` is the study's memory: one JSON line per finished variant (complete or failed), written as soon
as the result arrives, so Ctrl-C, a crash or a killed client loses at most the variants still running;
``--resume`` reads it and skips those variants. A torn last line (the process died mid-write) is ignored.
The table (one row per variant: axes, KPIs, targets, economics) is rebuilt from it as ``table.parquet`` and as
the table ``variants`` in ``study.duckdb``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Iterable

if TYPE_CHECKING:
    import pandas as pd

RESULTS = "results.jsonl"
STUDY_JSON = "study.json"
TABLE = "table.parquet"
DUCKDB = "study.duckdb"
SEARCH_TABLE = "search.parquet"
RUNS = "runs"
ERRORS = "errors"


class StudyDirError(ValueError):
    """A study directory that cannot be used as asked (exists without --resume, or belongs to another study)."""


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.path = self.root / RESULTS

    def load(self) -> dict[str, dict[str, Any]]:
        """Finished variants by id (the last line of an id wins)."""
        out: dict[str, dict[str, Any]] = {}
        if not self.path.is_file():
            return out
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash: that variant runs again
                if isinstance(row, dict) and row.get("status") in ("complete", "failed") and "id" in row:
                    out[row["id"]] = row
        return out

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, allow_nan=False, default=_plain) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def save_tables(self, vid: str, tables: dict[str, bytes]) -> Path:
        """A kept variant's time series as a run directory (``runs/<id>/timeseries/*.parquet`` + meta.json)."""
        run_dir = self.root / RUNS / vid
        (run_dir / "timeseries").mkdir(parents=True, exist_ok=True)
        for name, data in tables.items():
            target = run_dir / name if name.endswith(".json") else run_dir / "timeseries" / f"{name}.parquet"
            target.write_bytes(data)
        return run_dir

    def save_error(self, vid: str, text: str) -> None:
        folder = self.root / ERRORS
        folder.mkdir(exist_ok=True)
        (folder / f"{vid}.log").write_text(text, encoding="utf-8")


def _plain(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def write_table(root: Path, rows: list[dict[str, Any]], name: str = TABLE, duck_table: str = "variants") -> Path:
    """``rows`` as Parquet and as a table in study.duckdb (replaced)."""
    import duckdb
    import pandas as pd

    frame = pd.DataFrame(rows)
    for col in frame.columns:  # a KPI column mixing text and numbers (a None-only column stays object)
        kinds = {type(v) for v in frame[col] if v is not None}
        if str in kinds and len(kinds) > 1:
            frame[col] = frame[col].map(lambda v: None if v is None else str(v))
    path = root / name
    frame.to_parquet(path, index=False)
    con = duckdb.connect(str(root / DUCKDB))
    try:
        con.execute(f'CREATE OR REPLACE TABLE "{duck_table}" AS SELECT * FROM read_parquet(?)', [str(path)])
    finally:
        con.close()
    return path


def read_table(root: Path) -> pd.DataFrame:
    """The study table as a pandas DataFrame."""
    import pandas as pd

    return pd.read_parquet(Path(root) / TABLE)


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_plain), encoding="utf-8")
    tmp.replace(path)


def rows_in_order(order: Iterable[str], results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [results[v] for v in order if v in results]


__all__ = ["ResultStore", "StudyDirError", "read_table", "write_json", "write_table"]
