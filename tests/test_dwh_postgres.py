"""The PostgreSQL warehouse: a finished run loads with COPY into tables that follow the SensorThings entities,
loading again adds nothing (observations unique by datastream and phenomenon time), the documented queries
answer, retention deletes what is older than its setting; ``s4g dwh load`` does the same from the command line.
Each test creates and drops its own database; skipped with the reason only when no server answers."""

from __future__ import annotations

from datetime import timedelta

import duckdb
import pytest

from cosim.dwh.postgres import Warehouse
from s4g.cli import main
from tests.sta_runs import pg_database, pilot_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return pilot_run(tmp_path_factory.getbasetemp())


@pytest.fixture
def db():
    with pg_database() as url:
        yield url


def test_a_run_loads_once_and_matches_its_parquet_file(run_dir, db):
    parquet = f"'{run_dir}/sensorthings/observations.parquet'"
    ((n_obs, n_ds, total),) = duckdb.sql(
        f"SELECT count(*), count(DISTINCT datastream), sum(result) FROM {parquet}").fetchall()
    with Warehouse(db) as wh:
        name, inserted = wh.load_run(run_dir)
        assert inserted == n_obs == wh.count(name)
        assert wh.load_run(run_dir) == (name, 0)  # idempotent
        con = wh.con
        assert con.execute("SELECT count(*) FROM datastreams").fetchone()[0] == n_ds
        assert con.execute("SELECT sum(result) FROM observations").fetchone()[0] == pytest.approx(total)
        # a documented query: hourly mean PCC power per household (docs/sensorthings.md)
        rows = con.execute("""
            SELECT t.properties->>'site' AS site, date_trunc('hour', o.phenomenon_time) AS hour, avg(o.result)
            FROM observations o JOIN datastreams d ON d.id = o.datastream_id JOIN things t ON t.id = d.thing_id
            WHERE t.properties->>'kind' = 'site' AND d.properties->>'quantity' = 'p_w'
            GROUP BY 1, 2 ORDER BY 1, 2""").fetchall()
        assert rows and {r[0] for r in rows} >= {"consumer_4006773", "consumer_4018215"}
        expect = duckdb.sql(f"SELECT avg(result) FROM {parquet} WHERE "
                            "datastream = 'fur_skive/load:consumer_4006773/p_w'"
                            " AND phenomenon_time < '2019-06-15T09:00:00Z'").fetchall()[0][0]
        got = next(r[2] for r in rows if r[0] == "consumer_4006773")
        assert got == pytest.approx(expect)
        # the broker topics are in the warehouse too
        topic = con.execute("SELECT properties->'dataBroker'->>'topic' FROM things WHERE key = %s",
                            ("fur_skive/fronius_4006773",)).fetchone()[0]
        assert topic == "s4g/fur_skive/data/fronius_4006773/#"
        # time-range queries have their indexes
        idx = {r[0] for r in con.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'observations'")}
        assert "observations_time_brin" in idx and any("phenomenon_time" in i for i in idx)
        # a second run under another name is a second set of entities
        assert wh.load_run(run_dir, name="again")[1] == n_obs and wh.count() == 2 * n_obs


def test_retention_keeps_only_the_last_days(run_dir, db):
    with Warehouse(db) as wh:
        wh.load_run(run_dir)
        newest = wh.con.execute("SELECT max(phenomenon_time) FROM observations").fetchone()[0]
        expect = wh.con.execute("SELECT count(*) FROM observations WHERE phenomenon_time < %s",
                                (newest - timedelta(hours=1),)).fetchone()[0]
        assert wh.apply_retention() == 0  # 0 days: keep everything
        wh.set_retention(1 / 24)
        assert expect > 0 and wh.apply_retention() == expect
        oldest = wh.con.execute("SELECT min(phenomenon_time) FROM observations").fetchone()[0]
        assert oldest >= newest - timedelta(hours=1)


def test_dwh_load_command(run_dir, db, capsys):
    assert main(["dwh", "load", str(run_dir), "--url", db]) == 0
    assert "observations" in capsys.readouterr().out
    assert main(["dwh", "load", str(run_dir.parent / "nothing-here"), "--url", db]) == 2
    assert main(["dwh", "load", str(run_dir), "--url", "postgresql://postgres@127.0.0.1:1/none"]) == 2
