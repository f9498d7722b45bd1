"""The DSF-SE compatible API and the study jobs over a real socket (uvicorn on a free loopback port) and, for the
fuzzing, in process: grid round trips with physics checks, abort, limits, and a 4xx with a reason for every bad
input (never a 500)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import dask
import httpx
import numpy as np
import pandapower as pp
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.api.app import create_api_app
from cosim.api.jobs import Limits, Registry
from cosim.sta.server import HttpServer

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"
STUDY_DATA = REPO / "tests" / "study_data"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = Registry(folder=tmp_path_factory.mktemp("api"), scenario_roots=[STUDY_DATA, REPO / "scenarios"],
                   limits=Limits(max_running_simulations=2, max_body_bytes=4 << 20))
    yield reg
    reg.close()


@pytest.fixture(scope="module")
def client(registry):
    with HttpServer(create_api_app(registry)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        c.headers["X-CSRF-Token"] = c.get("/auth/me").json()["csrf"]
        yield c


@pytest.fixture(scope="module")
def fur_id(client):
    r = client.post("/se/simulation", content=FUR.read_bytes())
    assert r.status_code == 201, r.text
    return r.json()


def _run(client, registry, gid, **body):
    r = client.put(f"/se/commands/run/{gid}", json=body)
    assert r.status_code == 202, r.text
    assert registry.grid(gid).wait(120)
    assert client.get(f"/se/commands/status/{gid}").json() == 100
    r = client.get(f"/se/simulation/{gid}")
    assert r.status_code == 200, r.text
    return r.json()


def test_dsf_se_round_trip_with_physics(client, registry, fur_id):
    res = _run(client, registry, fur_id, sim_duration_in_hours=3, step_min=30, load_profile="s4g-residential")
    # the original's shape: node -> phase -> {max, min}; losses with circuit_total_losses and per line
    assert set(res["voltages"]["node_a12"]) == {"Phase 1", "Phase 2", "Phase 3"}
    v = np.array([[p["min"], p["max"]] for node in res["voltages"].values() for p in node.values()])
    assert np.all(v[:, 0] <= v[:, 1] + 1e-12)
    assert 0.8 < v.min() < 1.0 and 1.0 <= v.max() < 1.1  # a loaded LV feeder: voltage falls below the source
    losses = res["losses"]
    assert losses["circuit_total_losses"] > 0
    assert all(x >= 0 for x in losses["Line"].values())
    assert sum(losses["Line"].values()) <= losses["circuit_total_losses"] + 1e-9
    assert set(losses["Line"]) == set(res["currents"])
    assert res["powers"]["Transformer"]["transformer_20082"] > 0
    # the feeder's head carries the most current, the transformer never feeds back more than the loads draw
    head = res["currents"]["powerline_w1"]["Most loaded phase"]["max"]
    assert head == max(c["Most loaded phase"]["max"] for c in res["currents"].values())
    levels = {n["bus"]: n["level"] for n in res["nodes"]}
    assert set(res["critical_nodes"]) == {b for b, lv in levels.items() if lv == "high"}


def test_heavier_load_lowers_voltages_and_raises_losses(client, registry, fur_id):
    light = _run(client, registry, fur_id, sim_duration_in_hours=1, step_min=30, load_profile="constant")
    heavy = _run(client, registry, fur_id, sim_duration_in_hours=1, step_min=30, load_profile="constant",
                 load_scale=1.5, thresholdLow=2, thresholdMedium=4, thresholdHigh=6)
    lo = {n["bus"]: n["v_min_pu"] for n in light["nodes"]}
    hi = {n["bus"]: n["v_min_pu"] for n in heavy["nodes"]}
    lv = [b for b in lo if b.startswith(("node_", "consumer_"))]
    assert all(hi[b] < lo[b] for b in lv)
    assert heavy["losses"]["circuit_total_losses"] > light["losses"]["circuit_total_losses"]
    assert heavy["thresholds"] == {"low": 2, "medium": 4, "high": 6}
    assert len(heavy["critical_nodes"]) >= len(light["critical_nodes"])


def _small_net():
    net = pp.create_empty_network()
    b0, b1, b2, b3 = (pp.create_bus(net, vn_kv=kv, name=f"b{i}") for i, kv in enumerate((20, 0.4, 0.4, 0.4)))
    pp.create_ext_grid(net, b0, vm_pu=1.02)
    pp.create_transformer(net, b0, b1, std_type="0.25 MVA 20/0.4 kV")
    pp.create_line(net, b1, b2, 0.3, std_type="NAYY 4x150 SE")
    pp.create_line(net, b2, b3, 0.2, std_type="NAYY 4x50 SE")
    pp.create_load(net, b2, p_mw=0.04, q_mvar=0.01)
    pp.create_load(net, b3, p_mw=0.03, q_mvar=0.005)
    return net


def test_pandapower_grid_matches_pandapower(client, registry):
    net = _small_net()
    body = pp.to_json(net).encode()
    pp.runpp(net, numba=False)
    r = client.post("/se/simulation", content=body)
    assert r.status_code == 201, r.text
    res = _run(client, registry, r.json(), sim_duration_in_hours=1, step_min=60)
    for i, name in enumerate(("b0", "b1", "b2", "b3")):
        assert res["voltages"][name]["Phase 1"]["min"] == pytest.approx(net.res_bus.vm_pu[i], abs=1e-6)
    assert res["losses"]["circuit_total_losses"] == pytest.approx(
        (net.res_line.pl_mw.sum() + net.res_trafo.pl_mw.sum()) * 1000, rel=1e-4)  # kWh over one hour
    line_a = net.res_line.i_ka.max() * 1000
    assert max(c["Most loaded phase"]["max"] for c in res["currents"].values()) == pytest.approx(line_a, rel=1e-4)


def test_abort_stops_the_run(client, registry):
    gid = client.post("/se/simulation", content=FUR.read_bytes()).json()
    r = client.put(f"/se/commands/run/{gid}", json={"duration": {"year": 1}, "step_min": 60})
    assert r.status_code == 202, r.text
    r = client.put(f"/se/commands/run/{gid}", json={"sim_duration_in_hours": 1})
    assert r.status_code == 409 and "running" in r.json()["error"]
    r = client.put(f"/se/commands/abort/{gid}")
    assert r.status_code == 200, r.text
    state = client.get(f"/se/simulation/{gid}/state").json()
    assert state["state"] == "aborted" and state["progress"] < 100
    assert client.get(f"/se/simulation/{gid}").status_code == 409
    assert client.put(f"/se/commands/abort/{gid}").status_code == 409  # nothing to abort any more
    assert client.delete(f"/se/simulation/{gid}").status_code == 204
    assert client.get(f"/se/commands/status/{gid}").status_code == 404


@pytest.mark.parametrize("body, status, words", [
    (b"", 400, "empty"),
    (b"{not json", 400, "JSON"),
    (b"[1, 2]", 422, "object"),
    (b'{"a": 1}', 422, "DSF-SE"),
    (b'{"common": {"bus1": "x", "base_kV": 10}, "radials": []}', 422, "radials"),
    (b'{"common": {"bus1": "x", "base_kV": -1, "MVAsc3": 1}, "radials": [{"powerLines": []}]}', 422, "base_kV"),
    (b'{"_module": "os", "_class": "system", "_object": "echo"}', 422, "os.system"),
    (b'{"_module": "pandapower.auxiliary", "_class": "pandapowerNet", "_object": {"bus": 3}}', 422, "grid"),
])
def test_bad_grids_are_refused_with_a_reason(client, body, status, words):
    r = client.post("/se/simulation", content=body)
    assert r.status_code == status, r.text
    assert words in r.json()["error"]


@pytest.mark.parametrize("body, words", [
    ({}, "sim_duration_in_hours or duration"),
    ({"sim_duration_in_hours": -1}, "greater than 0"),
    ({"sim_duration_in_hours": 1, "threshold_low": 8, "threshold_high": 5}, "threshold_low <= "),
    ({"sim_duration_in_hours": 1, "surprise": 1}, "surprise"),
    ({"sim_duration_in_hours": 1, "start": "2019-06-15T00:00:00"}, "timezone"),
    ({"sim_duration_in_hours": 1, "load_profile": "magic"}, "load_profile"),
    ({"sim_duration_in_hours": 8000, "step_min": 1}, "steps"),
])
def test_bad_runs_are_refused_with_a_reason(client, fur_id, body, words):
    r = client.put(f"/se/commands/run/{fur_id}", json=body)
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]


def test_unknown_ids_csrf_and_limits(client, registry, fur_id):
    assert client.get("/se/simulation/nope").status_code == 404
    assert client.put("/se/commands/run/nope", json={"sim_duration_in_hours": 1}).status_code == 404
    assert client.get("/api/studies/nope").status_code == 404
    fresh = client.post("/se/simulation", content=pp.to_json(_small_net()).encode()).json()
    assert client.get(f"/se/simulation/{fresh}").status_code == 409  # not run yet
    no_token = httpx.put(f"{client.base_url}/se/commands/run/{fresh}", json={"sim_duration_in_hours": 1})
    assert no_token.status_code == 403 and "CSRF" in no_token.json()["error"]
    foreign = client.put(f"/se/commands/run/{fresh}", json={"sim_duration_in_hours": 1},
                         headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403
    big = client.post("/se/simulation", content=b" " * (5 << 20))
    assert big.status_code == 413
    # concurrency: with the limit at 2, a third simulation waits its turn (429), the first two are aborted
    ids = [fur_id, client.post("/se/simulation", content=FUR.read_bytes()).json(), fresh]
    for gid in ids[:2]:
        assert client.put(f"/se/commands/run/{gid}", json={"duration": {"year": 1}}).status_code == 202
    r = client.put(f"/se/commands/run/{ids[2]}", json={"sim_duration_in_hours": 1})
    assert r.status_code == 429 and "limit" in r.json()["error"] and int(r.headers["Retry-After"]) >= 1
    for gid in ids[:2]:
        assert client.put(f"/se/commands/abort/{gid}").status_code == 200


def test_scenario_info_for_templates(client):
    info = client.get("/api/scenarios/fur_skive.yaml").json()
    assert "baseline" in info["variants"] and info["duration"] == "1d"
    assert any(d["family"] == "libal" for d in info["devices"])
    assert client.get("/api/scenarios/nope.yaml").status_code == 422
    assert client.get("/api/scenarios/..%2F..%2Fpyproject.toml").status_code in (404, 422)


def test_openapi_document_lists_the_dsf_se_paths(client):
    doc = client.get("/openapi.json").json()
    for path in ("/se/simulation", "/se/commands/run/{gid}", "/se/commands/status/{gid}",
                 "/se/commands/abort/{gid}", "/se/simulation/{gid}", "/api/studies", "/api/studies/{sid}/table"):
        assert path in doc["paths"], path


def test_study_round_trip(client, registry):
    study = (STUDY_DATA / "tiny_study.yaml").read_text().replace("values: [3, 7]", "values: [3]")
    r = client.post("/api/studies", json={"study": study + "until: 10min\n"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert registry.study(sid).wait(300)
    status = client.get(f"/api/studies/{sid}").json()
    assert status["state"] == "complete" and status["progress"] == 100 and status["done"] == 2
    rows = client.get(f"/api/studies/{sid}/table").json()
    assert {(row["capacity_kwh"], row["pv_kwp"]) for row in rows} == {(20, 3), (100, 3)}
    assert all(0.9 < row["total.v_max_pu"] < 1.1 for row in rows)
    csv = pd.read_csv(io.StringIO(client.get(f"/api/studies/{sid}/table?format=csv").text))
    parquet = pd.read_parquet(io.BytesIO(client.get(f"/api/studies/{sid}/table?format=parquet").content))
    assert len(csv) == len(parquet) == 2
    assert sorted(parquet["total.v_max_pu"]) == pytest.approx(sorted(r["total.v_max_pu"] for r in rows))
    assert client.get(f"/api/studies/{sid}/report").text.startswith("<!")
    assert client.get(f"/api/studies/{sid}/table?format=xls").status_code == 422


@pytest.mark.parametrize("study, words", [
    ("name: x\nscenario: {path: /etc/passwd}\naxes: []\n", "no such scenario"),
    ("name: x\nscenario: {path: ../../../etc/hosts}\naxes: []\n", "no such scenario"),
    ("name: x\nscenario: {path: tiny.yaml}\naxes: [{name: a, key: nope.x, values: [1]}]\n", "nope"),
    ("name: x\nscenario: {path: tiny.yaml}\nbogus: 1\naxes: []\n", "bogus"),
    ("- just a list\n", "mapping"),
    ("name: [unclosed\n", "YAML"),
    ("name: x\n", "scenario"),
])
def test_bad_studies_are_refused_with_a_reason(client, study, words):
    r = client.post("/api/studies", json={"study": study})
    assert r.status_code == 422, r.text
    assert words in r.json()["error"]
    assert str(REPO) not in r.json()["error"]  # no server path in a reply


def test_uploaded_scenario_may_not_read_outside_the_scenario_folders(client):
    scenario = (STUDY_DATA / "tiny.yaml").read_text().replace("../../scenarios/data/s4g/fur_feeder.json",
                                                              str(REPO / "pyproject.toml"))
    r = client.post("/api/studies", json={"study": "name: up\nscenario: {path: mine.yaml}\naxes: []\n",
                                          "scenario": scenario})
    assert r.status_code == 422 and "outside" in r.json()["error"], r.text


# ------------------------------------------------------------------------------------- junk bodies, in process
@pytest.fixture(scope="module")
def local(registry):
    c = TestClient(create_api_app(registry), raise_server_exceptions=False)
    c.headers["X-CSRF-Token"] = c.get("/auth/me").json()["csrf"]
    return c


scalars = (st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | st.integers()
           | st.text(max_size=8))
json_values = st.recursive(scalars,
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                       max_size=4), max_leaves=12)
grid_like = st.fixed_dictionaries({"common": json_values, "radials": st.lists(
    st.dictionaries(st.sampled_from(["powerLines", "loads", "transformer", "powerProfiles", "photovoltaics"]),
                    json_values, max_size=3), max_size=2)})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode())
       | grid_like.map(lambda v: json.dumps(v).encode()))
def test_junk_grids_get_4xx(local, body):
    r = local.post("/se/simulation", content=body)
    assert 400 <= r.status_code < 500 or r.status_code == 201, (r.status_code, r.text)
    assert "error" in r.json() or r.status_code == 201


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=json_values | st.dictionaries(st.sampled_from(["sim_duration_in_hours", "duration", "threshold_low",
                                                           "thresholdHigh", "step_min", "start", "load_scale"]),
                                          json_values, max_size=4))
def test_junk_runs_and_studies_get_4xx(local, body):
    r = local.put("/se/commands/run/nope", json=body)
    assert r.status_code in (404, 422), (r.status_code, r.text)
    r = local.post("/api/studies", json=body if not isinstance(body, dict) else {"study": json.dumps(body)})
    assert 400 <= r.status_code < 500, (r.status_code, r.text)


def test_the_command_refuses_an_open_api_beyond_loopback(capsys):
    from s4g.cli import main

    assert main(["api", "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "--users" in capsys.readouterr().err
    assert main(["api", "--port", "0", "--tls-cert", "x.pem"]) == 2


def test_roles_bearer_tokens_and_the_audit_log(tmp_path):
    from cosim.security.webauth import add_user

    users = tmp_path / "users.json"
    add_user(users, "dso", "engineer", "dso-pw")
    add_user(users, "look", "viewer", "look-pw")
    reg = Registry(folder=tmp_path / "api")
    with HttpServer(create_api_app(reg, users=str(users), audit_log=tmp_path / "audit.jsonl")) as srv:
        assert httpx.get(f"{srv.url}/se/simulation").status_code == 401
        assert httpx.get(f"{srv.url}/").status_code == 200  # the page loads, then asks for a login

        def token(user, pw):
            r = httpx.post(f"{srv.url}/auth/login", json={"user": user, "password": pw})
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['token']}"}

        viewer, engineer = token("look", "look-pw"), token("dso", "dso-pw")
        assert httpx.get(f"{srv.url}/se/simulation", headers=viewer).json() == []
        refused = httpx.post(f"{srv.url}/se/simulation", content=FUR.read_bytes(), headers=viewer)
        assert refused.status_code == 403 and "engineer" in refused.json()["error"]
        r = httpx.post(f"{srv.url}/se/simulation", content=FUR.read_bytes(), headers=engineer)
        assert r.status_code == 201, r.text  # a bearer token needs no CSRF token
    reg.close()
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["user"] == "look" and e["result"].startswith("refused") and e["action"] == "POST /se/simulation"
               for e in audit)


def test_the_command_serves_https_with_a_pki_certificate(tmp_path):
    import subprocess
    import sys

    from devices import pki

    d = tmp_path / "pki"
    pki.init(d)
    pki.issue(d, "api", "web", hosts=["127.0.0.1"])
    proc = subprocess.Popen([sys.executable, "-m", "s4g", "api", "--port", "0", "--data", str(tmp_path / "data"),
                             "--tls-cert", str(d / "certs" / "api.pem"), "--tls-key", str(d / "keys" / "api.key")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    try:
        url = proc.stdout.readline().split()[2].rstrip("/")
        assert url.startswith("https://127.0.0.1:"), url
        ca = str(d / "ca.pem")
        r = httpx.get(url + "/", verify=ca, timeout=30)
        assert r.status_code == 200 and "S4G Professional" in r.text
        assert httpx.get(url + "/static/plotly.min.js", verify=ca, timeout=30).status_code == 200
        r = httpx.get(url + "/api/scenarios", verify=ca, timeout=30)
        assert r.json() == sorted(p.name for p in (REPO / "scenarios").glob("*.yaml"))
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the PKI does not get in
            httpx.get(url + "/api/scenarios", timeout=30)
    finally:
        proc.terminate()
        proc.wait(20)


def test_a_cancelled_study_keeps_what_finished(client, registry):
    r = client.post("/api/studies", json={"study": (STUDY_DATA / "tiny_study.yaml").read_text()})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert client.post(f"/api/studies/{sid}/cancel").status_code == 200
    assert registry.study(sid).wait(300)
    status = client.get(f"/api/studies/{sid}").json()
    assert status["state"] == "interrupted" and status["done"] < 4  # 4 planned; the running one may finish
    rows = client.get(f"/api/studies/{sid}/table").json()
    assert len(rows) == status["done"] + status["cancelled"]  # a variant the cancel ended is a row "cancelled"
    assert sum(row["status"] == "cancelled" for row in rows) == status["cancelled"]


def test_profiles_of_the_document_and_pv(client, registry):
    doc = json.loads(FUR.read_text())
    radial = doc["radials"][0]
    radial["powerProfiles"] = [{"id": "off", "items": [0.0], "interval": 1, "normalized": True}]
    for load in radial["loads"]:
        load["power_profile_id"] = "off"
    gid = client.post("/se/simulation", content=json.dumps(doc).encode()).json()
    start = "2019-06-15T12:00:00+02:00"  # midday: the PV produces
    idle = _run(client, registry, gid, sim_duration_in_hours=1, step_min=30, start=start, pv=False)
    # nothing draws and nothing produces: no losses, every bus at the source's voltage
    assert idle["losses"]["circuit_total_losses"] == pytest.approx(0.0, abs=1e-9)
    v = [p[m] for node in idle["voltages"].values() for p in node.values() for m in ("min", "max")]
    assert max(v) - min(v) < 1e-6
    sunny = _run(client, registry, gid, sim_duration_in_hours=1, step_min=30, start=start, pv=True)
    pv_bus = next(n for n in sunny["nodes"] if n["bus"] == "consumer_4006773")
    assert pv_bus["v_max_pu"] > max(v) + 1e-4  # the PV's export raises its bus above the source
    assert sunny["losses"]["circuit_total_losses"] > 0


def test_an_uploaded_scenario_runs_with_data_of_the_scenario_folder(client, registry):
    # its grid path is relative: it resolves in the first scenario folder (here tests/study_data), not the job's
    scenario = (STUDY_DATA / "tiny.yaml").read_text()
    study = ("name: uploaded\nscenario: {path: mine.yaml}\nuntil: 10min\n"
             "axes: [{name: strategy, key: variant, values: [idle]}]\nkpis: [total.v_max_pu]\n")
    r = client.post("/api/studies", json={"study": study, "scenario": scenario})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert registry.study(sid).wait(300)
    rows = client.get(f"/api/studies/{sid}/table").json()
    assert [row["status"] for row in rows] == ["complete"] and 0.9 < rows[0]["total.v_max_pu"] < 1.1


# ------------------------------------------------------------------------------------- studies on a LocalCluster
@pytest.fixture(scope="module")
def dask_api(tmp_path_factory):
    """An API whose studies run on one LocalCluster of one worker process, shared by this module's tests."""
    reg = Registry(folder=tmp_path_factory.mktemp("api-dask"), scenario_roots=[STUDY_DATA, REPO / "scenarios"],
                   limits=Limits(study_workers=1))
    with HttpServer(create_api_app(reg)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        c.headers["X-CSRF-Token"] = c.get("/auth/me").json()["csrf"]
        yield c, reg
    reg.close()


def _follow(client, job, until=lambda s: False):
    """Poll a study's status while it runs (paced by waiting on its thread), until it ends or ``until``."""
    seen = []
    while True:
        seen.append(client.get(f"/api/studies/{job.id}").json())
        if until(seen[-1]) or job.wait(0.1):
            seen.append(client.get(f"/api/studies/{job.id}").json())
            return seen


def test_a_study_on_a_local_cluster_through_the_api(dask_api):
    client, reg = dask_api
    study = (STUDY_DATA / "tiny_study.yaml").read_text().replace("values: [3, 7]", "values: [3]")
    r = client.post("/api/studies", json={"study": study + "until: 10min\n"})
    assert r.status_code == 201, r.text
    job = reg.study(r.json()["id"])
    seen = _follow(client, job)
    info = json.loads((job.out / "study.json").read_text())
    assert info["workers"] == 1 and info["scheduler"].startswith("tcp://127.0.0.1:")  # ran on the cluster
    from distributed import Client

    with Client(reg._cluster) as dask_client:  # the workers run quiet: no 10 ms stack sampler beside the variant
        assert set(dask_client.run(dask.config.get, "distributed.worker.profile.enabled").values()) == {False}
    progress = [s["progress"] for s in seen]
    assert progress == sorted(progress) and progress[-1] == 100  # never goes back
    assert seen[-1]["state"] == "complete" and seen[-1]["done"] == 2
    rows = client.get(f"/api/studies/{job.id}/table").json()
    assert {(row["capacity_kwh"], row["pv_kwp"]) for row in rows} == {(20, 3), (100, 3)}
    assert all(0.9 < row["total.v_max_pu"] < 1.1 and row["status"] == "complete" for row in rows)
    parquet = pd.read_parquet(io.BytesIO(client.get(f"/api/studies/{job.id}/table?format=parquet").content))
    assert sorted(parquet["total.v_max_pu"]) == pytest.approx(sorted(r["total.v_max_pu"] for r in rows))


def test_cancel_a_study_on_a_local_cluster_through_the_api(dask_api):
    client, reg = dask_api
    # one worker: a 20-minute variant, then a two-day one (576 steps) that the cancel ends while it runs
    study = ("name: long\nscenario: {path: tiny.yaml}\n"
             "axes: [{name: days, key: duration, values: [1200, 172800]}]\nkpis: [total.v_max_pu]\n")
    r = client.post("/api/studies", json={"study": study})
    assert r.status_code == 201, r.text
    job = reg.study(r.json()["id"])
    _follow(client, job, until=lambda s: s["done"] >= 1)
    assert client.post(f"/api/studies/{job.id}/cancel").status_code == 200
    assert job.wait(120)
    status = client.get(f"/api/studies/{job.id}").json()
    assert status["state"] == "interrupted" and status["done"] == 1 and status["cancelled"] == 1, status
    rows = {row["days"]: row for row in client.get(f"/api/studies/{job.id}/table").json()}
    assert rows[1200]["status"] == "complete" and rows[172800]["status"] == "cancelled"
    assert job.runner.results[rows[172800]["variant"]]["steps"] < 576


def test_per_user_quota_answers_429_with_retry_after(tmp_path):
    from cosim.security.webauth import add_user

    users = tmp_path / "users.json"
    add_user(users, "ann", "engineer", "ann-pw")
    add_user(users, "bob", "engineer", "bob-pw")
    reg = Registry(folder=tmp_path / "api", scenario_roots=[STUDY_DATA],
                   limits=Limits(max_running_jobs_per_user=1, max_running_simulations=3))
    try:
        with HttpServer(create_api_app(reg, users=str(users))) as srv, httpx.Client(base_url=srv.url,
                                                                                     timeout=60) as c:
            def token(user):
                r = c.post("/auth/login", json={"user": user, "password": f"{user}-pw"})
                return {"Authorization": f"Bearer {r.json()['token']}"}

            ann, bob = token("ann"), token("bob")
            grids = [c.post("/se/simulation", content=FUR.read_bytes(), headers=ann).json() for _ in range(3)]
            year = {"duration": {"year": 1}}
            assert c.put(f"/se/commands/run/{grids[0]}", json=year, headers=ann).status_code == 202
            refused = c.put(f"/se/commands/run/{grids[1]}", json=year, headers=ann)
            assert refused.status_code == 429 and "per-user limit of 1" in refused.json()["error"]
            assert 1 <= int(refused.headers["Retry-After"]) <= 3600
            study = c.post("/api/studies", json={"study": (STUDY_DATA / "tiny_study.yaml").read_text()},
                           headers=ann)
            assert study.status_code == 429 and "'ann'" in study.json()["error"]  # studies count too
            assert reg.grid(grids[1]).state == "created" and not reg.studies  # nothing started
            assert c.put(f"/se/commands/run/{grids[1]}", json=year, headers=bob).status_code == 202  # bob's own
            for gid in grids[:2]:
                assert c.put(f"/se/commands/abort/{gid}", headers=ann).status_code == 200
            assert c.put(f"/se/commands/run/{grids[2]}", json={"sim_duration_in_hours": 1},
                         headers=ann).status_code == 202  # the quota frees up when a job ends
            assert reg.grid(grids[2]).wait(60) and reg.grid(grids[2]).state == "done"
    finally:
        reg.close()
