"""Grid loaders: DSF-SE (Fur feeder), pandapower JSON, SimBench, and the errors they raise."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest

from simulators.grid_loaders import (
    GridLoadError,
    ensure_three_phase_data,
    load_dsf_se,
    load_grid,
    load_pandapower_json,
    load_simbench,
)

FUR = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g" / "fur_feeder.json"


@pytest.fixture(scope="module")
def fur_raw() -> dict:
    return json.loads(FUR.read_text())


@pytest.fixture(scope="module")
def fur():
    return load_dsf_se(FUR)


def _write(tmp_path: Path, data: object, name: str = "grid.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


# ------------------------------------------------------------------------------------------ Fur feeder


def test_fur_topology_and_names(fur):
    net = fur.net
    assert len(net.line) == 55 and len(net.trafo) == 1 and len(net.asymmetric_load) == 27
    assert len(net.bus) == len(fur.bus_names) == 56
    assert fur.slack_bus == "bus_001"
    assert all("." not in name for name in fur.bus_names)  # phase suffixes are not part of bus names
    assert fur.bus_vn_kv["bus_001"] == 10.0
    assert {v for k, v in fur.bus_vn_kv.items() if k != "bus_001"} == {0.4}
    assert fur.trafo_names == ["transformer_20082"]
    assert len(set(fur.line_names)) == 55


def test_fur_loads_are_single_phase_on_the_named_phase(fur):
    load = next(x for x in fur.loads if x.name == "consumer_4006773")  # bus "node_a11.1"
    assert (load.bus, load.phase, load.element) == ("node_a11", 1, "asymmetric_load")
    row = fur.net.asymmetric_load.loc[load.index]
    q_expected = 0.003 * math.tan(math.acos(0.95))
    assert row.p_a_mw == pytest.approx(0.003) and row.q_a_mvar == pytest.approx(q_expected)
    assert row.p_b_mw == row.p_c_mw == 0.0
    phases = [x.phase for x in fur.loads]
    assert sorted(set(phases)) == [1, 2, 3] and phases.count(1) + phases.count(2) + phases.count(3) == 27


def test_fur_transformer_and_source(fur):
    tr = fur.net.trafo.iloc[0]
    assert (tr.sn_mva, tr.vn_hv_kv, tr.vn_lv_kv, tr.vector_group) == (0.15, 10.0, 0.4, "Dyn")
    assert tr.vkr_percent == pytest.approx(0.001)
    assert tr.vk_percent == pytest.approx(math.hypot(0.008, 0.001))
    eg = fur.net.ext_grid.iloc[0]
    assert eg.vm_pu == 1.0001 and eg.va_degree == 30
    assert eg.s_sc_max_mva == 20000 and eg.rx_max == pytest.approx(0.25)
    # OpenDSS: Z1 = kV^2 / MVAsc3, Z0 = 3 kV^2 / MVAsc1 - 2 Z1, X1/R1 = 4, X0/R0 = 3
    z1, z0 = 100 / 20000, 3 * 100 / 21000 - 2 * 100 / 20000
    assert eg.x0x_max == pytest.approx((z0 * 3 / math.sqrt(10)) / (z1 * 4 / math.sqrt(17)))
    assert eg.r0x0_max == pytest.approx(1 / 3)


def test_fur_lines_get_sequence_data_from_their_line_code(fur):
    line = fur.net.line.set_index("name").loc["powerline_w11"]  # r1 0.641 -> line code PVIKS_4x50
    assert line.length_km == pytest.approx(0.022)
    assert line.r_ohm_per_km == pytest.approx(0.641) and line.x_ohm_per_km == pytest.approx(0.081)
    # the code's matrices are diagonal (no coupling), so zero sequence equals positive sequence
    assert line.r0_ohm_per_km == pytest.approx(0.641) and line.x0_ohm_per_km == pytest.approx(0.081)
    assert line.c_nf_per_km == 0 and line.c0_nf_per_km == 0
    assert np.isnan(fur.net.line.max_i_ka).all()
    assert any("max_i_ka" in a for a in fur.assumptions)


def test_fur_ders_exposed_not_modelled(fur):
    kinds = {(d["kind"], d["id"], d["bus"]) for d in fur.ders}
    assert kinds == {("pv", "PV_1", "consumer_4006773"), ("storage", "Akku1", "consumer_4006773")}
    assert len(fur.net.sgen) == 0 and len(fur.net.storage) == 0


def test_fur_runs_unbalanced_in_pandapower(fur):
    net = copy.deepcopy(fur.net)
    pp.runpp_3ph(net, numba=False)
    res = net.res_bus_3ph
    # 27 x 3 kW on a long feeder: the voltage sags, and unequally per phase
    assert 0.85 < res.vm_b_pu.min() < 0.95
    assert abs(res.vm_a_pu.min() - res.vm_b_pu.min()) > 0.005


def test_mutual_coupling_gives_distinct_zero_sequence(tmp_path, fur_raw):
    data = copy.deepcopy(fur_raw)
    radial = data["radials"][0]
    radial["linecode"].append({
        "id": "coupled", "nphases": 3, "units": "m", "normamps": 200,
        "rmatrix": [[0.0004], [0.0001, 0.0004], [0.0001, 0.0001, 0.0004]],
        "xmatrix": [[0.0003], [0.0001, 0.0003], [0.0001, 0.0001, 0.0003]],
        "cmatrix": [[0.3], [-0.05, 0.3], [-0.05, -0.05, 0.3]],
    })
    radial["powerLines"][0] = {"id": "powerline_w1", "phases": 3, "bus1": "bus_002", "bus2": "node_a1",
                               "length": 434, "unitlength": "m", "linecode": "coupled"}
    model = load_dsf_se(_write(tmp_path, data))
    line = model.net.line.set_index("name").loc["powerline_w1"]
    assert line.length_km == pytest.approx(0.434)
    assert line.r_ohm_per_km == pytest.approx(0.3) and line.r0_ohm_per_km == pytest.approx(0.6)
    assert line.x_ohm_per_km == pytest.approx(0.2) and line.x0_ohm_per_km == pytest.approx(0.5)
    assert line.c_nf_per_km == pytest.approx(350) and line.c0_nf_per_km == pytest.approx(200)
    assert line.max_i_ka == pytest.approx(0.2)


def test_ampacity_override(fur_raw, tmp_path):
    model = load_dsf_se(_write(tmp_path, fur_raw), ampacity_a={"PEX_4x150": 270.0})
    lines = model.net.line.set_index("name")
    assert lines.loc["powerline_w1", "max_i_ka"] == pytest.approx(0.27)  # a PEX_4x150 line
    assert np.isnan(lines.loc["powerline_w11", "max_i_ka"])


# ------------------------------------------------------------------------------------------ DSF-SE errors


def test_missing_file(tmp_path):
    with pytest.raises(GridLoadError) as err:
        load_dsf_se(tmp_path / "nope.json")
    assert err.value.path.endswith("nope.json") and "no such file" in str(err.value)


def test_bad_json_names_position(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"common": {"bus1": "x",, }')
    with pytest.raises(GridLoadError) as err:
        load_dsf_se(path)
    assert "line 1 column" in err.value.key_path and "bad.json" in str(err.value)


def test_missing_key_names_key_path(tmp_path, fur_raw):
    data = copy.deepcopy(fur_raw)
    del data["radials"][0]["powerLines"][3]["bus1"]
    path = _write(tmp_path, data)
    with pytest.raises(GridLoadError) as err:
        load_dsf_se(path)
    assert err.value.key_path == "radials[0].powerLines[3].bus1"
    assert str(path) in str(err.value) and "radials[0].powerLines[3].bus1" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "key_path", "expected"),
    [
        (lambda d: d["radials"][0]["powerLines"][0].update(length="long"), "radials[0].powerLines[0].length",
         "positive number"),
        (lambda d: d["radials"][0]["loads"][2].update(bus="node_zz.1"), "radials[0].loads[2].bus", "a bus"),
        (lambda d: d["common"].pop("MVAsc3"), "common.MVAsc3", "key 'MVAsc3'"),
        (lambda d: d.update(radials={}), "radials", "list of objects"),
        (lambda d: d["radials"][0]["transformer"][0].update(kvs=[10]), "radials[0].transformer[0].kvs", "2 entries"),
        (lambda d: d["radials"][0]["loads"][0].update(connection_type="delta"), "radials[0].loads[0].connection_type",
         "wye"),
    ],
)
def test_malformed_values(tmp_path, fur_raw, mutate, key_path, expected):
    data = copy.deepcopy(fur_raw)
    mutate(data)
    with pytest.raises(GridLoadError) as err:
        load_dsf_se(_write(tmp_path, data))
    assert err.value.key_path == key_path
    assert expected in err.value.expected


def test_isolated_bus_is_reported(tmp_path, fur_raw):
    data = copy.deepcopy(fur_raw)
    data["radials"][0]["powerLines"].append({"id": "island", "phases": 3, "bus1": "far_a", "bus2": "far_b",
                                             "length": 0.1, "r1": 0.2, "x1": 0.08, "unitlength": "km"})
    with pytest.raises(GridLoadError, match="isolated"):
        load_dsf_se(_write(tmp_path, data))


# ------------------------------------------------------------------------------------------ pandapower JSON


def test_pandapower_json_roundtrip(tmp_path, fur):
    path = tmp_path / "fur_pp.json"
    pp.to_json(fur.net, str(path))
    model = load_pandapower_json(path)
    assert model.bus_names == fur.bus_names and model.line_names == fur.line_names
    assert [(x.name, x.bus, x.phase) for x in model.loads] == [(x.name, x.bus, x.phase) for x in fur.loads]
    assert model.source == "pandapower"


def test_pandapower_json_errors(tmp_path):
    with pytest.raises(GridLoadError, match="no such file"):
        load_pandapower_json(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("this is not json")
    with pytest.raises(GridLoadError) as err:
        load_pandapower_json(garbage)
    assert "garbage.json" in str(err.value) and "pandapower" in err.value.expected


# ------------------------------------------------------------------------------------------ SimBench


@pytest.fixture(scope="module")
def semiurb4():
    return load_simbench("1-LV-semiurb4--0-sw")


def test_simbench_names_unique_and_complete(semiurb4):
    net = semiurb4.net
    assert len(semiurb4.bus_names) == len(set(semiurb4.bus_names)) == len(net.bus) == 44
    assert len(semiurb4.loads) == len(net.load) == 41
    assert all(x.element == "load" and x.phase is None for x in semiurb4.loads)
    assert semiurb4.bus_vn_kv[semiurb4.slack_bus] == 20.0
    assert net.profiles == {}  # the yearly profiles are not part of the grid model


def test_simbench_cache_is_used(tmp_path, monkeypatch, fur):
    import simbench

    calls: list[str] = []

    def fake_get_simbench_net(code: str) -> pp.pandapowerNet:  # simbench itself takes ~6 s per call
        calls.append(code)
        net = copy.deepcopy(fur.net)
        net.profiles = {"load": "big yearly table"}
        return net

    monkeypatch.setattr(simbench, "get_simbench_net", fake_get_simbench_net)
    from simulators import simbench_data

    simbench_data.clear()
    first = load_simbench("1-LV-test--0-sw", cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.pkl"))) == 1 and first.net.profiles == {}
    simbench_data.clear()  # as a new process: the net comes from the cache folder
    second = load_simbench("1-LV-test--0-sw", cache_dir=tmp_path)
    simbench_data.clear()
    assert calls == ["1-LV-test--0-sw"]  # the second load came from the cache
    assert second.bus_names == first.bus_names
    assert np.allclose(second.net.line.r_ohm_per_km, first.net.line.r_ohm_per_km)


def test_bad_simbench_code():
    with pytest.raises(GridLoadError) as err:
        load_simbench("1-LV-nowhere--0-sw", cache_dir=False)
    assert err.value.key_path == "code"


def test_load_grid_dispatch_errors():
    with pytest.raises(ValueError, match="unknown grid source"):
        load_grid("opendss", path="x")
    with pytest.raises(ValueError, match="code"):
        load_grid("simbench")


def test_three_phase_defaults_make_simbench_solvable(semiurb4):
    net = copy.deepcopy(semiurb4.net)
    notes = ensure_three_phase_data(net)
    assert any("r0_ohm_per_km" in n for n in notes) and any("vector_group" in n for n in notes)
    assert (net.line.r0_ohm_per_km == 4 * net.line.r_ohm_per_km).all()
    pp.runpp_3ph(net, numba=False)
    pp.runpp(semiurb4.net, numba=False)
    # balanced loads: the 3-phase result equals the balanced one
    assert np.allclose(net.res_bus_3ph.vm_a_pu, semiurb4.net.res_bus.vm_pu, atol=1e-6)
    assert ensure_three_phase_data(net) == []  # nothing left to fill


def test_add_load_validates(fur):
    model = copy.deepcopy(fur)
    info = model.add_load("ev_1", "node_a20", 2)
    assert info.element == "asymmetric_load" and info.phase == 2
    sym = model.add_load("ev_2", "node_a20", None)
    assert sym.element == "load" and model.net.load.at[sym.index, "p_mw"] == 0
    with pytest.raises(ValueError, match="already exists"):
        model.add_load("ev_1", "node_a20", 1)
    with pytest.raises(KeyError):
        model.add_load("ev_3", "node_nowhere", 1)
