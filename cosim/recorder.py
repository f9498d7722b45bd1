"""The recorder: every recorded attribute of a run goes into the run directory.

``Recorder`` is a plain class (no mosaik): it buffers one row per table per step in preallocated numpy arrays
and flushes a Parquet row group every ``flush_rows`` rows, so memory stays flat however long the run is.
``close()`` writes the Parquet footers and builds ``results.duckdb`` (one table per Parquet file and the
``long`` view). ``RecorderSim`` wraps it as a mosaik-api-v3 simulator.

Layout written (see docs/results.md)::

    out_dir/timeseries/<table>.parquet   t_s (int64) first, then float64 "<id>.<attr>" columns (NULL = missing)
    out_dir/messaging/counters.parquet, dead_letters.parquet   the message bus's counters and dead letters
    out_dir/results.duckdb
"""

from __future__ import annotations

import json
import logging
import re
import reprlib
import weakref
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mosaik_api_v3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cosim.rundir import TIMESERIES_DIR, table_names

log = logging.getLogger(__name__)

DUCKDB_FILE = "results.duckdb"
LONG_VIEW = "long"
MESSAGING_DIR = "messaging"
# tables of results.duckdb besides the time series: name -> Parquet file in the run directory
EXTRA_TABLES = {"messaging_counters": f"{MESSAGING_DIR}/counters.parquet",
                "dead_letters": f"{MESSAGING_DIR}/dead_letters.parquet"}

# Fixed writer options: the same data must give byte-identical files (pyarrow writes no timestamps itself).
# Byte-stream split makes zstd far more effective on float64 time series.
_WRITER_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": False,
    "use_byte_stream_split": True,
    "write_statistics": True,
    "data_page_version": "1.0",
    "version": "2.6",
}
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Key = tuple[str, str]  # (source full id "Sim-0.eid", attribute)

# Open recorders of this process, so an interrupt handler can close them without holding a reference.
_OPEN: weakref.WeakSet[Recorder] = weakref.WeakSet()


@dataclass
class _Table:
    """Buffer and writer of one output table. Buffer is column-major so each flushed column is contiguous."""

    name: str
    columns: list[str]
    t_s: np.ndarray
    buf: np.ndarray
    # Scalar inputs are written with one fancy-indexed assignment per step: far cheaper than one per value.
    scalar_keys: list[Key] = field(default_factory=list)
    scalar_idx: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.intp))
    vectors: list[tuple[Key, int | slice | np.ndarray, int]] = field(default_factory=list)
    writer: pq.ParquetWriter | None = None

    def schema(self) -> pa.Schema:
        fields = [pa.field("t_s", pa.int64(), nullable=False)]
        fields += [pa.field(c, pa.float64()) for c in self.columns]
        return pa.schema(fields)

    def put(self, row: int, values: Mapping[Key, Any]) -> None:
        if self.scalar_keys:
            get = values.get
            # numpy turns None into NaN for a float64 target, so a None value needs no special case.
            self.buf[self.scalar_idx, row] = list(map(get, self.scalar_keys))
        for key, col, width in self.vectors:
            value = values.get(key)
            if value is not None:
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape != (width,):
                    raise ValueError(f"{key[0]}.{key[1]}: vector of shape {arr.shape}, {width} columns registered")
                self.buf[col, row] = arr

    def flush(self, n: int) -> None:
        if n == 0 or self.writer is None:
            return
        arrays = [_arrow(pa.int64(), self.t_s[:n])]
        arrays += [_nullable(self.buf[i, :n]) for i in range(len(self.columns))]
        # write_table is synchronous, so the zero-copy arrays may share the buffer that is reused afterwards.
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.writer.schema), row_group_size=n)
        self.buf[:, :n] = np.nan


def _arrow(type_: pa.DataType, arr: np.ndarray) -> pa.Array:
    """Zero-copy Arrow view of a contiguous numpy slice (pa.array() would import pandas on first use)."""
    return pa.Array.from_buffers(type_, len(arr), [None, pa.py_buffer(np.ascontiguousarray(arr))])


