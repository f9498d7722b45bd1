"""The shared data warehouse on PostgreSQL: SensorThings entities of many runs and sites, bulk-loaded with COPY.

Schema (``SCHEMA_SQL``; docs/sensorthings.md lists the queries): one table per SensorThings entity set, each row
tagged with the run (or live stream) it belongs to and its framework key (``fur_skive/fronius_1/p_w``), so the
same key in two runs is two entities. Observations are unique by (datastream, phenomenon time): loading a run
twice, or a wrapper re-sending after an outage, never duplicates a row (``ON CONFLICT DO NOTHING`` from a COPY
staging table). Time-range queries use a BRIN index on ``phenomenon_time`` (cheap on append-mostly data) and the
(datastream, phenomenon_time) unique index. ``retention_days`` in ``dwh_settings`` bounds how long observations
are kept (``Warehouse.apply_retention``).

Address: ``postgresql://[user@]host[:port]/dbname`` from the caller, else ``$S4G_DWH_URL``, else
``postgresql://postgres@127.0.0.1:5432/s4g``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/s4g"
ENV = "S4G_DWH_URL"

SCHEMA_SQL = """
CREATE TABLE IF NOT EXISTS runs (
    id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, scenario TEXT, start TIMESTAMPTZ,
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT now(), meta JSONB);
CREATE TABLE IF NOT EXISTS things (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES runs ON DELETE CASCADE, key TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', properties JSONB, UNIQUE (run_id, key));
CREATE TABLE IF NOT EXISTS locations (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES runs ON DELETE CASCADE, key TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', encoding_type TEXT NOT NULL,
    location JSONB, properties JSONB, UNIQUE (run_id, key));
CREATE TABLE IF NOT EXISTS thing_locations (
    thing_id BIGINT REFERENCES things ON DELETE CASCADE, location_id BIGINT REFERENCES locations ON DELETE CASCADE,
    PRIMARY KEY (thing_id, location_id));
CREATE TABLE IF NOT EXISTS sensors (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES runs ON DELETE CASCADE, key TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', encoding_type TEXT NOT NULL, metadata TEXT,
    UNIQUE (run_id, key));
CREATE TABLE IF NOT EXISTS observed_properties (
    id BIGSERIAL PRIMARY KEY, key TEXT UNIQUE NOT NULL, name TEXT NOT NULL, definition TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS datastreams (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES runs ON DELETE CASCADE, key TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', unit_of_measurement JSONB NOT NULL,
    observation_type TEXT NOT NULL, properties JSONB,
    thing_id BIGINT NOT NULL REFERENCES things ON DELETE CASCADE, sensor_id BIGINT REFERENCES sensors,
    observed_property_id BIGINT REFERENCES observed_properties, UNIQUE (run_id, key));
CREATE TABLE IF NOT EXISTS features (
    id BIGSERIAL PRIMARY KEY, run_id BIGINT NOT NULL REFERENCES runs ON DELETE CASCADE, key TEXT NOT NULL,
    name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '', encoding_type TEXT NOT NULL, feature JSONB,
    UNIQUE (run_id, key));
CREATE TABLE IF NOT EXISTS observations (
    id BIGSERIAL PRIMARY KEY,
    datastream_id BIGINT NOT NULL REFERENCES datastreams ON DELETE CASCADE,
    phenomenon_time TIMESTAMPTZ NOT NULL, result_time TIMESTAMPTZ,
    result DOUBLE PRECISION, result_text TEXT, parameters JSONB, feature_id BIGINT REFERENCES features,
    UNIQUE (datastream_id, phenomenon_time));
CREATE INDEX IF NOT EXISTS observations_time_brin ON observations USING brin (phenomenon_time);
CREATE TABLE IF NOT EXISTS dwh_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO dwh_settings VALUES ('retention_days', '0') ON CONFLICT DO NOTHING;
"""

_STAGE = """CREATE TEMP TABLE IF NOT EXISTS obs_stage (
    datastream_id BIGINT, phenomenon_time TIMESTAMPTZ, result_time TIMESTAMPTZ, result DOUBLE PRECISION,
    result_text TEXT, parameters JSONB, feature_id BIGINT) ON COMMIT DELETE ROWS"""


class WarehouseUnavailable(RuntimeError):
    """No PostgreSQL server answers at the address (or it refused us)."""


def dwh_url(url: str | None = None) -> str:
    return url or os.environ.get(ENV) or DEFAULT_URL


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Warehouse:
    """One connection to the warehouse database; creates the schema on first use."""

    def __init__(self, url: str | None = None, *, connect_timeout_s: float = 5.0) -> None:
        import psycopg

        self.url = dwh_url(url)
        try:
            self.con = psycopg.connect(self.url, connect_timeout=max(1, int(connect_timeout_s)), autocommit=False)
        except psycopg.OperationalError as exc:
            raise WarehouseUnavailable(f"{_label(self.url)}: {str(exc).strip().splitlines()[0]}") from None
        with self.con.transaction():
            self.con.execute(SCHEMA_SQL)
        self._ids: dict[tuple[str, int, str], int] = {}  # (table, run id, key) -> id

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- entities -------------------------------------------------------------------------------------------
    def run_id(self, name: str, scenario: str | None = None, start: datetime | None = None,
               meta: dict[str, Any] | None = None) -> int:
        row = self.con.execute(
            "INSERT INTO runs (name, scenario, start, meta) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            (name, scenario, start, json.dumps(meta) if meta is not None else None)).fetchone()
        assert row is not None
        return int(row[0])

    def _upsert(self, table: str, run_id: int | None, key: str, cols: dict[str, Any]) -> int:
        cache = (table, run_id or 0, key)
        if cache in self._ids:
            return self._ids[cache]
        names = (["run_id"] if run_id is not None else []) + ["key", *cols]
        values = ([run_id] if run_id is not None else []) + [key, *cols.values()]
        conflict = "(run_id, key)" if run_id is not None else "(key)"
        row = self.con.execute(
            f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join(['%s'] * len(names))}) "
            f"ON CONFLICT {conflict} DO UPDATE SET key = EXCLUDED.key RETURNING id", values).fetchone()
        assert row is not None
        self._ids[cache] = int(row[0])
        return int(row[0])

    def add_entities(self, run_id: int, entities: dict[str, list[dict[str, Any]]],
                     thing_props: Any = None) -> dict[str, tuple[int, int]]:
        """Insert a catalogue (entities.json shape); returns datastream key -> (datastream id, feature id)."""
        j = json.dumps
        things: dict[str, int] = {}
        features: dict[str, int] = {}
        for thing in entities.get("Things", []):
            key = thing["@iot.id"]
            props = dict(thing.get("properties") or {})
            if thing_props is not None:
                props.update(thing_props(key))
            tid = self._upsert("things", run_id, key, {"name": thing.get("name", key),
                                                       "description": thing.get("description", ""),
                                                       "properties": j(props)})
            things[key] = tid
            site = props.get("site")
            loc_key = f"site:{site}" if site else f"thing:{key}"
            feature = j({"type": "Feature", "geometry": None, "properties": {"site": site}})
            lid = self._upsert("locations", run_id, loc_key, {"name": site or key, "description": "",
                                                              "encoding_type": "application/geo+json",
                                                              "location": feature, "properties": None})
            self.con.execute("INSERT INTO thing_locations VALUES (%s, %s) ON CONFLICT DO NOTHING", (tid, lid))
            features[key] = self._upsert("features", run_id, loc_key, {
                "name": site or key, "description": "", "encoding_type": "application/geo+json", "feature": feature})
        sensors = {s["@iot.id"]: self._upsert("sensors", run_id, s["@iot.id"], {
            "name": s.get("name", ""), "description": s.get("description", ""),
            "encoding_type": s.get("encodingType", "text/plain"), "metadata": s.get("metadata", "")})
            for s in entities.get("Sensors", [])}
        props = {p["@iot.id"]: self._upsert("observed_properties", None, p["@iot.id"], {
            "name": p.get("name", ""), "definition": p.get("definition", ""), "description": p.get("description", "")})
            for p in entities.get("ObservedProperties", [])}
        out = {}
        for ds in entities.get("Datastreams", []):
            thing_key = ds["Thing"]["@iot.id"]
            did = self._upsert("datastreams", run_id, ds["@iot.id"], {
                "name": ds.get("name", ds["@iot.id"]), "description": ds.get("description", ""),
                "unit_of_measurement": j(ds.get("unitOfMeasurement", {})),
                "observation_type": ds.get("observationType", ""),
                "properties": j({"quantity": ds["@iot.id"].rsplit("/", 1)[-1], **(ds.get("properties") or {})}),
                "thing_id": things[thing_key], "sensor_id": sensors.get(ds["Sensor"]["@iot.id"]),
                "observed_property_id": props.get(ds["ObservedProperty"]["@iot.id"])})
            out[ds["@iot.id"]] = (did, features[thing_key])
        return out

    # -- observations ---------------------------------------------------------------------------------------
    def copy_observations(self, rows: Iterable[Sequence[Any]]) -> int:
        """Bulk insert (datastream_id, phenomenon_time, result_time, result, result_text, parameters_json,
        feature_id) rows with COPY; rows already present (same datastream and phenomenon time) are skipped.
        Returns the number of rows inserted. One transaction: all or nothing."""
        with self.con.transaction(), self.con.cursor() as cur:
            cur.execute(_STAGE)
            with cur.copy("COPY obs_stage FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cur.execute("INSERT INTO observations (datastream_id, phenomenon_time, result_time, result, result_text, "
                        "parameters, feature_id) SELECT DISTINCT ON (datastream_id, phenomenon_time) * FROM obs_stage "
                        "ON CONFLICT (datastream_id, phenomenon_time) DO NOTHING")
            return cur.rowcount

    def load_run(self, run_dir: str | Path, name: str | None = None, batch_rows: int = 100_000) -> tuple[str, int]:
        """Load a finished run directory; returns (run name, observations inserted). Loading again adds nothing."""
        import pyarrow.parquet as pq

        from cosim.sta.store import RunContext, _load_yaml_sites

        run_dir = Path(run_dir)
        st = run_dir / "sensorthings"
        if not (st / "entities.json").exists() or not (st / "observations.parquet").exists():
            raise FileNotFoundError(f"{run_dir}: no sensorthings/entities.json and observations.parquet")
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
        run_json = run_dir / "run.json"
        info = json.loads(run_json.read_text(encoding="utf-8")) if run_json.exists() else None
        name = name or run_dir.name
        ctx = RunContext(name, meta, info, _load_yaml_sites(run_dir))
        entities = json.loads((st / "entities.json").read_text(encoding="utf-8"))
        with self.con.transaction():
            rid = self.run_id(name, meta.get("scenario"), _utc(meta["start"]) if "start" in meta else None, meta)

            def props(key: str) -> dict[str, Any]:
                scope, _, device = key.partition("/")
                return ctx.thing_properties(scope, device or key)

            ds = self.add_entities(rid, entities, props)
        inserted = 0
        pf = pq.ParquetFile(st / "observations.parquet")
        for batch in pf.iter_batches(batch_size=batch_rows, columns=[
                "phenomenon_time", "result_time", "datastream", "result", "result_text", "t_s", "sender", "seq"]):
            cols = batch.to_pydict()
            rows = []
            for i in range(batch.num_rows):
                did, fid = ds[cols["datastream"][i]]
                params = json.dumps({"t_s": cols["t_s"][i], "sender": cols["sender"][i], "seq": cols["seq"][i]})
                rows.append((did, _utc(cols["phenomenon_time"][i]), _utc(cols["result_time"][i]), cols["result"][i],
                             cols["result_text"][i], params, fid))
            inserted += self.copy_observations(rows)
        return name, inserted

    # -- retention ------------------------------------------------------------------------------------------
    def set_retention(self, days: float) -> None:
        with self.con.transaction():
            self.con.execute("UPDATE dwh_settings SET value = %s WHERE key = 'retention_days'", (str(float(days)),))

    def apply_retention(self, now: datetime | None = None) -> int:
        """Delete observations older than ``retention_days`` before ``now`` (default: the newest observation, so
        simulated years keep their data); 0 days keeps everything. Returns the rows deleted."""
        with self.con.transaction():
            row = self.con.execute("SELECT value FROM dwh_settings WHERE key = 'retention_days'").fetchone()
            days = float(row[0]) if row else 0.0
            if days <= 0:
                return 0
            if now is None:
                newest = self.con.execute("SELECT max(phenomenon_time) FROM observations").fetchone()
                if newest is None or newest[0] is None:
                    return 0
                now = newest[0]
            cur = self.con.execute("DELETE FROM observations WHERE phenomenon_time < %s",
                                   (now - timedelta(days=days),))
            return cur.rowcount

    def count(self, run: str | None = None) -> int:
        if run is None:
            row = self.con.execute("SELECT count(*) FROM observations").fetchone()
        else:
            row = self.con.execute("SELECT count(*) FROM observations o JOIN datastreams d ON d.id = o.datastream_id "
                                   "JOIN runs r ON r.id = d.run_id WHERE r.name = %s", (run,)).fetchone()
        return int(row[0]) if row else 0


def _label(url: str) -> str:
    """The address without a password (for messages)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"postgresql://{host}:{parts.port or 5432}{parts.path}"


def server_answers(url: str | None = None) -> str | None:
    """None when a PostgreSQL server answers at the address's host (connecting to its ``postgres`` database),
    else the reason it does not."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(dwh_url(url))
    info["dbname"] = "postgres"
    try:
        psycopg.connect(make_conninfo("", **info), connect_timeout=3).close()
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0]
    return None
