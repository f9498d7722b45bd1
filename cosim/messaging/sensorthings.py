"""OGC SensorThings API (v1.0, Sensing part) entities as S4G used them, and the SenML -> Observation mapping.

S4G's data warehouse described field data with SensorThings: a *Thing* per device (with its *Location*), a
*Datastream* per (device, quantity) with a *Sensor* and an *ObservedProperty*, and one *Observation* per
measured value. Here a SenML record on a Data Broker topic ``s4g/{site}/data/{device}/{quantity}`` becomes an
Observation of the Datastream ``{site}/{device}/{quantity}`` of the Thing ``{site}/{device}``.

``SensorThingsRecorder`` subscribes to the Data Broker on a ``MessageBus`` and writes the run directory's
``sensorthings/`` folder: ``entities.json`` (Things, Locations, Sensors, ObservedProperties, Datastreams) and
``observations.parquet`` (one row per Observation) for the DWH.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, UTC
from pathlib import Path
from typing import TYPE_CHECKING, Any

from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from .senml import Record
from .topics import TopicInfo, parse_topic

if TYPE_CHECKING:
    from collections.abc import Callable

    from .bus import Message, MessageBus

# run directory -> a callable that sees each step's new Observations (the live SensorThings server, cosim.sta.live)
LIVE_SINKS: dict[str, Callable[[SensorThingsCatalog, list[tuple[Observation, str, int]]], None]] = {}

OM_MEASUREMENT = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Measurement"
OM_TRUTH = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_TruthObservation"
OM_CATEGORY = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_CategoryObservation"
OM_OBSERVATION = "http://www.opengis.net/def/observationType/OGC-OM/2.0/OM_Observation"
GEOJSON = "application/vnd.geo+json"
SENML_UNITS_URL = "https://www.iana.org/assignments/senml/senml.xhtml#senml-units"
# Foreign publishers on the Data Broker create Datastreams by naming records: a flood of new names must not grow
# the catalogue without bound. A message that would pass this many Datastreams is rejected (counted by the bus).
MAX_DATASTREAMS = 10_000

# framework quantity names -> (observed property, description); unknown quantities keep their own name
QUANTITIES: dict[str, tuple[str, str]] = {
    "p_w": ("ActivePower", "active power, load convention (+ = drawn from the grid connection)"),
    "q_var": ("ReactivePower", "reactive power, load convention"),
    "e_wh": ("Energy", "energy"),
    "soc": ("StateOfCharge", "battery state of charge, 0..1"),
    "v_v": ("Voltage", "RMS voltage"),
    "v_pu": ("VoltagePerUnit", "voltage in per unit of nominal"),
    "i_a": ("Current", "RMS current"),
    "price_eur_kwh": ("EnergyPrice", "energy price"),
}
UNIT_NAMES: dict[str, str] = {
    "W": "watt", "kW": "kilowatt", "var": "volt-ampere reactive", "kvar": "kilovar", "VA": "volt-ampere",
    "Wh": "watt-hour", "kWh": "kilowatt-hour", "J": "joule", "V": "volt", "A": "ampere", "/": "ratio",
    "%": "percent", "Cel": "degrees Celsius", "K": "kelvin", "Hz": "hertz", "EUR/kWh": "euro per kilowatt-hour",
    "EUR/MWh": "euro per megawatt-hour", "EUR": "euro", "pu": "per unit",
}


class _Entity(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    iot_id: str = Field(alias="@iot.id")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True)


class Ref(BaseModel):
    """A link to an existing entity, as in SensorThings POST bodies: ``{"@iot.id": "..."}``."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    iot_id: str = Field(alias="@iot.id")


class Location(_Entity):
    name: str
    description: str = ""
    encodingType: str = GEOJSON
    location: dict[str, Any] = Field(default_factory=lambda: {"type": "Point", "coordinates": [0.0, 0.0]})


class Thing(_Entity):
    name: str
    description: str = ""
    properties: dict[str, Any] = Field(default_factory=dict)
    Locations: list[Ref] = Field(default_factory=list)


class Sensor(_Entity):
    name: str
    description: str = ""
    encodingType: str = "text/plain"
    metadata: str = ""


class ObservedProperty(_Entity):
    name: str
    definition: str
    description: str = ""


