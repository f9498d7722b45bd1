"""The SensorThings API server over a finished run: URL and JSON conventions of OGC 18-088, the query options,
paging, errors; an independent client (Fraunhofer's FROST Python client) reads it over a real socket; the
``$filter`` grammar is fuzzed (typed 400s, never a 500, literals never reach the SQL text)."""

from __future__ import annotations

import json

import duckdb
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.sta.filter import Compiler, QueryError, parse
from cosim.sta.schema import SETS
from cosim.sta.server import HttpServer, create_app
from cosim.sta.store import Store
from tests.sta_runs import pilot_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return pilot_run(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def store(run_dir):
    s = Store()
    s.add_run(run_dir)
    return s


@pytest.fixture(scope="module")
def client(store):
    return TestClient(create_app(store), base_url="http://testserver")


def _parquet(run_dir, sql):
    return duckdb.sql(sql.replace("OBS", f"'{run_dir}/sensorthings/observations.parquet'")).fetchall()


def test_service_root_lists_every_entity_set(client):
    body = client.get("/v1.1").json()
    assert [e["name"] for e in body["value"]] == ["Things", "Locations", "HistoricalLocations", "Sensors",
                                                   "ObservedProperties", "Datastreams", "Observations",
                                                   "FeaturesOfInterest"]
    assert body["value"][0]["url"] == "http://testserver/v1.1/Things"
    assert any("request-data" in c for c in body["serverSettings"]["conformance"])


def test_entities_carry_ids_links_and_navigation(client, run_dir):
    things = client.get("/v1.1/Things", params={"$count": "true", "$top": "1000"}).json()
    entities = json.loads((run_dir / "sensorthings" / "entities.json").read_text())
    # the run's Things, and the tariff Thing that carries its prices
    assert things["@iot.count"] == len(entities["Things"]) + 1 == len(things["value"])
    assert [t["properties"]["kind"] for t in things["value"]].count("tariff") == 1
    t = things["value"][0]
    assert t["@iot.selfLink"] == f"http://testserver/v1.1/Things({t['@iot.id']})"
    assert t["Datastreams@iot.navigationLink"] == f"http://testserver/v1.1/Things({t['@iot.id']})/Datastreams"
    one = client.get(f"/v1.1/Things({t['@iot.id']})").json()
    assert one == t
    ds = client.get(f"/v1.1/Things({t['@iot.id']})/Datastreams").json()["value"]
    assert ds and all(d["name"].startswith(t["name"] + "/") for d in ds)
    back = client.get(f"/v1.1/Datastreams({ds[0]['@iot.id']})/Thing").json()
    assert back["@iot.id"] == t["@iot.id"]
    assert client.get(f"/v1.1/Things({t['@iot.id']})/name").json() == {"name": t["name"]}
    raw = client.get(f"/v1.1/Things({t['@iot.id']})/name/$value")
    assert raw.text == t["name"] and raw.headers["content-type"].startswith("text/plain")
    refs = client.get(f"/v1.1/Things({t['@iot.id']})/Datastreams/$ref").json()["value"]
    assert [r["@iot.selfLink"] for r in refs] == [d["@iot.selfLink"] for d in ds]
    # every entity set answers, and every Observation has a FeatureOfInterest
    for name in SETS:
        assert client.get(f"/v1.1/{name}", params={"$top": "1"}).status_code == 200, name
    obs = client.get("/v1.1/Observations", params={"$top": "1"}).json()["value"][0]
    foi = client.get(f"/v1.1/Observations({obs['@iot.id']})/FeatureOfInterest").json()
    assert foi["encodingType"] == "application/geo+json" and foi["feature"]["type"] == "Feature"


def test_thing_properties_carry_the_broker_topics_gesscon_reads(client, run_dir):
    from cosim.sta.client import site_topics

    things = client.get("/v1.1/Things", params={"$filter": "properties/site eq 'consumer_4006773'"}).json()["value"]
    names = sorted(t["properties"]["device"] for t in things)
    assert names == ["fronius_4006773", "load:consumer_4006773"]
    dev = next(t for t in things if t["properties"]["device"] == "fronius_4006773")
    assert dev["properties"]["dataBroker"]["topic"] == "s4g/fur_skive/data/fronius_4006773/#"
    assert dev["properties"]["controlBroker"]["scheduleTopic"] == "s4g/fur_skive/control/fronius_4006773/schedule/p_w"
    assert dev["properties"]["dataBroker"]["url"] == "embedded"
    topics = site_topics("http://testserver/v1.1", "consumer_4006773", get=lambda url: client.get(url).json())
    assert topics.data == ["s4g/fur_skive/data/fronius_4006773/#", "s4g/fur_skive/data/load:consumer_4006773/#"]
    assert "s4g/fur_skive/control/fronius_4006773/schedule/p_w" in topics.schedules


def test_paging_visits_every_observation_once(client, run_dir):
    tariff = client.get("/v1.1/Observations", params={
        "$filter": "Datastream/Thing/properties/kind eq 'tariff'", "$count": "true"}).json()["@iot.count"]
    total = _parquet(run_dir, "SELECT count(*) FROM OBS")[0][0] + tariff
    assert tariff >= 2  # one import and one export price at least
    url, seen, pages = "/v1.1/Observations?$top=100&$select=id&$count=true", [], 0
    while url:
        body = client.get(url).json()
        assert body["@iot.count"] == total
        seen += [o["@iot.id"] for o in body["value"]]
        url = body.get("@iot.nextLink", "").removeprefix("http://testserver")
        pages += 1
    assert len(seen) == len(set(seen)) == total and pages == -(-total // 100)


def test_filter_on_time_matches_the_parquet_file(client, run_dir):
    lo, hi = "2019-06-15T08:30:00Z", "2019-06-15T09:15:00+00:00"
    expect = _parquet(run_dir, f"SELECT count(*) FROM OBS WHERE phenomenon_time >= '{lo}' AND phenomenon_time < "
                               "'2019-06-15T09:15:00Z' AND result > 100")[0][0]
    f = f"phenomenonTime ge {lo} and phenomenonTime lt {hi} and result gt 100"
    body = client.get("/v1.1/Observations", params={"$filter": f, "$count": "true", "$top": "1000"}).json()
    assert expect > 0 and body["@iot.count"] == expect == len(body["value"])
    assert all(o["result"] > 100 and lo <= o["phenomenonTime"] < "2019-06-15T09:15:00Z" for o in body["value"])
    # time functions, arithmetic, string functions and navigation in one filter
    f2 = ("hour(phenomenonTime) eq 9 and minute(phenomenonTime) eq 0 and result mul 2 gt 200 and "
          "startswith(Datastream/name, 'fur_skive/fronius') and Datastream/ObservedProperty/name eq 'ActivePower'")
    got = client.get("/v1.1/Observations", params={"$filter": f2, "$count": "true"}).json()
    expect2 = _parquet(run_dir, "SELECT count(*) FROM OBS WHERE phenomenon_time = '2019-06-15T09:00:00Z' AND "
                                "result > 100 AND datastream LIKE 'fur_skive/fronius%/p_w'")[0][0]
    assert got["@iot.count"] == expect2
    # any() over a to-many navigation
    f3 = "Datastreams/ObservedProperty/name eq 'StateOfCharge'"
    socs = client.get("/v1.1/Things", params={"$filter": f3, "$select": "name"}).json()["value"]
    with_soc = _parquet(run_dir, "SELECT DISTINCT regexp_replace(datastream, '/soc$', '') FROM OBS "
                                 "WHERE datastream LIKE '%/soc' ORDER BY 1")
    assert sorted(t["name"] for t in socs) == [r[0] for r in with_soc] and len(socs) >= 2


def test_orderby_select_and_nested_expand(client):
    body = client.get("/v1.1/Things", params={
        "$filter": "properties/kind eq 'device'", "$orderby": "name desc", "$select": "name,id",
        "$expand": "Datastreams($select=name;$filter=endswith(name, '/soc');"
                   "$expand=Observations($orderby=phenomenonTime desc;$top=2;$count=true),ObservedProperty)"}).json()
    names = [t["name"] for t in body["value"]]
    assert names == sorted(names, reverse=True)
    house = next(t for t in body["value"] if t["name"].endswith("fronius_4006773"))
    assert set(house) == {"@iot.id", "name", "Datastreams"}
    (soc,) = house["Datastreams"]
    assert soc["name"].endswith("/soc") and soc["ObservedProperty"]["name"] == "StateOfCharge"
    obs = soc["Observations"]
    assert len(obs) == 2 and obs[0]["phenomenonTime"] > obs[1]["phenomenonTime"]
    assert soc["Observations@iot.count"] == 12 and "Observations@iot.nextLink" in soc
    assert all(0 <= o["result"] <= 1 for o in obs)


def test_bad_requests_get_typed_json_errors(client):
    for params in ({"$filter": "result gt"}, {"$filter": "name eq 5"}, {"$filter": "nosuch eq 1"},
                   {"$top": "-1"}, {"$top": "abc"}, {"$orderby": "Datastreams/name"}, {"$expand": "Nope"},
                   {"$select": "nope"}, {"$count": "maybe"}, {"$bogus": "1"}, {"$filter": "st_within(x, y)"},
                   {"$filter": "'a' eq 'a' eq 'a'"}, {"$filter": "phenomenonTime gt 2019-13-45T00:00:00Z"}):
        r = client.get("/v1.1/Observations" if "$expand" not in params else "/v1.1/Things", params=params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["code"] == 400 and r.json()["type"] == "error" and r.json()["message"]
    for path in ("/v1.1/Things(999999)", "/v1.1/Nothing", "/v1.1/Things(1)/Nope", "/v1.1/Things('x')",
                 "/v1.1/Things(1)/Datastreams(999999)", "/v1.1/Things/name"):
        r = client.get(path)
        assert r.status_code == 404, (path, r.text)
    assert client.post("/v1.1/Things", json={}).status_code == 405


def test_a_sensorthings_client_reads_the_server_over_a_socket(store):
    fsc = pytest.importorskip("frost_sta_client", reason="frost-sta-client (test extra) is not installed")
    with HttpServer(create_app(store)) as server:
        service = fsc.SensorThingsService(server.url + "/v1.1")
        things = list(service.things().query().top(3).list())  # follows @iot.nextLink
        assert len(things) == len(store.keys["things"])
        thing = service.things().find(1)
        assert thing.properties["dataBroker"]["topic"].startswith("s4g/")
        datastreams = list(thing.get_datastreams().query().list())
        assert {d.unit_of_measurement.symbol for d in datastreams} <= {"W", "/"}
        ds = datastreams[0]
        obs = list(service.datastreams().find(ds.id).get_observations().query()
                   .filter("phenomenonTime ge 2019-06-15T09:00:00Z").orderby("phenomenonTime", "desc").top(2).list())
        assert obs and all(o.phenomenon_time >= "2019-06-15T09:00:00Z" for o in obs)
        assert [o.phenomenon_time for o in obs] == sorted((o.phenomenon_time for o in obs), reverse=True)
        expanded = service.things().query().expand("Datastreams($expand=Observations($top=1))").top(2).list()
        first = next(iter(expanded))
        assert first.datastreams.entities[0].observations.entities


# -------------------------------------------------------------------------------------------------- fuzzing
_ATOMS = ["result", "phenomenonTime", "resultTime", "id", "@iot.id", "Datastream/name", "Datastream/Thing/name",
          "parameters/t_s", "Datastream/properties/quantity", "1", "2.5e3", "-7", "'W'", "'it''s'", "true", "null",
          "2019-06-15T09:00:00Z", "2019-06-15", "2019-06-15T09:00:00Z/2019-06-15T10:00:00Z", "nosuch",
          "Datastream/Thing/Datastreams/name"]
_FUNCS = ["year", "hour", "length", "tolower", "round", "substringof", "startswith", "concat", "substring",
          "indexof", "date", "time", "now", "during", "overlaps", "before", "mindatetime", "fractionalseconds"]
_OPS = ["eq", "ne", "gt", "ge", "lt", "le", "and", "or", "add", "sub", "mul", "div", "mod"]


@st.composite
def expressions(draw, depth=0):
    kind = draw(st.integers(0, 4 if depth < 3 else 0))
    if kind == 0:
        return draw(st.sampled_from(_ATOMS))
    if kind == 1:
        return f"{draw(expressions(depth + 1))} {draw(st.sampled_from(_OPS))} {draw(expressions(depth + 1))}"
    if kind == 2:
        return f"not ({draw(expressions(depth + 1))})"
    if kind == 3:
        args = draw(st.lists(expressions(depth + 1), max_size=3))
        return f"{draw(st.sampled_from(_FUNCS))}({', '.join(args)})"
    return f"({draw(expressions(depth + 1))})"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(expressions(), st.text(max_size=60),
                      st.text(alphabet="()'/,- abcdeqtlgnorsu0123456789$;", max_size=40)))
def test_any_filter_is_answered_or_refused_with_400(client, text):
    r = client.get("/v1.1/Observations", params={"$filter": text, "$top": "5", "$count": "true"})
    assert r.status_code in (200, 400), (text, r.status_code, r.text)
    if r.status_code == 400:
        assert r.json()["type"] == "error"


@settings(max_examples=200, deadline=None)
@given(value=st.text(max_size=30))
def test_literals_never_become_sql_text(value):
    """Whatever a string literal holds, it is a bound parameter: the SQL text is the same for every value."""
    literal = "'" + value.replace("'", "''") + "'"
    params: dict = {}
    sql = Compiler(SETS["Things"], "a", params).condition(parse(f"name eq {literal} or properties/site eq {literal}"))
    assert list(params.values()).count(value) == 2
    other: dict = {}
    assert Compiler(SETS["Things"], "a", other).condition(parse("name eq 'x' or properties/site eq 'x'")) == sql


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=80))
def test_the_parser_raises_only_query_errors(text):
    try:
        node = parse(text)
        Compiler(SETS["Observations"], "a", {}).condition(node)
    except QueryError:
        pass
