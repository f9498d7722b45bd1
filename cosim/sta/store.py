"""The embedded SensorThings store: the entity tables of :mod:`cosim.sta.schema` in an in-memory DuckDB.

``Store.add_run(run_dir)`` loads a finished run directory (``sensorthings/entities.json`` and
``observations.parquet``, with ``meta.json`` and ``run.json`` for the households, locations and broker topics);
``LiveRun`` feeds the same tables from a running co-simulation. Entity ids are integers (what FROST and GOST
clients expect), unique over all runs a server holds; the framework's string ids stay in ``properties``.

Thing properties carry what GESSCon needs to find a site's brokers (as the S4G SensorThings server did)::

    {"run": "...", "scope": "fur_skive", "device": "fronius_4006773", "site": "consumer_4006773",
     "family": "fronius", "dataBroker": {"url": "embedded", "topic": "s4g/fur_skive/data/fronius_4006773/#"},
     "controlBroker": {"url": "embedded", "topic": "s4g/fur_skive/control/fronius_4006773/#",
                       "scheduleTopic": "s4g/fur_skive/control/fronius_4006773/schedule/p_w"}}
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import duckdb

from .schema import TABLES

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"

ST_DIR = "sensorthings"


def _ddl(table: str, types: dict[str, str] | None = None) -> str:
    types = types or {}
    cols = ", ".join(f"{name} {types.get(kind, kind)}" for name, kind in TABLES[table])
    return f"CREATE TABLE {table} ({cols})"


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None)


def _load_yaml_sites(run_dir: Path) -> dict[str, str]:
    """grid load name -> site id, from the scenario copy in the run directory (meta.json lacks grid_load)."""
    path = run_dir / "scenario.yaml"
    if not path.exists():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return {}
    out = {}
    for site in data.get("sites") or []:
        if isinstance(site, dict) and "id" in site:
            out[str(site.get("grid_load") or site["id"])] = str(site["id"])
    return out


class RunContext:
    """What a run directory says about its Things: households, families, brokers."""

    def __init__(self, name: str, meta: dict[str, Any], run: dict[str, Any] | None, grid_loads: dict[str, str]):
        self.name = name
        self.meta = meta
        self.scenario = str(meta.get("scenario", name))
        self.start = utc(str(meta["start"])) if "start" in meta else None
        self.device_site = {d["id"]: d.get("site") for d in meta.get("devices", [])}
        self.device_family = {d["id"]: d.get("family") for d in meta.get("devices", [])}
        self.sites = {s["id"]: s for s in meta.get("sites", [])}
        self.grid_loads = grid_loads
        brokers = ((run or {}).get("messaging") or {}).get("brokers") or {}
        self.brokers = {k: str(v) for k, v in brokers.items()}

    def household(self, device: str) -> str | None:
        if device in self.device_site:
            return cast("str | None", self.device_site[device])
        if device.startswith("load:"):
            name = device[len("load:"):]
            return self.grid_loads.get(name, name if name in self.sites else None)
        return None

    def thing_properties(self, scope: str, device: str) -> dict[str, Any]:
        site = self.household(device)
        props: dict[str, Any] = {"run": self.name, "scenario": self.scenario, "scope": scope, "device": device,
                                 "site": site, "kind": "site" if device.startswith("load:") else "device"}
        if device in self.device_family:
            props["family"] = self.device_family[device]
        props["dataBroker"] = {"url": self.brokers.get("data", ""), "topic": f"s4g/{scope}/data/{device}/#"}
        props["controlBroker"] = {"url": self.brokers.get("control", ""),
                                  "topic": f"s4g/{scope}/control/{device}/#",
                                  "scheduleTopic": f"s4g/{scope}/control/{device}/schedule/p_w"}
        return props


class Store:
    """The entity tables in one DuckDB database; safe for concurrent readers (a cursor each) and one writer."""

    def __init__(self) -> None:
        self.con = duckdb.connect()
        self.con.execute("SET error_on_division_by_zero=false")
        for table in TABLES:
            self.con.execute(_ddl(table))
        self.lock = threading.Lock()  # writers
        self._next = dict.fromkeys(TABLES, 1)
        self.runs: list[str] = []
        self.run_dirs: dict[str, Path] = {}
        # (run, string key) -> integer id, per table
        self.keys: dict[str, dict[tuple[str, str], int]] = {t: {} for t in TABLES}

    def cursor(self) -> duckdb.DuckDBPyConnection:
        cur = self.con.cursor()
        cur.execute("SET error_on_division_by_zero=false")
        return cur

    def _id(self, table: str, run: str, key: str) -> tuple[int, bool]:
        known = self.keys[table].get((run, key))
        if known is not None:
            return known, False
        n = self._next[table]
        self._next[table] = n + 1
        self.keys[table][(run, key)] = n
        return n, True

    # -- entities -------------------------------------------------------------------------------------------
    def add_entities(self, run: str, ctx: RunContext, entities: dict[str, list[dict[str, Any]]]) -> None:
        """Insert the entities of a SensorThings catalogue (entities.json) not seen before; thread-safe."""
        with self.lock:
            self._add_entities(run, ctx, entities)

    def _add_entities(self, run: str, ctx: RunContext, entities: dict[str, list[dict[str, Any]]]) -> None:
        rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES}
        j = json.dumps
        for thing in entities.get("Things", []):
            key = thing["@iot.id"]
            tid, new = self._id("things", run, key)
            if not new:
                continue
            scope, _, device = key.partition("/")
            own = thing.get("properties", {})
            props = {**own, **ctx.thing_properties(scope, device or key)}
            if "kind" in own:  # e.g. the tariff Thing
                props["kind"] = own["kind"]
            rows["things"].append((tid, thing.get("name", key), thing.get("description", ""), j(props)))
            site = props.get("site")
            loc_key = f"site:{site}" if site else f"thing:{key}"
            lid, new_loc = self._id("locations", run, loc_key)
            if new_loc:
                info = ctx.sites.get(site, {}) if site else {}
                feature = {"type": "Feature", "geometry": None,
                           "properties": {k: info.get(k) for k in ("bus", "phase") if info.get(k) is not None}}
                name = site or key
                rows["locations"].append((lid, name, f"connection point of {name}", "application/geo+json",
                                          j(feature), j({"run": run, "site": site})))
                fid, _ = self._id("features", run, loc_key)
                rows["features"].append((fid, name, f"the grid connection of {name}", "application/geo+json",
                                         j(feature), j({"run": run, "site": site})))
            rows["thing_locations"].append((tid, lid))
            hid, _ = self._id("historical_locations", run, key)
            rows["historical_locations"].append((hid, tid, ctx.start))
        for sensor in entities.get("Sensors", []):
            sid, new = self._id("sensors", run, sensor["@iot.id"])
            if new:
                rows["sensors"].append((sid, sensor.get("name", ""), sensor.get("description", ""),
                                        sensor.get("encodingType", "text/plain"), sensor.get("metadata", ""),
                                        j({"run": run, "key": sensor["@iot.id"]})))
        for prop in entities.get("ObservedProperties", []):
            # observed properties are shared by every run: the same quantity is the same property
            pid, new = self._id("observed_properties", "", prop["@iot.id"])
            if new:
                rows["observed_properties"].append((pid, prop.get("name", ""), prop.get("definition", ""),
                                                    prop.get("description", ""), j({"key": prop["@iot.id"]})))
        for ds in entities.get("Datastreams", []):
            key = ds["@iot.id"]
            did, new = self._id("datastreams", run, key)
            if not new:
                continue
            thing_key = ds["Thing"]["@iot.id"]
            scope, _, rest = key.partition("/")
            device, _, quantity = rest.rpartition("/")
            props = {"run": run, "key": key, "quantity": quantity, "senmlName": key,
                     "topic": (ds.get("properties") or {}).get("topic") or f"s4g/{scope}/data/{device}/#"}
            rows["datastreams"].append((
                did, ds.get("name", key), ds.get("description", ""), j(ds.get("unitOfMeasurement", {})),
                ds.get("observationType", ""), None, None, None, None, None, j(props),
                self.keys["things"][(run, thing_key)], self.keys["sensors"][(run, ds["Sensor"]["@iot.id"])],
                self.keys["observed_properties"][("", ds["ObservedProperty"]["@iot.id"])]))
        for table, items in rows.items():
            if items:
                marks = ", ".join("?" * len(items[0]))
                self.con.executemany(f"INSERT INTO {table} VALUES ({marks})", items)

    def feature_of(self, run: str, thing_key: str) -> int:
        """The FeatureOfInterest id of a Thing's observations (its household's grid connection)."""
        tid = self.keys["things"][(run, thing_key)]
        site = self.con.execute("SELECT properties->>'site' FROM things WHERE id = ?", [tid]).fetchone()
        loc_key = f"site:{site[0]}" if site and site[0] else f"thing:{thing_key}"
        return self.keys["features"][(run, loc_key)]

    # -- observations ---------------------------------------------------------------------------------------
    def add_run(self, run_dir: str | Path, name: str | None = None) -> str:
        """Load a finished run directory; returns the run's name (unique on this server)."""
        run_dir = Path(run_dir)
        st = run_dir / ST_DIR
        entities_path, obs_path = st / "entities.json", st / "observations.parquet"
        if not entities_path.exists() or not obs_path.exists():
            raise FileNotFoundError(f"{run_dir}: no {ST_DIR}/entities.json and observations.parquet (a run whose "
                                    "scenario has telemetry: writes them)")
        meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
        run_json = run_dir / "run.json"
        run_info = json.loads(run_json.read_text(encoding="utf-8")) if run_json.exists() else None
        base = name or run_dir.name
        run, k = base, 2
        while run in self.runs:
            run, k = f"{base}-{k}", k + 1
        ctx = RunContext(run, meta, run_info, _load_yaml_sites(run_dir))
        entities = json.loads(entities_path.read_text(encoding="utf-8"))
        with self.lock:
            self.runs.append(run)
            self.run_dirs[run] = run_dir
            self._add_entities(run, ctx, entities)
            self._load_observations(run, entities, obs_path)
        self._add_tariff(run, ctx, run_dir)
        return run

    def _add_tariff(self, run: str, ctx: RunContext, run_dir: Path) -> None:
        """The run's energy prices as the Datastreams of a ``tariff`` Thing (one Observation per price change),
        so the household pages can price energy from the API alone."""
        import pyarrow.parquet as pq

        path = run_dir / "timeseries" / "prices.parquet"
        if not path.exists() or ctx.start is None:
            return
        table = pq.read_table(path).to_pydict()
        scope = next((k[1].split("/", 1)[0] for k in self.keys["things"] if k[0] == run), ctx.scenario)
        cols = {"import": "price.import_eur_per_kwh", "export": "price.export_eur_per_kwh"}
        thing = f"{scope}/tariff"
        entities: dict[str, list[dict[str, Any]]] = {
            "Things": [{"@iot.id": thing, "name": thing, "description": "energy prices of the run",
                        "properties": {"kind": "tariff"}}],
            "Sensors": [{"@iot.id": thing, "name": "tariff", "description": "the scenario's price profile"}],
            "ObservedProperties": [{"@iot.id": "EnergyPrice", "name": "EnergyPrice",
                                    "definition": "urn:s4g:quantity:EnergyPrice", "description": "energy price"}],
            "Datastreams": [{"@iot.id": f"{thing}/price_{k}_eur_kwh", "name": f"{thing}/price_{k}_eur_kwh",
                             "description": f"{k} price", "observationType": OM_MEASUREMENT,
                             "unitOfMeasurement": {"name": "euro per kilowatt-hour", "symbol": "EUR/kWh"},
                             "Thing": {"@iot.id": thing}, "Sensor": {"@iot.id": thing},
                             "ObservedProperty": {"@iot.id": "EnergyPrice"}} for k, c in cols.items() if c in table],
        }
        self.add_entities(run, ctx, entities)
        fid = self.feature_of(run, thing)
        rows = []
        for kind, col in cols.items():
            if col not in table:
                continue
            did = self.keys["datastreams"][(run, f"{thing}/price_{kind}_eur_kwh")]
            last = None
            for t_s, value in zip(table["t_s"], table[col], strict=True):
                if value is None or value == last:
                    continue
                last = value
                t = ctx.start + timedelta(seconds=int(t_s))
                rows.append((t, t, float(value), None, json.dumps({"t_s": t_s}), did, fid))
        self.add_observations(rows)

    def _map_table(self, run: str, entities: dict[str, list[dict[str, Any]]]) -> list[tuple[str, int, int]]:
        out = []
        for ds in entities.get("Datastreams", []):
            out.append((ds["@iot.id"], self.keys["datastreams"][(run, ds["@iot.id"])],
                        self.feature_of(run, ds["Thing"]["@iot.id"])))
        return out

    def _load_observations(self, run: str, entities: dict[str, list[dict[str, Any]]], path: Path) -> None:
        con = self.con
        con.execute("CREATE OR REPLACE TEMP TABLE ds_map (key VARCHAR, ds_id BIGINT, feature_id BIGINT)")
        mapping = self._map_table(run, entities)
        if mapping:
            con.executemany("INSERT INTO ds_map VALUES (?, ?, ?)", mapping)
        offset = self._next["observations"] - 1
        # ids follow phenomenon time, so an id order is a time order (paging and zone maps work together)
        con.execute(f"""
            INSERT INTO observations
            SELECT {offset} + row_number() OVER (ORDER BY o.phenomenon_time, m.ds_id, o.seq) AS id,
                   CAST(strptime(o.phenomenon_time, ['%Y-%m-%dT%H:%M:%S.%gZ', '%Y-%m-%dT%H:%M:%SZ'])
                        AS TIMESTAMP),
                   CAST(strptime(o.result_time, ['%Y-%m-%dT%H:%M:%S.%gZ', '%Y-%m-%dT%H:%M:%SZ']) AS TIMESTAMP),
                   o.result, o.result_text,
                   json_object('t_s', o.t_s, 'sender', o.sender, 'seq', o.seq),
                   m.ds_id, m.feature_id
            FROM read_parquet($path) o JOIN ds_map m ON m.key = o.datastream
            ORDER BY id""", {"path": str(path)})
        n = con.execute("SELECT coalesce(max(id), 0) FROM observations").fetchone()
        self._next["observations"] = int(n[0] if n else 0) + 1
        self.refresh_intervals([m[1] for m in mapping])

    def add_observations(self, rows: Iterable[tuple[Any, ...]]) -> list[int]:
        """Append (phenomenon_time, result_time, result, result_text, parameters_json, datastream_id, feature_id)
        rows; returns their new ids."""
        with self.lock:
            items, ids = [], []
            for row in rows:
                oid = self._next["observations"]
                self._next["observations"] = oid + 1
                items.append((oid, *row))
                ids.append(oid)
            if items:
                self.con.executemany("INSERT INTO observations VALUES (?, ?, ?, ?, ?, ?, ?, ?)", items)
                self.refresh_intervals(sorted({r[6] for r in items}))
            return ids

    def refresh_intervals(self, ds_ids: list[int]) -> None:
        """Datastream phenomenonTime/resultTime: the span of its observations."""
        if not ds_ids:
            return
        self.con.execute("""
            UPDATE datastreams SET phenomenon_start = s.p0, phenomenon_end = s.p1, result_start = s.r0,
                                   result_end = s.r1
            FROM (SELECT datastream_id, min(phenomenon_time) p0, max(phenomenon_time) p1, min(result_time) r0,
                         max(result_time) r1
                  FROM observations WHERE list_contains($ids, datastream_id) GROUP BY datastream_id) s
            WHERE datastreams.id = s.datastream_id""", {"ids": ds_ids})