class UnitOfMeasurement(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    symbol: str | None = None
    definition: str | None = None


class Datastream(_Entity):
    name: str
    description: str = ""
    unitOfMeasurement: UnitOfMeasurement
    observationType: str = OM_MEASUREMENT
    properties: dict[str, Any] = Field(default_factory=dict)  # {"topic": the Data Broker topic it arrives on}
    Thing: Ref
    Sensor: Ref
    ObservedProperty: Ref


class Observation(_Entity):
    phenomenonTime: str
    resultTime: str
    result: float | bool | str | None
    Datastream: Ref
    parameters: dict[str, Any] = Field(default_factory=dict)


@lru_cache(maxsize=4096)  # a step's records share a handful of times
def iso(epoch_s: float) -> str:
    """Epoch seconds -> ISO 8601 UTC with a ``Z`` (millisecond precision when needed)."""
    dt = datetime.fromtimestamp(epoch_s, tz=UTC)
    text = dt.isoformat(timespec="milliseconds" if epoch_s != int(epoch_s) else "seconds")
    return text.replace("+00:00", "Z")


_RESULT = TypeAdapter(float | bool | str | None)  # Observation.result


def _result(value: Any) -> float | bool | str | None:
    """``value`` as Observation.result holds it (float, bool, str and None pass as they are)."""
    return value if value is None or type(value) in (float, bool, str) else _RESULT.validate_python(value)


@dataclass(frozen=True, slots=True)
class ObservationRow:
    datastream: Datastream
    t_s: float  # the record's time, simulated seconds
    phenomenon_time: str
    result_time: str
    result: float | bool | str | None


class SensorThingsCatalog:
    """Creates the entities of data topics on first sight and maps records to Observations."""

    def __init__(self, epoch0: float, locations: dict[str, tuple[float, float]] | None = None) -> None:
        self.epoch0 = epoch0
        self.locations = locations or {}
        self.things: dict[str, Thing] = {}
        self.location_entities: dict[str, Location] = {}
        self.sensors: dict[str, Sensor] = {}
        self.properties: dict[str, ObservedProperty] = {}
        self.datastreams: dict[str, Datastream] = {}

    def datastream(self, info: TopicInfo, record: Record) -> Datastream:
        device = info.device or "site"
        quantity = record.name[len(info.base_name):] if record.name.startswith(info.base_name) else record.name
        ds_id = f"{info.site}/{device}/{quantity}"
        ds = self.datastreams.get(ds_id)
        if ds is not None:
            return ds
        thing_id = f"{info.site}/{device}"
        if thing_id not in self.things:
            loc_ids = []
            if info.site in self.locations:
                lon, lat = self.locations[info.site]
                loc = Location(iot_id=info.site, name=info.site, description=f"site {info.site}",
                               location={"type": "Point", "coordinates": [lon, lat]})
                self.location_entities[info.site] = loc
                loc_ids = [loc.iot_id]
            self.things[thing_id] = Thing(iot_id=thing_id, name=thing_id, description=f"device {device} at {info.site}",
                                          properties={"site": info.site, "device": device},
                                          Locations=[Ref(iot_id=i) for i in loc_ids])
        if thing_id not in self.sensors:
            self.sensors[thing_id] = Sensor(iot_id=thing_id, name=f"{device} (co-simulated)",
                                            description="device behind the S4G driver interface")
        prop_name, prop_desc = QUANTITIES.get(quantity, (quantity, quantity))
        if prop_name not in self.properties:
            self.properties[prop_name] = ObservedProperty(iot_id=prop_name, name=prop_name,
                                                          definition=f"urn:s4g:quantity:{prop_name}",
                                                          description=prop_desc)
        kind = record.kind
        obs_type = {"v": OM_MEASUREMENT, "s": OM_MEASUREMENT, "vb": OM_TRUTH,
                    "vs": OM_CATEGORY}.get(kind, OM_OBSERVATION)
        unit = record.unit
        uom = UnitOfMeasurement(name=UNIT_NAMES.get(unit, unit) if unit else None, symbol=unit,
                                definition=SENML_UNITS_URL if unit else None)
        ds = Datastream(iot_id=ds_id, name=ds_id, description=f"{prop_name} of {thing_id}", unitOfMeasurement=uom,
                        observationType=obs_type, properties={"topic": info.topic},
                        Thing=Ref(iot_id=thing_id), Sensor=Ref(iot_id=thing_id),
                        ObservedProperty=Ref(iot_id=prop_name))
        self.datastreams[ds_id] = ds
        return ds

    def observations(self, message: Message, rows: list[ObservationRow] | None = None) -> list[Observation]:
        """One Observation per record of a data-topic message (records of other topics give none); ``rows``: the
        message's :meth:`rows`, when the caller has them already."""
        return [Observation(iot_id=f"{message.sender}/{message.seq}/{i}", phenomenonTime=row.phenomenon_time,
                            resultTime=row.result_time, result=row.result, Datastream=Ref(iot_id=row.datastream.iot_id),
                            parameters={"t_s": row.t_s, "topic": message.topic, "sender": message.sender})
                for i, row in enumerate(self.rows(message) if rows is None else rows)]

    def rows(self, message: Message) -> list[ObservationRow]:
        """What each record of a data-topic message observes (the fields of its Observation), without building
        the models: the recorder writes these for every record of the run."""
        try:
            info = parse_topic(message.topic)
        except ValueError:
            return []
        if info.role != "data":
            return []
        result_time = iso(self.epoch0 + message.t_due)
        out = []
        for rec in message.records:
            t_rec = rec.time if rec.time is not None else message.t_s
            out.append(ObservationRow(self.datastream(info, rec), t_rec, iso(self.epoch0 + t_rec), result_time,
                                      _result(rec.result)))
        return out

    def entities(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "Things": [t.dump() for t in self.things.values()],
            "Locations": [loc.dump() for loc in self.location_entities.values()],
            "Sensors": [s.dump() for s in self.sensors.values()],
            "ObservedProperties": [p.dump() for p in self.properties.values()],
            "Datastreams": [d.dump() for d in self.datastreams.values()],
        }


class SensorThingsRecorder:
    """Subscribes to every data topic and writes Observations into ``<run_dir>/sensorthings/``.

    Call ``step(t_s)`` once per simulated step (from the recorder simulator) and ``close()`` at the end.
    Observations go to Parquet in row groups of ``flush_rows``, so memory stays flat however long the run is.
    """

    def __init__(self, bus: MessageBus, run_dir: str | Path, *, topic_filter: str = "s4g/+/data/#",
                 locations: dict[str, tuple[float, float]] | None = None, flush_rows: int = 20_000) -> None:
        self.out_dir = Path(run_dir) / "sensorthings"
        self.catalog = SensorThingsCatalog(bus.epoch0, locations)
        self._bus = bus
        self._sub = bus.subscribe("data", topic_filter, subscriber="sensorthings")
        self._rows: dict[str, list[Any]] = {k: [] for k in _SCHEMA_FIELDS}
        self._writer: Any = None  # pyarrow ParquetWriter, opened at the first flush
        self.flush_rows = flush_rows
        self.count = 0
        self._sink = LIVE_SINKS.get(str(Path(run_dir).resolve()))

    def step(self, t_s: float) -> int:
        n = 0
        new: list[tuple[Observation, str, int]] = []
        for msg in self._sub.deliver(t_s):
            if len(self.catalog.datastreams) + len(msg.records) > MAX_DATASTREAMS and not self._known(msg):
                self._bus.reject(msg, f"more than {MAX_DATASTREAMS} Datastreams", "sensorthings")
                continue
            rows = self.catalog.rows(msg)
            r = self._rows
            for row in rows:
                ds = row.datastream
                r["t_s"].append(float(row.t_s))
                r["phenomenon_time"].append(row.phenomenon_time)
                r["result_time"].append(row.result_time)
                r["datastream"].append(ds.iot_id)
                result = row.result
                numeric = result if isinstance(result, (int, float)) and not isinstance(result, bool) else None
                r["result"].append(None if numeric is None else float(numeric))
                r["result_text"].append(None if numeric is not None else json.dumps(result))
                r["unit"].append(ds.unitOfMeasurement.symbol)
                r["sender"].append(msg.sender)
                r["seq"].append(msg.seq)
            n += len(rows)
            if self._sink is not None and rows:  # the live server takes the Observation models
                new.extend((obs, msg.sender, msg.seq) for obs in self.catalog.observations(msg, rows))
        if new and self._sink is not None:
            self._sink(self.catalog, new)
        self.count += n
        if len(self._rows["t_s"]) >= self.flush_rows:
            self._flush()
        return n

    def _known(self, msg: Message) -> bool:
        """Every record of ``msg`` belongs to a Datastream that exists already."""
        try:
            info = parse_topic(msg.topic)
        except ValueError:
            return True
        base = info.base_name
        prefix = f"{info.site}/{info.device or 'site'}/"
        return all(prefix + (r.name[len(base):] if r.name.startswith(base) else r.name) in self.catalog.datastreams
                   for r in msg.records)

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        schema = _schema()
        if self._writer is None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self._writer = pq.ParquetWriter(self.out_dir / "observations.parquet", schema)
        table = pa.table({k: pa.array(v, type=schema.field(k).type) for k, v in self._rows.items()}, schema=schema)
        self._writer.write_table(table)
        for column in self._rows.values():
            column.clear()

    def close(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / "entities.json").write_text(json.dumps(self.catalog.entities(), indent=1))
        if self._writer is None or self._rows["t_s"]:
            self._flush()  # the last row group (an empty one when nothing was observed: the file still exists)
        self._writer.close()
        self._writer = None
        self._sub.close()
        return self.out_dir / "observations.parquet"


_FIELDS = (("t_s", "float64"), ("phenomenon_time", "string"), ("result_time", "string"), ("datastream", "string"),
           ("result", "float64"), ("result_text", "string"), ("unit", "string"), ("sender", "string"),
           ("seq", "int64"))
_SCHEMA_FIELDS = tuple(name for name, _ in _FIELDS)


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in _FIELDS])
