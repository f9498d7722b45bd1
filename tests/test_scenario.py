"""Scenario files: valid files load; every kind of mistake gives one clear message and exit code 2."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from s4g import cli
from cosim.scenario import ScenarioError, json_schema, load, parse_duration

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"

BASE = f"""
name: t
start: 2019-06-15T00:00:00+02:00
duration: 1h
step: 1min
grid:
  source: dsf-se
  path: {FUR}
  mode: unbalanced
profiles:
  pv: {{source: s4g-pv, column: fur_denmark}}
sites:
  - {{id: h1, grid_load: consumer_4006773, load: {{column: profile_1}}}}
devices:
  - id: d1
    family: pv_battery
    site: h1
    config:
      pv_kwp: 4
      ac_max_w: 5000
      battery: {{capacity_wh: 4500, p_charge_max_w: 2400, p_discharge_max_w: 2400}}
controllers:
  - {{id: sc, kind: self_consumption}}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def mutate(tmp_path, fn):
    data = yaml.safe_load(BASE)
    fn(data)
    return write(tmp_path, yaml.safe_dump(data, sort_keys=False))


def test_valid_scenario_loads_and_resolves_paths(tmp_path):
    loaded = load(write(tmp_path, BASE))
    sc = loaded.scenario
    assert sc.duration == 3600 and sc.step == 60 and sc.steps == 60
    assert sc.grid.path == FUR
    assert sc.devices[0].address == "sim://"
    assert len(loaded.sha256) == 64


def test_the_pilot_scenario_validates():
    sc = load(REPO / "scenarios" / "fur_skive.yaml").scenario
    assert len(sc.sites) == 28 and sc.step == 60 and sc.duration == 86400  # 27 households + Skive


@pytest.mark.parametrize("text,seconds", [("1d", 86400), ("15min", 900), ("90s", 90), ("2h", 7200), (60, 60),
                                          ("1w", 604800), ("0.5h", 1800)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["1 fortnight", "-1h", "0s", "0.5s", True, None, "h"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def _problem(tmp_path, path):
    with pytest.raises(ScenarioError) as info:
        load(path)
    text = str(info.value)
    assert str(path) in text
    return info.value, text


def test_wrong_type_names_key_path_expected_and_found(tmp_path):
    p = mutate(tmp_path, lambda d: d["devices"][0]["config"]["battery"].update(capacity_wh="lots"))
    err, text = _problem(tmp_path, p)
    assert "devices[0].config.battery.capacity_wh" in text
    assert "valid number" in text and "'lots'" in text
    # the line number points at the offending value
    line = err.problems[0].line
    assert "capacity_wh" in p.read_text().splitlines()[line - 1]


def test_unknown_key_is_an_error(tmp_path):
    p = mutate(tmp_path, lambda d: d["grid"].update(solvr="fast"))
    _, text = _problem(tmp_path, p)
    assert "grid.solvr: unknown key" in text


def test_missing_grid_file(tmp_path):
    p = mutate(tmp_path, lambda d: d["grid"].update(path="nowhere/feeder.json"))
    _, text = _problem(tmp_path, p)
    assert "grid.path: grid file not found" in text and "nowhere" in text


def test_step_must_divide_duration(tmp_path):
    p = mutate(tmp_path, lambda d: d.update(duration="1h", step="7min"))
    _, text = _problem(tmp_path, p)
    assert "must divide duration" in text


def test_naive_start_and_unknown_family_and_scheme_all_reported(tmp_path):
    def f(d):
        d["start"] = "2019-06-15T00:00:00"
        d["devices"][0]["family"] = "toaster"
        d["devices"][0]["address"] = "carrier-pigeon://x"
    err, text = _problem(tmp_path, mutate(tmp_path, f))
    assert "start" in text and "timezone" in text
    assert "devices[0].family" in text and "pv_battery" in text
    assert "devices[0].address" in text and "sim" in text
    assert len(err.problems) == 3


def test_dangling_references(tmp_path):
    def f(d):
        d["devices"][0]["site"] = "nope"
        d["controllers"][0]["devices"] = ["ghost"]
    _, text = _problem(tmp_path, mutate(tmp_path, f))
    assert "devices[0].site" in text and "'nope'" in text
    assert "controllers[0].devices[0]" in text and "'ghost'" in text


def test_duplicate_ids(tmp_path):
    def f(d):
        d["sites"].append(dict(d["sites"][0]))
    _, text = _problem(tmp_path, mutate(tmp_path, f))
    assert "sites[1].id: duplicate id" in text


def test_not_yaml_and_not_a_mapping(tmp_path):
    _, text = _problem(tmp_path, write(tmp_path, "name: [unclosed\n"))
    assert "not valid YAML" in text
    _, text = _problem(tmp_path, write(tmp_path, "- just a list\n"))
    assert "expected a mapping" in text


def test_x_keys_hold_anchors(tmp_path):
    text = BASE.replace("devices:\n", "x-batt: &b {capacity_wh: 4500, p_charge_max_w: 2400, p_discharge_max_w: 2400}\ndevices:\n")
    text = text.replace("battery: {capacity_wh: 4500, p_charge_max_w: 2400, p_discharge_max_w: 2400}", "battery: *b")
    assert load(write(tmp_path, text)).scenario.devices[0].config["battery"]["capacity_wh"] == 4500


@pytest.mark.parametrize("fn", [
    lambda d: d["devices"][0]["config"]["battery"].update(capacity_wh="lots"),
    lambda d: d["grid"].update(solvr="fast"),
    lambda d: d["grid"].update(path="nowhere.json"),
    lambda d: d.update(step="7min"),
])
def test_cli_exit_code_2_without_traceback(tmp_path, fn, capsys):
    p = mutate(tmp_path, fn)
    assert cli.main(["validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "Traceback" not in err


def test_cli_subprocess_exit_code_and_no_traceback(tmp_path):
    p = mutate(tmp_path, lambda d: d.update(step="7min"))
    proc = subprocess.run([sys.executable, "-m", "s4g", "run", str(p)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "must divide duration" in proc.stderr


def test_schema_is_json_schema_with_all_sections(capsys):
    schema = json_schema()
    for key in ("grid", "sites", "devices", "controllers", "start", "duration", "step"):
        assert key in schema["properties"]
    assert cli.main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == schema["title"]
