"""Hostile and clumsy scenario files (issue 12): each is exit code 2 with file, line, key path and expectation.

Before the fix each of these ended in a traceback (binary or Latin-1 bytes, 5000-deep nesting, 2019-02-30, a
5000-digit integer) or was accepted (a duration of 10^11 days, a start in 9999, ``.inf``, a reversed voltage
band, ``?revrt_s=10``, a repeated key, bench limits for a device that does not exist, a negative EV battery,
``name: ../../outside``). ``s4g validate`` and ``s4g bench check`` read the file the same way.
"""

import copy
import math
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.paths import check_name
from cosim.scenario import ScenarioError, load
from devices import yaml_file
from devices.libal.serve import DEFAULT_CONFIG as LIBAL_CONFIG
from s4g.cli import main

REPO = Path(__file__).resolve().parents[2]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"

BASE = {
    "name": "t", "start": "2019-06-15T00:00:00+02:00", "duration": "1h", "step": "1min",
    "grid": {"source": "dsf-se", "path": str(FUR), "mode": "unbalanced"},
    "profiles": {"pv": {"source": "s4g-pv", "column": "fur_denmark"}},
    "sites": [{"id": "h1", "grid_load": "consumer_4006773", "load": {"column": "profile_1"}}],
    "devices": [{"id": "d1", "family": "pv_battery", "site": "h1",
                 "config": {"pv_kwp": 4, "ac_max_w": 5000,
                            "battery": {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400}}}],
    "controllers": [{"id": "sc", "kind": "self_consumption"}],
}
COMMANDS = [["validate"], ["bench", "check"]]


def scenario(tmp_path: Path, change=None, text: str | None = None) -> Path:
    data = copy.deepcopy(BASE)
    if change:
        change(data)
    p = tmp_path / "s.yaml"
    p.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return p