def _nullable(arr: np.ndarray) -> pa.Array:
    """A float64 column whose missing values (NaN in the buffer) are NULL in the file: SQL aggregates then skip
    them (DuckDB's max() of a column holding NaN is NaN, since NaN sorts above every number)."""
    missing = np.isnan(arr)
    n_missing = int(missing.sum())
    if n_missing == 0:
        return _arrow(pa.float64(), arr)
    valid = pa.py_buffer(np.packbits(~missing, bitorder="little"))
    return pa.Array.from_buffers(pa.float64(), len(arr), [valid, pa.py_buffer(np.ascontiguousarray(arr))],
                                 null_count=n_missing)


def _culprit(values: Mapping[Key, Any], vectors: frozenset[Key], exc: Exception) -> str:
    """Name the value that failed a bulk assignment (slow path, only after an error)."""
    for (src, attr), value in values.items():
        if value is None:
            continue
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            return f"{src}.{attr}={reprlib.repr(value)} is not a number"
        if arr.ndim != 0 and (src, attr) not in vectors:
            return f"{src}.{attr}={reprlib.repr(value)} is a vector, registered as a scalar column"
    return str(exc)


def _parse_columns(columns: Iterable[Sequence[Any]]) -> list[tuple[Key, str, str | list[str]]]:
    parsed: list[tuple[Key, str, str | list[str]]] = []
    for item in columns:
        if len(item) != 4:
            raise ValueError(f"recorder column spec {item!r}: expected [src_full_id, attr, table, column(s)]")
        src, attr, table, col = item
        if not _TABLE_NAME.match(str(table)) or table == LONG_VIEW:
            raise ValueError(f"recorder table name {table!r}: use letters, digits and '_' (and not {LONG_VIEW!r})")
        cols = [str(c) for c in col] if isinstance(col, (list, tuple)) else str(col)
        if isinstance(cols, list) and not cols:
            raise ValueError(f"recorder column spec {item!r}: a vector needs at least one column")
        for c in cols if isinstance(cols, list) else [cols]:
            if "." not in c.strip(".") or c.endswith("."):
                raise ValueError(f"recorder column {c!r} in {table!r}: expected '<id>.<attr>'")
        parsed.append(((str(src), str(attr)), str(table), cols))
    return parsed


def _index(cols: list[int]) -> int | slice | np.ndarray:
    """A contiguous run of columns becomes a slice: assigning a vector through a slice is cheaper."""
    if cols == list(range(cols[0], cols[0] + len(cols))):
        return slice(cols[0], cols[0] + len(cols))
    return np.asarray(cols, dtype=np.intp)


