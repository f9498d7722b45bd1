"""What a bench run keeps besides the offline run directory: bench events and the device I/O log.

``events.jsonl`` is shared with the device host (one JSON object per line, appended and flushed line by line;
bench events carry ``"source": "bench"``). ``device_io/<device>.parquet`` holds, in long form, everything read
from and written to each protocol device, so ``replay://RUN_DIR/device`` can play it back:

=============  ======================================================================================
column         meaning
=============  ======================================================================================
t_s            simulated step (int64 s from the scenario start)
wall_s         wall seconds since the first step's due time when the operation started
op             ``read`` | ``write`` | ``clock`` (``clock: steps``: a served device told the step's end, ``t_s``)
status         ``ok`` | ``held`` (measurement repeated, no wire) | ``rejected`` (refused before or by the
               device) | ``dropped`` (not sent: device faulted, emergency stop, drill) | ``deferred``
               (skipped step) | ``error`` (device error)
source         who asked: ``controller`` | ``arm`` | ``watchdog`` | ``estop`` | ``end`` | ``bench``
name, value    one measured quantity or one setpoint value per row (empty name / NaN on error rows)
duration_s     duration of the operation on the wire (NaN when nothing was sent)
detail         error or refusal message
=============  ======================================================================================
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any
from collections.abc import Mapping

IO_DIR = "device_io"
FLUSH_ROWS = 4096
COLUMNS = ("t_s", "wall_s", "op", "status", "source", "name", "value", "duration_s", "detail")


class EventSink:
    """Bench events: appended to events.jsonl at once and kept in memory (monitor, bench.json)."""

    def __init__(self, path: Path | None) -> None:
        self._file = open(path, "a", encoding="utf-8") if path is not None else None  # noqa: SIM115 - until close()
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def emit(self, t_s: float, device: str, kind: str, message: str, *, persist: bool = True) -> dict[str, Any]:
        """Record an event; ``persist=False`` keeps it off events.jsonl (the device host logs it already)."""
        event = {"t_s": t_s, "device": device, "kind": kind, "message": message, "source": "bench",
                 "wall": round(time.time(), 3)}
        with self._lock:
            self.events.append(event)
            if self._file is not None and persist:
                self._file.write(json.dumps(event) + "\n")
                self._file.flush()
        return event

    def recent(self, n: int = 30) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.events[-n:])

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _schema():  # pyarrow only when a log is written
    import pyarrow as pa

    return pa.schema([("t_s", pa.int64()), ("wall_s", pa.float64()), ("op", pa.string()), ("status", pa.string()),
                      ("source", pa.string()), ("name", pa.string()), ("value", pa.float64()),
                      ("duration_s", pa.float64()), ("detail", pa.string())])


class IoLog:
    """The device I/O log of a run: one Parquet file per device, written in row groups."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = Path(run_dir) / IO_DIR
        self.dir.mkdir(parents=True, exist_ok=True)
        self._rows: dict[str, list[tuple]] = {}
        self._writers: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.t0: float | None = None  # perf_counter of the first step's due time

    def wall(self, at: float) -> float:
        return float("nan") if self.t0 is None else at - self.t0

    def add(self, device: str, t_s: int, started: float, op: str, status: str, source: str,
            values: Mapping[str, float] | None = None, duration_s: float = float("nan"), detail: str = "") -> None:
        wall = self.wall(started)
        items = list(values.items()) if values else [("", float("nan"))]
        rows = [(int(t_s), wall, op, status, source, name, float(value), duration_s, detail) for name, value in items]
        with self._lock:
            buf = self._rows.setdefault(device, [])
            buf.extend(rows)
            if len(buf) >= FLUSH_ROWS:
                self._flush(device)

    def _flush(self, device: str) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = self._rows.get(device)
        if not rows:
            return
        schema = _schema()
        table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(COLUMNS)}, schema=schema)
        writer = self._writers.get(device)
        if writer is None:
            writer = self._writers[device] = pq.ParquetWriter(self.dir / f"{device}.parquet", schema,
                                                              compression="zstd")
        writer.write_table(table)
        self._rows[device] = []

    def ensure(self, device: str) -> None:
        """Make sure the device gets a file even if nothing was exchanged."""
        with self._lock:
            self._rows.setdefault(device, [])

    def close(self) -> None:
        import pyarrow.parquet as pq

        with self._lock:
            for device in list(self._rows):
                self._flush(device)
                if device not in self._writers:  # no row at all: an empty file with the schema
                    pq.write_table(_schema().empty_table(), self.dir / f"{device}.parquet")
            for writer in self._writers.values():
                writer.close()
            self._writers.clear()
            self._rows.clear()


def read_io(run_dir: Path, device: str):
    """The I/O log of one device as a pyarrow Table (raises FileNotFoundError with the path)."""
    import pyarrow.parquet as pq

    path = Path(run_dir) / IO_DIR / f"{device}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no device I/O log (was {device!r} a protocol device of a bench run?)")
    return pq.read_table(path)
