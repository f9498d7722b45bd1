"""Study files: validation errors name file, line, key path, expected and found; key paths patch documents;
sampling plans are stratified and reproducible; `s4g schema --study`."""

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from cosim.scenario import ScenarioError
from cosim.study import keypath, load
from cosim.study.sampling import Domain, sample, strata, unit_lhs
from s4g import cli

DATA = Path(__file__).parent / "study_data"
TINY = DATA / "tiny.yaml"


def study_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text.replace("TINY", str(TINY)))
    return path


def problems(path: Path) -> list:
    with pytest.raises(ScenarioError) as info:
        load(path)
    return info.value.problems


def test_the_example_study_loads():
    ls = load(DATA / "tiny_study.yaml")
    assert [a.name for a in ls.study.axes] == ["capacity_kwh", "pv_kwp"]
    assert ls.study.kept_kpis[0] == "grid.v_minutes_outside_10pct"


def test_unknown_key_and_wrong_type_name_line_and_path(tmp_path):
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n  - name: a\n    key: seed\n"
                                "    values: [1, 2]\n    colour: red\nplan: {kind: lhs}\n")
    found = {p.key_path: p for p in problems(path)}
    assert found["axes[0].colour"].message == "unknown key" and found["axes[0].colour"].line == 7
    assert "samples" in found["plan"].message and found["plan"].line == 8
    assert str(path) in str(ScenarioError(path, list(found.values())))


def test_a_key_path_that_matches_nothing_is_an_error_at_its_line(tmp_path):
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n"
                                "  - {name: c, key: 'devices[id=libl].config.battery.capacity_wh', values: [1]}\n")
    [p] = problems(path)
    assert p.key_path == "axes[0].key" and p.line == 4
    assert "no element of devices matches [id=libl]" in p.message and p.found == "devices[id=libl].config.battery.capacity_wh"


def test_bad_grammar_range_search_and_variant_names(tmp_path):
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n"
                                "  - {name: a, key: 'devices[id=x', values: [1]}\n")
    assert "expected key, key[N]" in problems(path)[0].message
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n"
                                "  - {name: a, key: seed, range: {low: 5, high: 1}}\n")
    assert "low < high" in problems(path)[0].message
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n  - {name: a, key: seed, values: [1]}\n"
                                "search: {axis: b, low: 0, high: 1, tolerance: 0.1, meets: [t]}\n")
    assert "search.axis 'b' is not an axis name" in problems(path)[0].message
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n"
                                "  - {name: c, key: variant, values: [idle, fancy]}\n")
    [p] = problems(path)
    assert p.key_path == "axes[0].values[1]" and "idle" in p.message and p.found == "fancy"


def test_missing_scenario_and_unreadable_files(tmp_path):
    path = study_file(tmp_path, "name: s\nscenario: {path: nowhere.yaml}\n")
    [p] = problems(path)
    assert p.key_path == "scenario.path" and "not found" in p.message
    assert "cannot read" in problems(tmp_path / "absent.yaml")[0].message
    bad = tmp_path / "dup.yaml"
    bad.write_text("name: a\nname: b\n")
    assert problems(bad)[0].line == 2


def test_keypath_patching_selects_by_field_index_and_star():
    doc = {"devices": [{"id": "a", "family": "pv", "config": {"pv_kwp": 1}},
                       {"id": "b", "family": "pv", "config": {"pv_kwp": 2}},
                       {"id": "c", "family": "bat", "config": {}}], "seed": 0}
    out = keypath.patched(doc, {"devices[family=pv].config.pv_kwp": 9, "devices[2].config.soh_init": 0.9, "seed": 4})
    assert [d["config"].get("pv_kwp") for d in out["devices"]] == [9, 9, None]
    assert out["devices"][2]["config"]["soh_init"] == 0.9 and out["seed"] == 4
    assert doc["devices"][0]["config"]["pv_kwp"] == 1  # the original is untouched
    locs = keypath.assign(out, "devices[*].id", "z")
    assert locs == [("devices", 0, "id"), ("devices", 1, "id"), ("devices", 2, "id")]
    assert keypath.targets({"sites": [{"id": "LV4.101 Load 1", "x": 1}]}, "sites[id=LV4.101 Load 1].x")[0][2] == \
        ("sites", 0, "x")
    for bad, msg in [("devices[id=q].x", "no element"), ("devices[7].x", "no index 7"), ("seed.x", "not a mapping"),
                     ("devices.x", "not a mapping"), ("seed[0]", "not a list")]:
        with pytest.raises(keypath.KeyPathError, match=msg):
            keypath.assign(out, bad, 1)