class Recorder:
    """Records (source, attribute) values into per-table Parquet files under ``out_dir``.

    ``columns``: ``[[src_full_id, attr, table, column], ...]``; when the 4th item is a list the attribute is a
    vector and element i goes to column ``list[i]``. ``order`` (table -> every column name of it, optional): the
    file order of the columns, so a world that gathers many scalar sources into one vector writes the same file
    as before; without it, columns follow the order of ``columns``.
    """

    def __init__(self, out_dir: str | Path, columns: Iterable[Sequence[Any]], flush_rows: int = 1440,
                 order: Mapping[str, Sequence[str]] | None = None) -> None:
        if flush_rows < 1:
            raise ValueError(f"flush_rows must be >= 1, got {flush_rows}")
        self.out_dir = Path(out_dir)
        self.flush_rows = int(flush_rows)
        self.rows = 0  # rows recorded in total (per table)
        self.status: str | None = None
        self.closed = False
        self._row = 0  # row within the current buffer
        self._last_t: int | None = None
        self._tables: dict[str, _Table] = {}
        self._known: frozenset[Key] = frozenset()
        self._vectors: frozenset[Key] = frozenset()
        self._register(_parse_columns(columns), order or {})
        self._open_writers()
        _OPEN.add(self)

    @property
    def tables(self) -> dict[str, list[str]]:
        """Table name -> data column names, in file order (``t_s`` comes first and is not listed)."""
        return {name: list(t.columns) for name, t in self._tables.items()}

    def _register(self, specs: list[tuple[Key, str, str | list[str]]], order: Mapping[str, Sequence[str]]) -> None:
        layout: dict[str, list[str]] = {}
        placed: list[tuple[Key, str, list[int], bool]] = []
        seen: set[Key] = set()
        for key, table, cols in specs:
            if key in seen:
                raise ValueError(f"recorder: {key[0]}.{key[1]} is registered twice")
            seen.add(key)
            names = layout.setdefault(table, [])
            first = len(names)
            names.extend(cols if isinstance(cols, list) else [cols])
            placed.append((key, table, list(range(first, len(names))), isinstance(cols, list)))
        for name, names in layout.items():
            twice = [c for c, n in Counter(["t_s", *names]).items() if n > 1]
            if twice:
                raise ValueError(f"recorder: column(s) {twice} appear twice in table {name!r}")
            if name in order:
                wanted = [str(c) for c in order[name]]
                if sorted(wanted) != sorted(names):
                    raise ValueError(f"recorder: the order of table {name!r} does not list exactly its columns")
                moved = {c: i for i, c in enumerate(wanted)}
                placed = [(k, t, [moved[names[i]] for i in idx] if t == name else idx, v) for k, t, idx, v in placed]
                layout[name] = names = wanted
            self._tables[name] = _Table(
                name=name,
                columns=names,
                t_s=np.zeros(self.flush_rows, dtype=np.int64),
                buf=np.full((len(names), self.flush_rows), np.nan),
            )
        scalars: dict[str, list[tuple[Key, int]]] = {}
        for key, table, indices, is_vector in placed:
            t = self._tables[table]
            if is_vector:
                t.vectors.append((key, _index(indices), len(indices)))
            else:
                scalars.setdefault(table, []).append((key, indices[0]))
        for table, pairs in scalars.items():
            self._tables[table].scalar_keys = [k for k, _ in pairs]
            self._tables[table].scalar_idx = np.asarray([c for _, c in pairs], dtype=np.intp)
        self._known = frozenset(seen)
        self._vectors = frozenset(key for key, _, _, is_vector in placed if is_vector)

    def _open_writers(self) -> None:
        ts_dir = self.out_dir / TIMESERIES_DIR
        ts_dir.mkdir(parents=True, exist_ok=True)
        for t in self._tables.values():
            t.writer = pq.ParquetWriter(ts_dir / f"{t.name}.parquet", t.schema(), **_WRITER_OPTIONS)

    def record(self, t_s: int, values: Mapping[Key, Any]) -> None:
        """Append one row to every table at ``t_s``; columns without a value (or NaN) in ``values`` are NULL."""
        if self.closed:
            raise RuntimeError(f"recorder in {self.out_dir} is closed")
        t_s = int(t_s)
        if self._last_t is not None and t_s <= self._last_t:
            raise ValueError(f"recorder: t_s={t_s} does not advance past {self._last_t}")
        unknown = () if self._known.issuperset(values) else values.keys() - self._known  # (no new set per step)
        if unknown:
            names = ", ".join(f"{s}.{a}" for s, a in sorted(unknown))
            raise ValueError(f"recorder: no column registered for input(s) {names}")
        row = self._row
        try:
            for t in self._tables.values():
                t.put(row, values)
        except (TypeError, ValueError) as exc:
            self._clear_row(row)  # leave no half-written row behind for the next step
            raise ValueError(f"recorder: cannot record at t_s={t_s}: {_culprit(values, self._vectors, exc)}") from exc
        for t in self._tables.values():
            t.t_s[row] = t_s
        self._last_t = t_s
        self.rows += 1
        self._row += 1
        if self._row == self.flush_rows:
            self._flush()

    def _clear_row(self, row: int) -> None:
        for t in self._tables.values():
            t.buf[:, row] = np.nan

    def _flush(self) -> None:
        for t in self._tables.values():
            t.flush(self._row)
        self._row = 0

    def close(self, status: str | None = None) -> None:
        """Flush, write the Parquet footers and build results.duckdb. Idempotent; safe in an interrupt handler.

        ``status`` ("complete", "interrupted", "failed") is only logged: run.json is the authoritative record.
        """
        if self.closed:
            return
        self.closed = True
        self.status = status
        _OPEN.discard(self)
        try:
            self._flush()
        finally:
            for t in self._tables.values():
                if t.writer is not None:
                    t.writer.close()
                    t.writer = None
        build_duckdb(self.out_dir)
        log.info("recorder closed (%s): %d rows in %s", status or "status unknown", self.rows, self.out_dir)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close("complete")
        else:
            self.close("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")


def close_all(status: str | None = None) -> None:
    """Close every open recorder of this process (for a KeyboardInterrupt or error handler)."""
    for rec in list(_OPEN):
        rec.close(status)


