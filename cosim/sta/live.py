"""The live run over the SensorThings API: the scenario section ``sensorthings:`` (:mod:`cosim.sta.config`).

``start_live(scenario, run_dir)`` (called by :func:`cosim.run.run`) starts the HTTP server on an empty store and
registers a sink with the run's SensorThings recorder (``cosim.messaging.sensorthings.LIVE_SINKS``); each step the
recorder hands over its new Observations, which get ids in the store, are published on the MQTT extension's
topics (``v1.1/Datastreams(id)/Observations`` and ``v1.1/Observations``, the Observation's JSON as the API
would answer it) and, with ``dwh:``, copied into PostgreSQL. ``close()`` stops all of it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

from cosim.messaging import sensorthings as st_mod
from cosim.messaging.errors import BrokerUnavailable

from .config import StaSpec
from .engine import VERSION, Engine
from .store import RunContext, Store, _load_yaml_sites, utc

log = logging.getLogger(__name__)


class LiveRun:
    def __init__(self, spec: StaSpec, run_dir: Path, name: str) -> None:
        self.spec = spec
        self.run_dir = Path(run_dir).resolve()
        self.name = name
        self.store = Store()
        self.store.runs.append(name)
        self.engine = Engine(self.store)
        self.ctx: RunContext | None = None
        self._n_ds = -1
        self.published = 0
        self.server: Any = None
        self.mqtt: Any = None
        self.warehouse: Any = None
        self._wh_ds: dict[str, tuple[int, int]] = {}
        self._features: dict[str, int] = {}
        self.base = ""

    def start(self) -> None:
        if self.spec.mqtt:
            from cosim.messaging.backends.mqtt import MqttBackend
            from cosim.messaging.config import parse_broker_url

            address = parse_broker_url(self.spec.mqtt)
            self.mqtt = MqttBackend(address, subscribe=f"{VERSION}/Observations", client_id=f"s4g-sta-{self.name}")
            self.mqtt.open(lambda *a: None, lambda mid, why: log.warning("MQTT extension: refused %s: %s", mid, why))
            endpoint = f"{'mqtts' if address.tls else 'mqtt'}://{address.host}:{address.port}"
            self.engine.mqtt_settings = lambda: {  # type: ignore[method-assign]
                "http://www.opengis.net/spec/iot_sensing/1.1/req/create-observations-via-mqtt/observations-creation":
                    {"endpoints": [endpoint]}}
        if self.spec.dwh:
            from cosim.dwh.postgres import Warehouse

            self.warehouse = Warehouse(self.spec.dwh)
        if self.spec.serve is not None:
            from cosim.gui.app import create_gui_app

            from .server import HttpServer

            self.server = HttpServer(create_gui_app(self.store, engine=self.engine), self.spec.serve.host,
                                     self.spec.serve.port)
            url = self.server.start()
            self.base = f"{url}/{VERSION}"
            log.warning("SensorThings API of the live run: %s (GUIs: %s/gui/home)", self.base, url)
        st_mod.LIVE_SINKS[str(self.run_dir)] = self.on_step

    def _context(self) -> RunContext:
        if self.ctx is None:
            meta = json.loads((self.run_dir / "meta.json").read_text(encoding="utf-8"))
            self.ctx = RunContext(self.name, meta, None, _load_yaml_sites(self.run_dir))
        return self.ctx

    def on_step(self, catalog: st_mod.SensorThingsCatalog, new: list[tuple[st_mod.Observation, str, int]]) -> None:
        ctx = self._context()
        entities = None
        if len(catalog.datastreams) != self._n_ds:
            entities = catalog.entities()
            self.store.add_entities(self.name, ctx, entities)
            self._n_ds = len(catalog.datastreams)
        rows = []
        keys = self.store.keys
        for obs, sender, seq in new:
            ds_key = obs.Datastream.iot_id
            did = keys["datastreams"][(self.name, ds_key)]
            thing_key = ds_key.rsplit("/", 1)[0]
            fid = self._features.get(thing_key)
            if fid is None:
                fid = self._features[thing_key] = self.store.feature_of(self.name, thing_key)
            result = obs.result
            numeric = isinstance(result, (int, float)) and not isinstance(result, bool)
            params = json.dumps({"t_s": obs.parameters.get("t_s"), "sender": sender, "seq": seq})
            rows.append((utc(obs.phenomenonTime), utc(obs.resultTime), float(result) if numeric else None,  # type: ignore[arg-type]
                         None if numeric else json.dumps(result), params, did, fid))
        ids = self.store.add_observations(rows)
        if self.mqtt is not None:
            self._publish(ids, rows)
        if self.warehouse is not None:
            self._to_warehouse(catalog, entities, new, rows)

    def _publish(self, ids: list[int], rows: list[tuple[Any, ...]]) -> None:
        base = self.base or f"http://127.0.0.1/{VERSION}"
        for oid, row in zip(ids, rows, strict=True):
            entity = self.engine.render_observation(
                {"id": oid, "phenomenon_time": row[0], "result_time": row[1], "result": row[2], "result_text": row[3],
                 "parameters": row[4], "datastream_id": row[5], "feature_id": row[6]}, base)
            payload = json.dumps(entity).encode()
            try:
                self.mqtt.send(f"{VERSION}/Datastreams({row[5]})/Observations", payload, 1)
                self.mqtt.send(f"{VERSION}/Observations", payload, 1)
                self.published += 1
            except BrokerUnavailable as exc:  # the API keeps serving; subscribers miss this one
                log.warning("MQTT extension: %s", exc)

    def _to_warehouse(self, catalog: st_mod.SensorThingsCatalog, entities: Any,
                      new: list[tuple[st_mod.Observation, str, int]], rows: list[tuple[Any, ...]]) -> None:
        wh = self.warehouse
        if entities is not None or not self._wh_ds:
            ctx = self._context()
            with wh.con.transaction():
                rid = wh.run_id(self.name, ctx.scenario, None, ctx.meta)

                def props(key: str) -> dict[str, Any]:
                    scope, _, device = key.partition("/")
                    return ctx.thing_properties(scope, device or key)

                self._wh_ds = wh.add_entities(rid, entities or catalog.entities(), props)
        out = []
        for (obs, _, _), row in zip(new, rows, strict=True):
            did, fid = self._wh_ds[obs.Datastream.iot_id]
            out.append((did, _aware(row[0]), _aware(row[1]), row[2], row[3], row[4], fid))
        wh.copy_observations(out)

    def close(self) -> None:
        st_mod.LIVE_SINKS.pop(str(self.run_dir), None)
        if self.server is not None:
            self.server.close()
        if self.mqtt is not None:
            self.mqtt.close()
        if self.warehouse is not None:
            self.warehouse.close()


def _aware(t: datetime) -> str:
    return t.isoformat() + "+00:00"


def start_live(scenario: Any, run_dir: Path) -> LiveRun | None:
    """Start the live services the scenario asks for (section ``sensorthings:``); None when it asks for none."""
    spec = getattr(scenario, "sensorthings", None)
    if spec is None:
        return None
    live = LiveRun(spec, run_dir, str(getattr(scenario, "name", Path(run_dir).name)))
    try:
        live.start()
    except BaseException:
        live.close()
        raise
    return live


__all__ = ["LiveRun", "start_live", "utc"]