@given(st.lists(st.sampled_from(["a", "b_c", "x-y"]), min_size=1, max_size=4), st.integers(0, 5), st.integers())
def test_keypath_assign_then_read_back(keys, index, value):
    doc: dict = {}
    keypath.assign(doc, ".".join(keys), value)
    node = doc
    for k in keys:
        node = node[k]
    assert node == value
    lst = {"l": [{"v": i} for i in range(6)]}
    keypath.assign(lst, f"l[{index}].v", value)
    assert lst["l"][index]["v"] == value and sum(1 for e in lst["l"] if e["v"] == value) >= 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.integers(1, 5), st.integers(0, 2**32))
def test_latin_hypercube_has_one_point_per_stratum_per_axis(n, dims, seed):
    u = unit_lhs(n, dims, seed)
    assert u.shape == (n, dims) and ((u >= 0) & (u < 1)).all()
    for j in range(dims):
        assert sorted(np.floor(u[:, j] * n).astype(int)) == list(range(n))
    doms = [Domain("x", low=10.0, high=20.0), Domain("k", values=tuple(range(n)))]
    pts = sample(doms, "lhs", n, seed)
    assert sorted(strata([p["x"] for p in pts], 10.0, 20.0, n)) == list(range(n))
    assert sorted(p["k"] for p in pts) == list(range(n))  # n discrete values: each taken once


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["lhs", "random"]), st.integers(1, 30), st.integers(0, 2**32))
def test_plans_are_reproducible_and_seed_dependent(plan, n, seed):
    doms = [Domain("x", low=0.0, high=1.0), Domain("i", low=0, high=9, integer=True)]
    a, b = sample(doms, plan, n, seed), sample(doms, plan, n, seed)
    assert a == b
    assert all(isinstance(p["i"], int) and 0 <= p["i"] <= 9 and 0 <= p["x"] < 1 for p in a)
    if n >= 3:
        assert sample(doms, plan, n, seed + 1) != a


def test_full_grid_is_the_product_in_order():
    pts = sample([Domain("a", values=(1, 2)), Domain("b", low=0.0, high=1.0, num=3)], "grid")
    assert pts == [{"a": 1, "b": 0.0}, {"a": 1, "b": 0.5}, {"a": 1, "b": 1.0},
                   {"a": 2, "b": 0.0}, {"a": 2, "b": 0.5}, {"a": 2, "b": 1.0}]


def test_schema_study_option(capsys):
    assert cli.main(["schema", "--study"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "S4G study" and "axes" in schema["properties"]


def test_cli_refuses_bad_workers_and_scheduler(capsys):
    for argv in (["study", "x.yaml", "--workers", "-1"], ["study", "x.yaml", "--scheduler", "http://h"],
                 ["study", "x.yaml", "--workers", "2", "--scheduler", "tcp://h:8786"]):
        with pytest.raises(SystemExit) as info:
            cli.main(argv)
        assert info.value.code == 2
    assert cli.main(["study", str(Path("nowhere.yaml"))]) == 2


def test_null_removes_list_elements_and_cases_patch_several_keys(tmp_path):
    doc = {"devices": [{"id": "a"}, {"id": "b"}, {"id": "a"}], "controllers": [{"id": "c", "devices": ["b"]}]}
    out = keypath.patched(doc, {"devices[id=a]": None, "controllers[0].devices": ["b", "x"]})
    assert out["devices"] == [{"id": "b"}] and out["controllers"][0]["devices"] == ["b", "x"]
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n  - name: case\n    cases:\n"
                                "      none: {'devices[id=libal]': null, controllers: []}\n"
                                "      small: {'devices[id=libal].config.battery.capacity_wh': 20000}\n"
                                "      typo: {'devices[id=nope].bus': x}\n")
    [p] = problems(path)
    assert p.key_path == "axes[0].cases.typo.devices[id=nope].bus" and p.line == 8
    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n  - name: case\n    key: seed\n"
                                "    cases: {a: {seed: 1}}\n")
    assert "takes no 'key'" in problems(path)[0].message


def test_cases_axis_documents(tmp_path):
    from cosim.study.base import BaseDocument
    from cosim.study.variants import Variant, document

    path = study_file(tmp_path, "name: s\nscenario: {path: TINY}\naxes:\n  - name: case\n    cases:\n"
                                "      none: {'devices[id=libal]': null, controllers: []}\n"
                                "      small: {'devices[id=libal].config.battery.capacity_wh': 20000}\n"
                                "  - {name: kwp, key: ['devices[id=pv1].config.pv_kwp', 'devices[id=pv1].config.ac_max_w'],"
                                " values: [4], scale: [1, 1000]}\nuntil: 10min\n")
    ls = load(path)
    base = BaseDocument.read(ls.scenario_path)
    none = document(ls, base, Variant.make({"case": "none", "kwp": 4}))
    small = document(ls, base, Variant.make({"case": "small", "kwp": 4}))
    assert [d["id"] for d in none["devices"]] == ["pv1"] and none["controllers"] == []
    assert small["devices"][1]["config"]["battery"]["capacity_wh"] == 20000
    assert small["devices"][0]["config"] == {"pv_kwp": 4, "ac_max_w": 4000} and small["duration"] == 600