def refused(path: Path, capsys, command=("validate",)) -> str:
    """Exit code 2, no traceback, the file named; returns what the user read."""
    assert main([*command, str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(path) in err, err
    return err


# -- the file itself ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", COMMANDS)
def test_binary_file(tmp_path, capsys, command):
    p = tmp_path / "s.yaml"
    p.write_bytes(b"\x00\x01\xff\xfe\x89PNG\r\n\x1a\n binary")
    assert "not UTF-8 text (byte 0xff)" in refused(p, capsys, command)


@pytest.mark.parametrize("command", COMMANDS)
def test_latin1_file_names_the_line(tmp_path, capsys, command):
    p = tmp_path / "s.yaml"
    p.write_bytes(b"name: t\ndescription: caf\xe9 du port\n")
    assert f"{p}:2: <top>: not UTF-8 text (byte 0xe9)" in refused(p, capsys, command)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("nest", ["[" * 5000 + "]" * 5000, "{a: " * 5000 + "1" + "}" * 5000,
                                  "\n  " + "- " * 5000 + "x"])  # block sequences, compact form
def test_5000_deep_nesting(tmp_path, capsys, command, nest):
    p = scenario(tmp_path, text=f"name: t\ndescription: {nest}\n")
    assert "nested deeper than the 64 levels allowed" in refused(p, capsys, command)


def test_duplicate_keys_are_refused_with_both_lines(tmp_path, capsys):
    text = yaml.safe_dump(BASE, sort_keys=False).replace("duration: 1h\n", "duration: 1h\nseed: 1\nduration: 2h\n")
    err = refused(scenario(tmp_path, text=text), capsys)
    assert ":5: duration: duplicate key (first on line 3)" in err
    # a merge key (<<) overriding a merged value is not a duplicate
    assert yaml_file.parse("x: &b {p: 1, q: 2}\ny:\n  <<: *b\n  p: 3\n").data["y"] == {"p": 3, "q": 2}


@pytest.mark.parametrize("text,message", [
    ("name: t\nstart: 2019-02-30T00:00:00+02:00\n", "start: cannot read '2019-02-30T00:00:00+02:00': day is out"),
    ("name: t\nseed: " + "1" * 5000 + "\n", "seed: cannot read '1111"),
    ("name: \"a\x01\"\n", "character #x0001 is not allowed"),
    ("a: &a [*a]\n", "refers to a value that contains it"),
    ("\n".join(["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
               + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 10)]),
     "more than 200000 values once its aliases"),
    ("---\nname: t\n---\nname: u\n", "expected a single document"),
])
def test_unreadable_values(tmp_path, capsys, text, message):
    assert message in refused(scenario(tmp_path, text=text), capsys)


# -- accepted but absurd values ------------------------------------------------------------------------------------
def _device(data, **changes):
    data["devices"][0].update(changes)


CASES = {
    "huge duration": (lambda d: d.update(duration="100000000000d"),
                      "duration: a duration is at most 3650d (ten years) (found: '100000000000d')"),
    "negative step": (lambda d: d.update(step="-1min"), "step: expected a duration >= 0, not a negative one"),
    "start in 9999": (lambda d: d.update(start="9999-06-15T00:00:00+02:00"), "start: expected a start from 1980 to 2199"),
    "ends after 2200": (lambda d: d.update(start="2199-12-31T00:00:00+00:00", duration="2d"),
                        "duration: expected the run to end by 2200-01-01"),
    "infinite pv_kwp": (lambda d: d["devices"][0]["config"].update(pv_kwp=math.inf),
                        "devices[0].config.pv_kwp: expected a finite number (found .inf)"),
    "nan price": (lambda d: d["profiles"].update(price={"kind": "fixed", "import_eur_per_kwh": math.nan}),
                  "profiles.price.import_eur_per_kwh: expected a finite number (found .nan)"),
    "reversed band": (lambda d: d.update(kpis={"v_band_pu": [1.1, 0.9]}),
                      "kpis.v_band_pu: expected [low, high] in pu with 0 < low < high"),
    "address query typo": (lambda d: _device(d, family="fronius", config={},
                                             address="sunspec+tcp://127.0.0.1:1502/1?revrt_s=10"),
                           "devices[0].address: unknown address query key(s) revrt_s; sunspec+tcp:// takes revert_s"),
    "query on a virtual device": (lambda d: _device(d, family="fronius", config={}, address="sunspec+tcp://?rvrt=1"),
                                  "unknown address query key(s) rvrt"),
    "driver parses the address": (lambda d: _device(d, family="fronius", config={},
                                                    address="sunspec+tcp://127.0.0.1:1502/1?revert_s=70000"),
                                  "devices[0].address: sunspec+tcp://127.0.0.1:1502/1?revert_s=70000: revert_s must be"),
    "modbus unit id 999": (lambda d: _device(d, family="libal", config=LIBAL_CONFIG,
                                             address="libal://127.0.0.1:5020/999?can=127.0.0.1:29536"),
                           "devices[0].address: 'libal://127.0.0.1:5020/999?can=127.0.0.1:29536': unit id '999' must "
                           "be an integer 1..247"),
    "sunspec unit id 999": (lambda d: _device(d, family="fronius", config={},
                                              address="sunspec+tcp://127.0.0.1:1502/999"),
                            "devices[0].address: sunspec+tcp://127.0.0.1:1502/999: unit id 999 outside 1..247"),
    "bench limits for an unknown device": (
        lambda d: d.update(bench={"limits": {"ghost": {"p_max_w": 1}, "d1": {"p_max_w": 1}, "spook": {}},
                                  "drills": [{"at": "1min", "device": "nobody", "fault": "controller_silent"}]}),
        "bench.limits.ghost: expected the id of a device in 'devices' (found: 'ghost')"),
    "negative EV capacity": (
        lambda d: (d["devices"].append({"id": "wb", "family": "wallbox", "site": "h1"}),
                   d.update(ev_fleets=[{"id": "f", "wallboxes": ["wb"],
                                        "ev_types": [{"capacity_wh": -40000, "p_max_w": 7400, "wh_per_km": 150}]}])),
        "ev_fleets[0].ev_types[0].capacity_wh: Input should be greater than 0 (found: -40000)"),
    "EV group at 25 h": (
        lambda d: (d["devices"].append({"id": "wb", "family": "wallbox", "site": "h1"}),
                   d.update(ev_fleets=[{"id": "f", "wallboxes": ["wb"], "groups": [
                       {"share": 1, "arrival_h": 25, "arrival_sd_h": 1, "dwell_h": 2, "dwell_sd_h": 1}]}])),
        "ev_fleets[0].groups[0].arrival_h"),
    "tariff at 25:00": (lambda d: d["profiles"].update(price={"kind": "tou", "periods": [
        {"from": "25:00", "to": "99:99", "import_eur_per_kwh": 0.3}]}), "profiles.price.periods[0].from"),
    "negative seed": (lambda d: d.update(seed=-1), "seed: Input should be greater than or equal to 0"),
    "name escapes runs/": (lambda d: d.update(name="../../outside"), "name: expected a name of 1..100 characters"),
    "device id escapes io/": (lambda d: (_device(d, id="../x"), d["controllers"][0].update(devices=["../x"])),
                              "devices[0].id: expected a name"),
    "variant name escapes the run directory": (lambda d: d.update(variants={"../../v": {"seed": 2}}),
                                               "variants.../../v: expected a name"),
}


@pytest.mark.parametrize("case", CASES)
def test_absurd_values_are_refused_at_validate(tmp_path, capsys, case):
    change, message = CASES[case]
    err = refused(scenario(tmp_path, change), capsys)
    assert message in err, err
    if case == "bench limits for an unknown device":  # all of them at once, not one per bench run
        assert "bench.limits.spook" in err and "bench.drills[0].device" in err and "bench.limits.d1" not in err


def test_the_same_values_within_bounds_pass(tmp_path):
    def f(d):
        _device(d, family="fronius", config={}, address="sunspec+tcp://127.0.0.1:1502/1?revert_s=10")
        d.update(kpis={"v_band_pu": [0.9, 1.1]}, start="2199-12-30T00:00:00+00:00", duration="1d", seed=2**63,
                 name="LV4.101 Load 1 (study)")
        d["profiles"].update(price={"kind": "tou", "periods": [{"from": "00:00", "to": "24:00",
                                                                "import_eur_per_kwh": 0.3}]})
    sc = load(scenario(tmp_path, f)).scenario
    assert sc.duration == 86400 and sc.name == "LV4.101 Load 1 (study)"


def test_a_name_never_leaves_runs(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = scenario(tmp_path, lambda d: d.update(name="../../outside"))
    assert main(["run", str(p), "--no-progress", "--no-report"]) == 2
    assert not (tmp_path.parent.parent / "outside").exists() and not list(tmp_path.parent.parent.glob("outside-*"))
    assert not (tmp_path / "runs").exists()


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120))
def test_an_accepted_name_is_one_path_component(name):
    try:
        check_name(name)
    except ValueError:
        return
    runs = Path("/srv/runs")
    run_dir = runs / f"{name}-20240101-000000"
    assert run_dir.parent == runs and ".." not in run_dir.parts and "\x00" not in name


# -- fuzz: any file, any value anywhere: a ScenarioError or a scenario, nothing else -----------------------------
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_bytes_give_a_scenario_error(tmp_path, raw):
    p = tmp_path / "fuzz.yaml"
    p.write_bytes(raw)
    with pytest.raises(ScenarioError):
        load(p)


VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(["1d", "-1h", "0", "1e9d", ".inf", "../x", "sunspec+tcp://h/1?x=1", "9999-01-01"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*prefix, i))


PATHS = [p for p in _paths(BASE) if p]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(PATHS), VALUES)
def test_any_value_at_any_key_is_a_scenario_or_a_scenario_error(tmp_path, loc, value):
    data = copy.deepcopy(BASE)
    node = data
    for part in loc[:-1]:
        node = node[part]
    node[loc[-1]] = value
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    try:
        load(p)
    except ScenarioError as exc:
        assert str(p) in str(exc) and exc.problems


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_the_yaml_reader_raises_only_its_own_error(text):
    try:
        yaml_file.parse(text)
    except yaml_file.YamlInputError as exc:
        assert exc.problems and all(p.message for p in exc.problems)