def _q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def build_duckdb(out_dir: str | Path) -> Path:
    """(Re)build ``results.duckdb`` from every Parquet file of the run directory: one table each, plus the view
    ``long(table, t_s, id, attr, value)``.

    All files, not only this recorder's: with several recorders in one run the last one to close builds the
    complete database. A file another recorder is still writing (no footer yet) is skipped; that recorder
    rebuilds the database when it closes. Tables are copies, not views on the Parquet files, so the database
    still works when the run directory moves. Built under a temporary name, so readers never see half a file.
    """
    import duckdb  # imported here: the step path never needs it

    out_dir = Path(out_dir)
    db_path = out_dir / DUCKDB_FILE
    tmp_path = out_dir / (DUCKDB_FILE + ".tmp")
    tmp_path.unlink(missing_ok=True)
    with duckdb.connect(str(tmp_path)) as con:
        parts: list[str] = []
        for name in table_names(out_dir):
            pq_path = out_dir / TIMESERIES_DIR / f"{name}.parquet"
            try:
                width = len(pq.read_schema(pq_path))
            except (OSError, pa.ArrowException) as exc:
                log.warning("results.duckdb: skipping %s (%s)", pq_path, exc)
                continue
            con.execute(f"CREATE TABLE {_q(name)} AS SELECT * FROM read_parquet(?)", [str(pq_path)])
            if width > 1:
                parts.append(_long_select(name))
        _load_extra_tables(con, out_dir)
        if parts:
            con.execute(f"CREATE VIEW {_q(LONG_VIEW)} AS " + " UNION ALL ".join(parts))
        else:
            con.execute(
                f"CREATE VIEW {_q(LONG_VIEW)} AS SELECT NULL::VARCHAR AS \"table\", NULL::BIGINT AS t_s, "
                "NULL::VARCHAR AS id, NULL::VARCHAR AS attr, NULL::DOUBLE AS value WHERE false"
            )
    tmp_path.replace(db_path)
    return db_path


def _load_extra_tables(con: Any, out_dir: Path) -> None:
    for name, rel in EXTRA_TABLES.items():
        path = out_dir / rel
        if path.is_file():
            con.execute(f"CREATE OR REPLACE TABLE {_q(name)} AS SELECT * FROM read_parquet(?)", [str(path)])


_COUNTERS_SCHEMA = pa.schema([("role", pa.string()), ("counter", pa.string()), ("value", pa.int64())])
_DEAD_SCHEMA = pa.schema([("t_s", pa.float64()), ("role", pa.string()), ("topic", pa.string()),
                          ("sender", pa.string()), ("seq", pa.int64()), ("size", pa.int64()),
                          ("reason", pa.string()), ("payload", pa.binary())])


def record_messaging(out_dir: str | Path, stats: Mapping[str, Mapping[str, int]], dead_letters: Sequence[Any]) -> None:
    """Put the message bus's counters and dead letters into the run directory, so no rejected message is only a
    log line: ``messaging/counters.parquet`` (role, counter, value), ``messaging/dead_letters.parquet`` (one row
    per kept dead letter, ``MessageBus.dead_letters()``), the same two tables in results.duckdb
    (``messaging_counters``, ``dead_letters``) and one ``dead_letter`` event per dead letter in events.jsonl.
    Called once after the bus closed (nothing arrives any more)."""
    import duckdb

    out_dir = Path(out_dir)
    folder = out_dir / MESSAGING_DIR
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(role, counter, int(value)) for role, counters in stats.items() for counter, value in counters.items()]
    pq.write_table(pa.Table.from_pylist([dict(zip(_COUNTERS_SCHEMA.names, r)) for r in rows], schema=_COUNTERS_SCHEMA),
                   folder / "counters.parquet", **_WRITER_OPTIONS | {"use_byte_stream_split": False})
    dead = [{"t_s": float(d.t_s), "role": d.role_key, "topic": d.topic, "sender": d.sender, "seq": int(d.seq),
             "size": int(d.size), "reason": d.reason, "payload": bytes(d.payload)} for d in dead_letters]
    pq.write_table(pa.Table.from_pylist(dead, schema=_DEAD_SCHEMA), folder / "dead_letters.parquet",
                   **_WRITER_OPTIONS | {"use_byte_stream_split": False})
    if dead:
        with (out_dir / "events.jsonl").open("a", encoding="utf-8") as f:
            for d in dead:
                f.write(json.dumps({"t_s": d["t_s"], "kind": "dead_letter", "role": d["role"], "topic": d["topic"],
                                    "sender": d["sender"], "seq": d["seq"], "message": d["reason"]}) + "\n")
    db_path = out_dir / DUCKDB_FILE
    if not db_path.is_file():
        build_duckdb(out_dir)
        return
    with duckdb.connect(str(db_path)) as con:
        _load_extra_tables(con, out_dir)


