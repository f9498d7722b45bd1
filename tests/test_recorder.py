"""The recorder: layout, NULL for missing values, strict mapping, flushing, determinism, DuckDB and mosaik."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import mosaik
import mosaik_api_v3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cosim.recorder import Recorder, RecorderSim, close_all
from cosim.rundir import read_table

COLUMNS = [
    ["Dev-0.hh 1", "p_w", "devices", "hh.1.p_w"],  # ids may contain dots and spaces
    ["Grid-0.grid", "v_a", "buses", ["bus_001.v_a_pu", "node a.11.v_a_pu", "n3.v_a_pu"]],
    ["Dev-0.hh 1", "soc", "devices", "hh.1.soc"],
    ["Grid-0.grid", "losses_w", "grid", "grid.losses_w"],
]


def _record_three(out: Path, flush_rows: int = 1440) -> Recorder:
    rec = Recorder(out, COLUMNS, flush_rows=flush_rows)
    rec.record(0, {("Dev-0.hh 1", "p_w"): 100.0, ("Dev-0.hh 1", "soc"): 0.5, ("Grid-0.grid", "v_a"): [1.0, 0.98, 0.97]})
    rec.record(60, {("Dev-0.hh 1", "p_w"): None, ("Grid-0.grid", "losses_w"): 12})  # soc and v_a missing
    rec.record(120, {("Grid-0.grid", "v_a"): np.array([1.0, np.nan, 1.01])})
    return rec


def test_layout_order_types_and_nan_for_missing(tmp_path: Path) -> None:
    _record_three(tmp_path).close("complete")
    dev = pq.read_table(tmp_path / "timeseries" / "devices.parquet")
    assert dev.schema.names == ["t_s", "hh.1.p_w", "hh.1.soc"]
    assert dev.schema.field("t_s").type == pa.int64() and dev.schema.field("hh.1.soc").type == pa.float64()
    assert dev.column("t_s").to_pylist() == [0, 60, 120]
    np.testing.assert_array_equal(dev.column("hh.1.p_w").to_numpy(), [100.0, np.nan, np.nan])
    np.testing.assert_array_equal(dev.column("hh.1.soc").to_numpy(), [0.5, np.nan, np.nan])
    buses = read_table(tmp_path, "buses")
    assert buses is not None and list(buses.columns) == ["bus_001.v_a_pu", "node a.11.v_a_pu", "n3.v_a_pu"]
    np.testing.assert_array_equal(buses.columns["node a.11.v_a_pu"], [0.98, np.nan, np.nan])
    np.testing.assert_array_equal(read_table(tmp_path, "grid").columns["grid.losses_w"], [np.nan, 12.0, np.nan])


def test_unknown_input_is_an_error_and_leaves_no_partial_row(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, COLUMNS)
    with pytest.raises(ValueError, match=r"Dev-0\.hh 2\.p_w"):
        rec.record(0, {("Dev-0.hh 1", "p_w"): 5.0, ("Dev-0.hh 2", "p_w"): 1.0})
    with pytest.raises(ValueError, match=r"Dev-0\.hh 1\.soc=.*not a number"):
        rec.record(0, {("Dev-0.hh 1", "p_w"): 5.0, ("Dev-0.hh 1", "soc"): "full"})
    with pytest.raises(ValueError, match=r"Dev-0\.hh 1\.p_w=.*registered as a scalar"):
        rec.record(0, {("Dev-0.hh 1", "p_w"): [5.0, 6.0]})
    with pytest.raises(ValueError, match="shape"):
        rec.record(0, {("Dev-0.hh 1", "p_w"): 5.0, ("Grid-0.grid", "v_a"): [1.0, 1.0]})
    rec.record(0, {("Dev-0.hh 1", "soc"): 0.4})
    with pytest.raises(ValueError, match="does not advance"):
        rec.record(0, {})
    rec.close()
    dev = read_table(tmp_path, "devices")
    assert dev is not None and len(dev) == 1
    assert np.isnan(dev.columns["hh.1.p_w"][0])  # the 5.0 of the rejected steps did not leak into this row


@pytest.mark.parametrize(
    "columns, match",
    [
        ([["a", "x", "t", "c.x"], ["a", "x", "t", "c.y"]], "registered twice"),
        ([["a", "x", "t", "c.x"], ["b", "x", "t", "c.x"]], "appear twice"),
        ([["a", "x", "t", ["t_s", "c.x"]]], "<id>.<attr>"),
        ([["a", "x", "long", "c.x"]], "table name"),
        ([["a", "x", "bad-name", "c.x"]], "table name"),
        ([["a", "x", "t"]], "expected"),
        ([["a", "x", "t", "no_attr"]], "<id>.<attr>"),
        ([["a", "x", "t", []]], "at least one"),
    ],
)
def test_bad_column_specs_are_rejected(tmp_path: Path, columns: list[list[Any]], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Recorder(tmp_path, columns)


def test_flushes_row_groups_with_a_fixed_buffer(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, COLUMNS, flush_rows=7)
    buffers = [t.buf for t in rec._tables.values()]
    for i in range(20):
        rec.record(i * 60, {("Dev-0.hh 1", "p_w"): float(i)})
    assert all(a is b for a, b in zip(buffers, [t.buf for t in rec._tables.values()]))  # never reallocated
    rec.close()
    meta = pq.ParquetFile(tmp_path / "timeseries" / "devices.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7, 7, 6]
    np.testing.assert_array_equal(read_table(tmp_path, "devices").columns["hh.1.p_w"], np.arange(20.0))


def test_same_data_gives_byte_identical_files(tmp_path: Path) -> None:
    _record_three(tmp_path / "a", flush_rows=2).close()
    _record_three(tmp_path / "b", flush_rows=2).close()
    for name in ("devices", "buses", "grid"):
        a = (tmp_path / "a" / "timeseries" / f"{name}.parquet").read_bytes()
        b = (tmp_path / "b" / "timeseries" / f"{name}.parquet").read_bytes()
        assert a == b, name


def test_interrupted_run_is_readable_and_close_is_idempotent(tmp_path: Path) -> None:
    rec = Recorder(tmp_path, COLUMNS, flush_rows=4)
    for i in range(6):  # one flushed row group plus two buffered rows
        rec.record(i * 60, {("Dev-0.hh 1", "p_w"): float(i)})
    close_all("interrupted")  # what a KeyboardInterrupt handler calls
    assert rec.closed and rec.status == "interrupted"
    rec.close("complete")  # mosaik's finalize afterwards: no effect
    assert rec.status == "interrupted"
    with pytest.raises(RuntimeError, match="closed"):
        rec.record(999, {})
    assert len(read_table(tmp_path, "devices")) == 6


def test_context_manager_closes_on_error(tmp_path: Path) -> None:
    with pytest.raises(KeyError), Recorder(tmp_path, COLUMNS) as rec:
        rec.record(0, {("Dev-0.hh 1", "p_w"): 1.0})
        raise KeyError("boom")
    assert rec.status == "failed"
    assert len(read_table(tmp_path, "devices")) == 1


def test_duckdb_tables_and_long_view(tmp_path: Path) -> None:
    _record_three(tmp_path).close()
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM buses").fetchall() == [(3,)]
        rows = con.sql(
            "SELECT \"table\", t_s, id, attr, value FROM long WHERE id = 'node a.11' ORDER BY t_s"
        ).fetchall()
        assert rows == [("buses", 0, "node a.11", "v_a_pu", 0.98)]  # one row per recorded value: NULLs are not
        tables = {r[0] for r in con.sql('SELECT DISTINCT "table" FROM long').fetchall()}
        assert tables == {"devices", "buses", "grid"}
        assert con.sql("SELECT count(*) FROM long").fetchall() == [(5 + 1 + 2,)]  # values at t=0, 60, 120


def test_missing_values_are_null_in_parquet_and_duckdb(tmp_path: Path) -> None:
    """Issue 12: missing values were NaN in the files, so DuckDB's max() of a column was NaN (NaN sorts above all
    numbers). They are NULL now; numpy readers (rundir.read_table, hence KPIs and the report) still see NaN."""
    _record_three(tmp_path).close()
    dev = pq.read_table(tmp_path / "timeseries" / "devices.parquet")
    assert dev.column("hh.1.p_w").to_pylist() == [100.0, None, None] and dev.column("hh.1.p_w").null_count == 2
    buses = pq.read_table(tmp_path / "timeseries" / "buses.parquet")
    assert buses.column("node a.11.v_a_pu").to_pylist() == [0.98, None, None]  # NaN inside a vector too
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        got = con.sql('SELECT max("node a.11.v_a_pu"), min("n3.v_a_pu"), count("n3.v_a_pu"), '
                      'sum(CASE WHEN isnan("n3.v_a_pu") THEN 1 ELSE 0 END) FROM buses').fetchall()
        assert got == [(0.98, 0.97, 2, 0)]
    np.testing.assert_array_equal(read_table(tmp_path, "devices").columns["hh.1.p_w"], [100.0, np.nan, np.nan])


# ---------------------------------------------------------------- through mosaik


class Source(mosaik_api_v3.Simulator):
    """Emits a scalar p_w = time and a 3-element vector v per entity."""

    def __init__(self) -> None:
        model = {"public": True, "params": [], "attrs": ["p_w", "v"]}
        super().__init__({"type": "time-based", "models": {"Src": model}})
        self.eids: list[str] = []
        self.time = 0

    def create(self, num: int, model: str, **params: Any) -> list[dict[str, Any]]:
        new = [f"src_{len(self.eids) + i}" for i in range(num)]
        self.eids += new
        return [{"eid": e, "type": model} for e in new]

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        self.time = time
        return time + 60

    def get_data(self, outputs: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
        return {e: {"p_w": float(self.time), "v": [1.0, 1.01, 0.99]} for e in outputs}


def test_recorder_sim_under_mosaik(tmp_path: Path) -> None:
    world = mosaik.World(
        {"Source": {"python": f"{__name__}:Source"}, "Recorder": {"python": "cosim.recorder:RecorderSim"}}
    )
    src = world.start("Source").Src.create(2)
    rec = world.start("Recorder", out_dir=str(tmp_path), step_size=60, flush_rows=4).Recorder(
        columns=[
            [src[0].full_id, "p_w", "devices", "d0.p_w"],
            [src[1].full_id, "p_w", "devices", "d1.p_w"],
            [src[0].full_id, "v", "buses", ["b1.v_pu", "b2.v_pu", "b3.v_pu"]],
        ]
    )
    world.connect(src[0], rec, "p_w", "v")
    world.connect(src[1], rec, "p_w")
    world.run(until=600, print_progress=False)  # finalize closes the recorder
    dev = read_table(tmp_path, "devices")
    assert dev is not None and dev.t_s.tolist() == list(range(0, 600, 60))
    np.testing.assert_array_equal(dev.columns["d1.p_w"], np.arange(0, 600, 60.0))
    np.testing.assert_array_equal(read_table(tmp_path, "buses").columns["b3.v_pu"], np.full(10, 0.99))
    assert (tmp_path / "results.duckdb").exists()


def test_recorder_sim_rejects_unmapped_inputs(tmp_path: Path) -> None:
    sim = RecorderSim()
    sim.init("Recorder-0", time_resolution=1.0, out_dir=str(tmp_path), step_size=60)
    sim.create(1, "Recorder", columns=[["S-0.a", "p_w", "devices", "a.p_w"]])
    assert sim.step(0, {"Recorder": {"p_w": {"S-0.a": 1.0}}}, 10**9) == 60
    with pytest.raises(ValueError, match=r"S-0\.b\.p_w"):
        sim.step(60, {"Recorder": {"p_w": {"S-0.a": 1.0, "S-0.b": 2.0}}}, 10**9)
    with pytest.raises(ValueError, match="exactly one"):
        sim.create(1, "Recorder", columns=[])
    sim.close("failed")
    sim.finalize()
    assert len(read_table(tmp_path, "devices")) == 1


def test_two_recorders_share_a_run_directory(tmp_path: Path) -> None:
    """The last recorder to close builds a database with every table; a file still being written is skipped."""
    devices = Recorder(tmp_path, [["D-0.a", "p_w", "devices", "a.p_w"]])
    prices = Recorder(tmp_path, [["P-0.p", "imp", "prices", "price.import_eur_per_kwh"]])
    for i in range(4):
        devices.record(i * 900, {("D-0.a", "p_w"): 1.0})
    prices.record(0, {("P-0.p", "imp"): 0.3})
    prices.close()  # devices.parquet has no footer yet
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        assert {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()} == {"prices"}
    devices.close()
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        assert {r[0] for r in con.sql("SELECT table_name FROM duckdb_tables()").fetchall()} == {"prices", "devices"}
        assert con.sql("SELECT count(*) FROM long").fetchall() == [(5,)]
    assert not (tmp_path / "results.duckdb.tmp").exists()


def test_messaging_counters_and_dead_letters_go_into_the_run_directory(tmp_path: Path) -> None:
    """Issue 12: dead letters and decode errors were only WARNING lines; they are tables and events now."""
    from cosim.messaging import DeadLetter
    from cosim.recorder import record_messaging

    _record_three(tmp_path).close()
    (tmp_path / "events.jsonl").write_text('{"t_s": 0, "device": "d", "kind": "available", "message": "x"}\n')
    dead = [DeadLetter("smx", "s4g/a/smx/b/meas/state", b"\xff" * 10, "invalid SenML: not UTF-8", 60.0,
                       "<external>", 1, 10)]
    record_messaging(tmp_path, {"smx": {"decode_errors": 1, "dead_letters": 1}, "data": {"dead_letters": 0}}, dead)
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        assert con.sql("SELECT role, reason, payload, size FROM dead_letters").fetchall() == [
            ("smx", "invalid SenML: not UTF-8", b"\xff" * 10, 10)]
        assert con.sql("SELECT sum(value) FROM messaging_counters WHERE counter = 'dead_letters'").fetchall() == [(1,)]
        assert con.sql("SELECT count(*) FROM devices").fetchall() == [(3,)]  # the time series are still there
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events[-1] == {"t_s": 60.0, "kind": "dead_letter", "role": "smx", "topic": "s4g/a/smx/b/meas/state",
                          "sender": "<external>", "seq": 1, "message": "invalid SenML: not UTF-8"}
    from cosim.recorder import build_duckdb

    build_duckdb(tmp_path)  # a rebuild keeps them
    with duckdb.connect(str(tmp_path / "results.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(*) FROM dead_letters").fetchall() == [(1,)]


def test_order_places_vector_elements_between_scalar_columns(tmp_path: Path) -> None:
    """``order``: a vector gathered from many sources lands in the columns the sources had, in file order."""
    columns = [["Tab-0.t", "p_w", "sites", ["a.p_w", "b.p_w"]], ["Tab-0.t", "v_pu", "sites", ["a.v_pu", "b.v_pu"]]]
    order = {"sites": ["a.p_w", "a.v_pu", "b.p_w", "b.v_pu"]}
    with Recorder(tmp_path, columns, order=order) as rec:
        rec.record(0, {("Tab-0.t", "p_w"): [1.0, 2.0], ("Tab-0.t", "v_pu"): [0.9, 1.1]})
    sites = pq.read_table(tmp_path / "timeseries" / "sites.parquet")
    assert sites.schema.names == ["t_s", *order["sites"]]
    assert [sites.column(c)[0].as_py() for c in order["sites"]] == [1.0, 0.9, 2.0, 1.1]
    with pytest.raises(ValueError, match="does not list exactly"):
        Recorder(tmp_path / "x", columns, order={"sites": ["a.p_w", "a.v_pu", "b.p_w"]})
