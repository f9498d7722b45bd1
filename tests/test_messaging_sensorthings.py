"""SensorThings entities and the SenML-record -> Observation mapping; Observations written to a run directory."""

from __future__ import annotations

import json
from datetime import datetime, UTC

import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim.messaging import MessageBus, Record, topics
from cosim.messaging.sensorthings import (OM_MEASUREMENT, OM_TRUTH, Observation, SensorThingsCatalog,
                                          SensorThingsRecorder, iso)

START = datetime(2021, 6, 1, tzinfo=UTC)


def test_records_map_to_observations_of_datastreams(tmp_path):
    with MessageBus({"default": "direct"}, start=START) as bus:
        rec = SensorThingsRecorder(bus, tmp_path, locations={"fur": (8.99, 56.83)})
        bus.publish("data", topics.data_topic("fur", "h1", "p_w"),
                    [Record("p_w", value=-1200.0, unit="W"), Record("soc", value=0.42, unit="/", time=30)], 60, "h1")
        bus.publish("data", topics.data_topic("fur", "wb1", "plugged"), [Record("plugged", boolean=True)], 60, "wb1")
        bus.register("g", "controller")
        bus.publish("control", topics.control_topic("fur", "ess1", "p_w"), [Record("p_w", value=1.0)], 60, "g")
        assert rec.step(60) == 3
        path = rec.close()
    rows = pq.read_table(path).to_pylist()
    assert [(r["datastream"], r["t_s"], r["result"], r["unit"]) for r in rows] == [
        ("fur/h1/p_w", 60.0, -1200.0, "W"), ("fur/h1/soc", 30.0, 0.42, "/"), ("fur/wb1/plugged", 60.0, None, None)]
    assert rows[2]["result_text"] == "true" and rows[0]["phenomenon_time"] == "2021-06-01T00:01:00Z"
    ent = json.loads((tmp_path / "sensorthings" / "entities.json").read_text())
    ds = {d["@iot.id"]: d for d in ent["Datastreams"]}
    assert ds["fur/h1/p_w"]["unitOfMeasurement"]["symbol"] == "W"
    assert ds["fur/h1/p_w"]["observationType"] == OM_MEASUREMENT and ds["fur/wb1/plugged"]["observationType"] == OM_TRUTH
    assert ds["fur/h1/p_w"]["Thing"] == {"@iot.id": "fur/h1"}
    assert {p["name"] for p in ent["ObservedProperties"]} >= {"ActivePower", "StateOfCharge"}
    assert ent["Things"][0]["Locations"] == [{"@iot.id": "fur"}]
    assert ent["Locations"][0]["location"] == {"type": "Point", "coordinates": [8.99, 56.83]}


def test_observations_stream_to_parquet_in_row_groups_and_none_is_lost(tmp_path):
    """Memory stays flat on long runs: observations go to disk every ``flush_rows``; the file holds them all."""
    with MessageBus({"default": "direct"}, start=START) as bus:
        rec = SensorThingsRecorder(bus, tmp_path, flush_rows=4)
        for t in range(0, 600, 60):
            bus.publish("data", topics.data_topic("fur", "h1", "p_w"), [Record("p_w", value=float(t), unit="W")], t,
                        "h1")
            rec.step(t)
            assert len(rec._rows["t_s"]) < 4  # never more than one row group in memory
        path = rec.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 10 == rec.count
    assert pq.read_table(path).column("result").to_pylist() == [float(t) for t in range(0, 600, 60)]


def test_a_run_without_observations_still_writes_an_empty_table(tmp_path):
    with MessageBus({"default": "direct"}, start=START) as bus:
        path = SensorThingsRecorder(bus, tmp_path).close()
    assert pq.read_table(path).num_rows == 0 and "datastream" in pq.read_table(path).column_names


def test_observation_json_uses_sensorthings_names():
    obs = Observation.model_validate({"@iot.id": "x", "phenomenonTime": iso(1.6e9), "resultTime": iso(1.6e9 + 0.5),
                                      "result": 1.0, "Datastream": {"@iot.id": "fur/h1/p_w"}})
    d = obs.dump()
    assert d["@iot.id"] == "x" and d["Datastream"] == {"@iot.id": "fur/h1/p_w"}
    assert d["phenomenonTime"] == "2020-09-13T12:26:40Z" and d["resultTime"].endswith(".500Z")


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=5),
       st.integers(min_value=0, max_value=10**6))
def test_every_data_record_becomes_one_observation(values, t_s):
    with MessageBus({"default": "direct"}, start=START) as bus:
        sub = bus.subscribe("data", "#")
        bus.publish("data", topics.data_topic("s", "d", "p_w"),
                    [Record(f"q{i}", value=v, unit="W") for i, v in enumerate(values)], t_s, "d")
        (msg,) = sub.deliver(t_s)
    cat = SensorThingsCatalog(bus.epoch0)
    obs = cat.observations(msg)
    assert [o.result for o in obs] == values
    assert [o.Datastream.iot_id for o in obs] == [f"s/d/q{i}" for i in range(len(values))]
    assert len(cat.things) == 1 and len(cat.datastreams) == len(values)


def test_a_time_beyond_the_sane_window_is_a_dead_letter_not_a_crash(tmp_path):
    """Issue 12: a schema-valid record with "t": 1e300 on a data topic ended the run (OverflowError in the
    mapping to phenomenonTime). The codec rejects it now; the good message next to it is observed."""
    with MessageBus({"default": "direct"}, start=START) as bus:
        rec = SensorThingsRecorder(bus, tmp_path)
        topic = topics.data_topic("fur", "h1", "p_w")
        bus.publish_raw("data", topic, b'[{"bn":"fur/h1/","n":"p_w","u":"W","v":1,"t":1e300}]', 60, "h1")
        bus.publish("data", topic, [Record("p_w", value=2.0, unit="W")], 60, "h1")
        assert rec.step(60) == 1
        rec.close()
        assert bus.stats()["data"]["decode_errors"] == 1
        assert "outside the sane window" in bus.dead_letters()[0].reason


def test_a_flood_of_new_datastreams_is_capped(tmp_path, monkeypatch):
    from cosim.messaging import sensorthings

    monkeypatch.setattr(sensorthings, "MAX_DATASTREAMS", 3)
    with MessageBus({"default": "direct"}, start=START) as bus:
        rec = SensorThingsRecorder(bus, tmp_path)
        for i in range(5):
            bus.publish("data", topics.data_topic("fur", f"h{i}", "p_w"), [Record("p_w", value=1.0, unit="W")], 60,
                        f"h{i}")
        bus.publish("data", topics.data_topic("fur", "h0", "p_w"), [Record("p_w", value=2.0, unit="W")], 60, "h0")
        assert rec.step(60) == 4  # three new Datastreams, then one more value of a known one
        rec.close()
        assert bus.stats()["data"]["rejected"] == 2
        assert {d.sender for d in bus.dead_letters()} == {"h3", "h4"}