def _long_select(table: str) -> str:
    # Ids may contain dots: the attribute is what follows the LAST dot.
    return (
        f"SELECT '{table}' AS \"table\", t_s, "
        r"regexp_extract(col, '^(.*)\.[^.]*$', 1) AS id, regexp_extract(col, '\.([^.]*)$', 1) AS attr, value "
        f"FROM (UNPIVOT {_q(table)} ON COLUMNS(* EXCLUDE (t_s)) INTO NAME col VALUE value)"
    )


META: mosaik_api_v3.Meta = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Recorder": {"public": True, "params": ["columns", "order"], "attrs": [], "any_inputs": True}},
}


class RecorderSim(mosaik_api_v3.Simulator):
    """mosaik-api-v3 wrapper of :class:`Recorder` (one Recorder entity per simulator instance).

    Inputs are keyed by the attribute name as it arrives at the recorder, i.e. the destination attribute of the
    connection (the source attribute unless the connection renames it).
    """

    def __init__(self) -> None:
        super().__init__(META)  # type: ignore[no-untyped-call]  # mosaik_api_v3: Simulator.__init__ is unannotated
        self.sid = ""
        self.out_dir: Path | None = None
        self.step_size = 60
        self.flush_rows = 1440
        self.time_resolution = 1.0
        self.recorder: Recorder | None = None
        self.on_step: Any = None

    def init(
        self,
        sid: str,
        time_resolution: float = 1.0,
        out_dir: str | None = None,
        step_size: int = 60,
        flush_rows: int = 1440,
        on_step: Any = None,
        **sim_params: Any,
    ) -> mosaik_api_v3.Meta:
        """``on_step(t_s)`` (in-process only) is called after each recorded row: the recorder steps last in
        every step, so a progress display or a stop request sees whole steps (cosim.progress.RunMonitor)."""
        if out_dir is None:
            raise ValueError("RecorderSim needs out_dir (the run directory)")
        if sim_params:
            raise ValueError(f"RecorderSim: unknown parameter(s) {sorted(sim_params)}")
        self.sid = sid
        self.out_dir = Path(out_dir)
        self.step_size = int(step_size)
        self.flush_rows = int(flush_rows)
        self.time_resolution = float(time_resolution)
        self.on_step = on_step
        return self.meta

    def create(self, num: int, model: str, **model_params: Any) -> list[mosaik_api_v3.CreateResult]:
        if model != "Recorder" or num != 1 or self.recorder is not None:
            raise ValueError("RecorderSim hosts exactly one 'Recorder' entity: create(1, 'Recorder', columns=...)")
        assert self.out_dir is not None
        self.recorder = Recorder(self.out_dir, model_params.get("columns", []), self.flush_rows,
                                 model_params.get("order"))
        return [{"eid": "Recorder", "type": "Recorder"}]

    def step(self, time: int, inputs: mosaik_api_v3.InputData, max_advance: int) -> int:
        assert self.recorder is not None, "create() the Recorder entity before stepping"
        values = {
            (src, attr): value
            for by_attr in inputs.values()
            for attr, by_src in by_attr.items()
            for src, value in by_src.items()
        }
        t_s = time if self.time_resolution == 1.0 else round(time * self.time_resolution)
        self.recorder.record(t_s, values)
        if self.on_step is not None:
            self.on_step(t_s)
        return time + self.step_size

    def get_data(self, outputs: mosaik_api_v3.OutputRequest) -> mosaik_api_v3.OutputData:
        return {}

    def finalize(self) -> None:
        # mosaik also calls finalize after it swallowed a KeyboardInterrupt, so "complete" would be a guess.
        self.close()

    def close(self, status: str | None = None) -> None:
        """Idempotent; callable from an interrupt handler before or after mosaik's finalize."""
        if self.recorder is not None:
            self.recorder.close(status)


if __name__ == "__main__":
    mosaik_api_v3.start_simulation(RecorderSim(), "S4G recorder: time series to Parquet + DuckDB")
