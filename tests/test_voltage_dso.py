"""The LiBal controller on a DSO setpoint: settings as SenML on the Control Broker, the reference, a planned base."""

import numpy as np
import pytest

from controllers.voltage import (
    Curve,
    DsoSim,
    DsoUpdate,
    VoltageParams,
    VoltageSim,
    VoltVarWatt,
    apply_settings,
    settings_pack,
)


def test_a_settings_pack_is_senml_and_applies_whole():
    update = DsoUpdate(at=3600, v_ref_pu=0.98, volt_watt=Curve(v1=0.9, v2=0.96, v3=1.01, v4=1.04, low=1, high=1))
    pack = settings_pack("libal_voltage", 1.56e9, update)
    assert pack[0]["bn"] == "libal_voltage/" and pack[0]["bt"] == 1.56e9 and pack[0]["n"] == "v_ref_pu"
    assert {"n": "volt_watt.enabled", "vb": True} in pack
    new = apply_settings(VoltageParams(), pack)
    assert new.v_ref_pu == 0.98 and new.volt_watt.v3 == 1.01 and new.volt_var == VoltageParams().volt_var


@pytest.mark.parametrize("pack,why", [
    ([{"bn": "x/", "n": "v_ref_pu", "v": 1.3}], "less than or equal to 1.1"),
    ([{"bn": "x/", "n": "volt_watt.v2", "v": 1.2}], "v2 <= v3"),
    ([{"bn": "x/", "n": "gain", "v": 2}], "unknown field"),
    ([{"bn": "x/", "n": "v_ref_pu", "v": "1.0"}], "settings pack"),
    ([], "settings pack"),
])
def test_a_bad_pack_is_refused_and_changes_nothing(pack, why):
    with pytest.raises(ValueError, match=why):
        apply_settings(VoltageParams(), pack)


def test_the_reference_moves_both_curves():
    ctl = VoltVarWatt(VoltageParams(response="none", v_ref_pu=0.97), 10000, 10000, 10000)
    p, q = ctl.target([1.05])  # 1.05 - (0.97 - 1) = 1.08: the top of both default curves
    assert p[0] == pytest.approx(10000) and q[0] == pytest.approx(4400)


def test_a_planned_base_power_is_the_operating_point_the_curve_adds_to():
    ctl = VoltVarWatt(VoltageParams(response="none"), 10000, 10000, 10000)
    p, _ = ctl.step([1.0], 60, p_base_w=[-4000.0])  # in the deadband: the plan alone
    assert p[0] == pytest.approx(-4000)
    p, _ = ctl.step([1.10], 60, p_base_w=[-4000.0])  # high voltage: the curve's full charge on top, within ratings
    assert p[0] == pytest.approx(6000)


def test_the_simulators_carry_an_update_at_its_time_and_the_controller_follows():
    dso = DsoSim()
    dso.init("d", step_size=60)
    dso.create(1, "Dso", controller_id="c", updates=[{"at": "2min", "v_ref_pu": 0.95}], start_unix_s=0.0)
    sim = VoltageSim()
    sim.init("v", step_size=60)
    sim.create(1, "VoltVarWatt", params={"response": "none"}, p_charge_max_w=1000, p_discharge_max_w=1000,
               s_max_va=1000)
    sim.setup_done()
    seen = []
    for t in range(0, 300, 60):
        dso.step(t, {}, t + 60)
        pack = dso.get_data({"Dso_0": ["settings"]})["Dso_0"]["settings"]
        sim.step(t, {"VoltVarWatt_0": {"v_pu": {"g": 1.03}, "settings": {"d": pack}}}, t + 60)
        seen.append(sim.get_data({"VoltVarWatt_0": ["p_w", "v_ref_pu"]})["VoltVarWatt_0"])
    assert [s["v_ref_pu"] for s in seen] == [1.0, 1.0, 0.95, 0.95, 0.95]
    assert seen[1]["p_w"] == 0.0 and seen[2]["p_w"] == pytest.approx(1000)  # 1.03 reads as 1.08 from then on
    assert np.isfinite(seen[-1]["p_w"])
