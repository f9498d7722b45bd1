"""One battery parameter model: every family and controller view uses the same names; old names are refused with
the new one in the message (also through a scenario file)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from controllers.gesscon import GessconSite
from controllers.profess_problem import SiteBattery
from cosim import scenario
from devices import registry
from devices.battery.params import RENAMED, BatteryParams, BatteryRatings, ContractLimits

BATT = {"capacity_wh": 9000, "p_charge_max_w": 3000, "p_discharge_max_w": 3000}


def test_every_battery_model_shares_the_parameter_names():
    shared = set(BatteryRatings.model_fields)
    assert shared <= set(BatteryParams.model_fields)
    for view in (SiteBattery, GessconSite):
        assert shared | set(ContractLimits.model_fields) <= set(view.model_fields)
    for family in ("battery", "pv_battery", "fronius", "libal"):
        battery = registry.family(family).config.model_fields["battery"].annotation
        assert BatteryParams in (battery, *getattr(battery, "__args__", ()))
    assert "allow_grid_charging" in registry.family("fronius").config.model_fields
    assert "allow_grid_charging" in registry.family("pv_battery").config.model_fields


@pytest.mark.parametrize("family, config, old", [
    ("fronius", {"grid_charging": False}, "grid_charging"),
    ("fronius", {"min_reserve_pct": 20}, "min_reserve_pct"),
    ("battery", {"s_max_va": 5000, "battery": {**BATT, "import_limit_w": 1}}, "import_limit_w"),
    ("pv_battery", {"ac_max_w": 5000, "battery": {**BATT, "export_limit_w": 1}}, "export_limit_w"),
])
def test_an_old_name_is_an_error_that_names_the_new_one(family, config, old):
    with pytest.raises(ValidationError, match=f"'{old}' was renamed to '{RENAMED[old][0]}'"):
        registry.family(family).parse_config(config)
    with pytest.raises(ValidationError, match="renamed to 'contract_import_w'"):
        SiteBattery(**BATT, import_limit_w=5)


def test_soc_reserve_is_a_fraction_served_as_min_rsv_pct():
    fam = registry.family("fronius")
    bank = fam.bank([fam.parse_config({"soc_reserve": 0.45, "allow_grid_charging": False})])
    assert bank.min_rsv_pct[0] == pytest.approx(45.0) and bank.cha_gri_set[0] == 0
    with pytest.raises(ValidationError):
        fam.parse_config({"soc_reserve": 45})


def test_a_scenario_with_an_old_key_names_file_key_path_and_the_new_name(tmp_path: Path):
    src = Path(__file__).resolve().parents[1] / "scenarios" / "fur_skive.yaml"
    text = src.read_text(encoding="utf-8").replace(
        "config: {pv_kwp: 4, ac_max_w: 5000, battery: *fronius_battery}",
        "config: {pv_kwp: 4, ac_max_w: 5000, battery: *fronius_battery, grid_charging: false}", 1)
    bad = src.parent / f".renamed-key-test-{tmp_path.name}.yaml"  # next to its data files
    bad.write_text(text, encoding="utf-8")
    try:
        with pytest.raises(scenario.ScenarioError) as info:
            scenario.load(bad)
    finally:
        bad.unlink()
    message = str(info.value)
    assert bad.name in message and "devices[0].config" in message and "renamed to 'allow_grid_charging'" in message
