"""The SensorThings entity sets (OGC 18-088, Sensing part) as the server stores them: one table per entity set.

Each entity set names its table, its JSON properties (with the SQL column each comes from and its type) and its
navigation properties (the target set, to-one or to-many, and the join condition between a child alias ``{c}``
and a parent alias ``{p}``). The query engine (:mod:`cosim.sta.query`), the ``$filter`` compiler
(:mod:`cosim.sta.filter`), the embedded store and the PostgreSQL warehouse all read this one description.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# property types: num, str, time (a UTC timestamp), interval (start/end columns), json (an object column),
# result (numeric column + JSON text column), id
NUM, STR, TIME, INTERVAL, JSON, RESULT, ID = "num", "str", "time", "interval", "json", "result", "id"


@dataclass(frozen=True)
class Prop:
    name: str
    column: str  # for INTERVAL: "start_col,end_col"; for RESULT: "num_col,text_col"
    kind: str


@dataclass(frozen=True)
class Nav:
    name: str
    target: str  # entity set name
    many: bool
    cond: str  # SQL joining the target alias {c} to the source alias {p}


@dataclass(frozen=True)
class EntitySet:
    name: str  # "Things"
    singular: str  # "Thing"
    table: str
    props: tuple[Prop, ...]
    navs: tuple[Nav, ...] = field(default=())

    def prop(self, name: str) -> Prop | None:
        return next((p for p in self.props if p.name == name), None)

    def nav(self, name: str) -> Nav | None:
        return next((n for n in self.navs if n.name == name), None)


_ID = Prop("id", "id", ID)
SETS: dict[str, EntitySet] = {s.name: s for s in (
    EntitySet("Things", "Thing", "things", (
        _ID, Prop("name", "name", STR), Prop("description", "description", STR),
        Prop("properties", "properties", JSON)), (
        Nav("Locations", "Locations", True,
            "{c}.id IN (SELECT location_id FROM thing_locations WHERE thing_id = {p}.id)"),
        Nav("HistoricalLocations", "HistoricalLocations", True, "{c}.thing_id = {p}.id"),
        Nav("Datastreams", "Datastreams", True, "{c}.thing_id = {p}.id"))),
    EntitySet("Locations", "Location", "locations", (
        _ID, Prop("name", "name", STR), Prop("description", "description", STR),
        Prop("encodingType", "encoding_type", STR), Prop("location", "location", JSON),
        Prop("properties", "properties", JSON)), (
        Nav("Things", "Things", True, "{c}.id IN (SELECT thing_id FROM thing_locations WHERE location_id = {p}.id)"),
        Nav("HistoricalLocations", "HistoricalLocations", True,
            "{c}.thing_id IN (SELECT thing_id FROM thing_locations WHERE location_id = {p}.id)"))),
    EntitySet("HistoricalLocations", "HistoricalLocation", "historical_locations", (
        _ID, Prop("time", "time", TIME)), (
        Nav("Thing", "Things", False, "{c}.id = {p}.thing_id"),
        Nav("Locations", "Locations", True,
            "{c}.id IN (SELECT location_id FROM thing_locations WHERE thing_id = {p}.thing_id)"))),
    EntitySet("Sensors", "Sensor", "sensors", (
        _ID, Prop("name", "name", STR), Prop("description", "description", STR),
        Prop("encodingType", "encoding_type", STR), Prop("metadata", "metadata", STR),
        Prop("properties", "properties", JSON)), (
        Nav("Datastreams", "Datastreams", True, "{c}.sensor_id = {p}.id"),)),
    EntitySet("ObservedProperties", "ObservedProperty", "observed_properties", (
        _ID, Prop("name", "name", STR), Prop("definition", "definition", STR),
        Prop("description", "description", STR), Prop("properties", "properties", JSON)), (
        Nav("Datastreams", "Datastreams", True, "{c}.observed_property_id = {p}.id"),)),
    EntitySet("Datastreams", "Datastream", "datastreams", (
        _ID, Prop("name", "name", STR), Prop("description", "description", STR),
        Prop("unitOfMeasurement", "unit_of_measurement", JSON), Prop("observationType", "observation_type", STR),
        Prop("observedArea", "observed_area", JSON),
        Prop("phenomenonTime", "phenomenon_start,phenomenon_end", INTERVAL),
        Prop("resultTime", "result_start,result_end", INTERVAL), Prop("properties", "properties", JSON)), (
        Nav("Thing", "Things", False, "{c}.id = {p}.thing_id"),
        Nav("Sensor", "Sensors", False, "{c}.id = {p}.sensor_id"),
        Nav("ObservedProperty", "ObservedProperties", False, "{c}.id = {p}.observed_property_id"),
        Nav("Observations", "Observations", True, "{c}.datastream_id = {p}.id"))),
    EntitySet("Observations", "Observation", "observations", (
        _ID, Prop("phenomenonTime", "phenomenon_time", TIME), Prop("resultTime", "result_time", TIME),
        Prop("result", "result,result_text", RESULT), Prop("parameters", "parameters", JSON)), (
        Nav("Datastream", "Datastreams", False, "{c}.id = {p}.datastream_id"),
        Nav("FeatureOfInterest", "FeaturesOfInterest", False, "{c}.id = {p}.feature_id"))),
    EntitySet("FeaturesOfInterest", "FeatureOfInterest", "features", (
        _ID, Prop("name", "name", STR), Prop("description", "description", STR),
        Prop("encodingType", "encoding_type", STR), Prop("feature", "feature", JSON),
        Prop("properties", "properties", JSON)), (
        Nav("Observations", "Observations", True, "{c}.feature_id = {p}.id"),)),
)}

# DDL shared by the embedded store (DuckDB) and the PostgreSQL warehouse; JSON columns are text in DuckDB
# (json type) and jsonb in PostgreSQL, times are UTC timestamps without zone.
TABLES: dict[str, list[tuple[str, str]]] = {
    "things": [("id", "BIGINT"), ("name", "TEXT"), ("description", "TEXT"), ("properties", "JSON")],
    "locations": [("id", "BIGINT"), ("name", "TEXT"), ("description", "TEXT"), ("encoding_type", "TEXT"),
                  ("location", "JSON"), ("properties", "JSON")],
    "thing_locations": [("thing_id", "BIGINT"), ("location_id", "BIGINT")],
    "historical_locations": [("id", "BIGINT"), ("thing_id", "BIGINT"), ("time", "TIMESTAMP")],
    "sensors": [("id", "BIGINT"), ("name", "TEXT"), ("description", "TEXT"), ("encoding_type", "TEXT"),
                ("metadata", "TEXT"), ("properties", "JSON")],
    "observed_properties": [("id", "BIGINT"), ("name", "TEXT"), ("definition", "TEXT"), ("description", "TEXT"),
                            ("properties", "JSON")],
    "datastreams": [("id", "BIGINT"), ("name", "TEXT"), ("description", "TEXT"), ("unit_of_measurement", "JSON"),
                    ("observation_type", "TEXT"), ("observed_area", "JSON"), ("phenomenon_start", "TIMESTAMP"),
                    ("phenomenon_end", "TIMESTAMP"), ("result_start", "TIMESTAMP"), ("result_end", "TIMESTAMP"),
                    ("properties", "JSON"), ("thing_id", "BIGINT"), ("sensor_id", "BIGINT"),
                    ("observed_property_id", "BIGINT")],
    "features": [("id", "BIGINT"), ("name", "TEXT"), ("description", "TEXT"), ("encoding_type", "TEXT"),
                 ("feature", "JSON"), ("properties", "JSON")],
    "observations": [("id", "BIGINT"), ("phenomenon_time", "TIMESTAMP"), ("result_time", "TIMESTAMP"),
                     ("result", "DOUBLE"), ("result_text", "TEXT"), ("parameters", "JSON"),
                     ("datastream_id", "BIGINT"), ("feature_id", "BIGINT")],
}
