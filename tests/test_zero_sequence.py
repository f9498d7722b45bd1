"""Zero sequence of the grid model against an independent three-phase solution written from first principles.

The reference is a phase-frame nodal solve of a small LV feeder (no symmetrical components, no pandapower):

* the MV grid is stiff, so each delta-connected HV winding of the Dyn transformer holds a fixed voltage and its LV
  winding is a fixed EMF behind the winding's own leakage impedance, one per phase, uncoupled (the star point
  earthed);
* a line is a primitive impedance matrix between its end nodes: 3x3 (self Zs, mutual Zm) for three conductors,
  4x4 with the neutral as a fourth conductor, earthed at the transformer star point only;
* loads draw constant power between their phase and their bus's neutral (the earth when there is no neutral
  conductor); a fixed-point iteration on the nodal equations Y V = I(V) solves it.

Checked: a Dyn transformer has Z0 = Z1 in the DSF-SE loader and in the data ``ensure_three_phase_data`` fills in
for SimBench-style nets (pandapower's runpp_3ph and our fast solver); the four-wire option (Z0 = 4 Z1) equals an
explicit neutral conductor of the phase cores' size.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandapower as pp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.grid import GridEngine
from simulators.grid_loaders import load_dsf_se, load_grid
from simulators.grid_model import GridModel, model_from_net
from simulators.three_phase_data import TRANSFORMER_MAG0_PERCENT, ensure_three_phase_data, four_wire

V_LL = 400.0
V_PH = V_LL / math.sqrt(3)
ALPHA = np.exp(2j * math.pi / 3)
SN_KVA = 150.0
VK, VKR = 4.0, 1.3  # a realistic 150 kVA distribution transformer (%)
Z1_PER_KM = 0.2 + 0.08j  # ohm/km of a phase core (positive sequence)
LINES = [("l1", "sec", "n1", 0.15), ("l2", "n1", "n2", 0.20), ("l3", "n1", "n3", 0.10)]
# (id, bus, phase 1..3 or None = three-phase, kW, power factor); one injects (PV), one sits at the secondary
LOADS = [("ls", "sec", 1, 12.0, 0.95), ("l1a", "n1", 1, 5.0, 0.95), ("l2b", "n2", 2, 7.0, 0.95),
         ("l2c", "n2", 3, 2.0, 1.0), ("l3", "n3", None, 9.0, 0.95), ("pv3", "n3", 3, -6.0, 1.0)]


# ----------------------------------------------------------------------------------- the independent solution


def _transformer_leakage_ohm(vk: float, vkr: float, sn_kva: float) -> complex:
    z_base = (V_LL / 1e3) ** 2 / (sn_kva / 1e3)  # ohm on the LV side
    return (vkr + 1j * math.sqrt(vk**2 - vkr**2)) / 100.0 * z_base


def _coupled(n: int, z_self: complex, z_mutual: complex) -> np.ndarray:
    return np.full((n, n), z_mutual, dtype=complex) + np.eye(n) * (z_self - z_mutual)


def phase_frame_solution(z_trafo: complex, line_z: dict[str, np.ndarray], loads=LOADS) -> dict[str, np.ndarray]:
    """Phase-to-neutral voltage magnitudes (p.u.) per bus; ``line_z[id]`` is 3x3 or 4x4 (neutral last), ohm."""
    four = next(iter(line_z.values())).shape[0] == 4
    buses = ["sec", "n1", "n2", "n3"]
    node: dict[tuple[str, int], int] = {}
    for bus in buses:
        for c in range(4 if four else 3):
            if c == 3 and bus == "sec":
                continue  # the neutral at the transformer is its earthed star point: the reference
            node[(bus, c)] = len(node)
    y = np.zeros((len(node), len(node)), dtype=complex)
    i_src = np.zeros(len(node), dtype=complex)
    for line_id, a, b, _ in LINES:
        y_prim = np.linalg.inv(line_z[line_id])  # I_from = y_prim (V_from - V_to), conductor by conductor
        n = y_prim.shape[0]
        for (bus_i, bus_j, sign) in ((a, a, 1), (b, b, 1), (a, b, -1), (b, a, -1)):
            for p in range(n):
                for q in range(n):
                    row, col = node.get((bus_i, p)), node.get((bus_j, q))
                    if row is not None and col is not None:  # the reference node has no equation
                        y[row, col] += sign * y_prim[p, q]
    emf = V_PH * np.array([1.0, ALPHA**2, ALPHA])
    for p in range(3):  # each LV winding: its EMF behind its leakage impedance (Norton form)
        k = node[("sec", p)]
        y[k, k] += 1.0 / z_trafo
        i_src[k] += emf[p] / z_trafo
    draws = []  # (phase node, neutral node or None, complex power VA)
    for _, bus, phase, kw, pf in loads:
        s = complex(kw * 1e3, abs(kw) * 1e3 * math.tan(math.acos(pf)))  # Q = |P| tan(acos pf), as the loader
        neutral = node.get((bus, 3))
        for p in ([phase - 1] if phase else [0, 1, 2]):
            draws.append((node[(bus, p)], neutral, s if phase else s / 3))
    v = np.zeros(len(node), dtype=complex)
    for bus in buses:
        for p in range(3):
            v[node[(bus, p)]] = emf[p]
    for _ in range(500):
        i = i_src.copy()
        for ph, nt, s in draws:
            across = v[ph] - (v[nt] if nt is not None else 0.0)
            current = np.conj(s / across)
            i[ph] -= current
            if nt is not None:
                i[nt] += current
        v_new = np.linalg.solve(y, i)
        done = np.max(np.abs(v_new - v)) < 1e-11
        v = v_new
        if done:
            break
    else:  # pragma: no cover
        raise AssertionError("the reference iteration did not converge")
    out = {}
    for bus in buses:
        vn = v[node[(bus, 3)]] if (bus, 3) in node else 0.0
        out[bus] = np.abs(np.array([v[node[(bus, p)]] for p in range(3)]) - vn) / V_PH
    return out


def three_wire_lines(z0_over_z1: float) -> dict[str, np.ndarray]:
    """Transposed three-conductor lines with the given Z0/Z1: Zs = (Z0 + 2 Z1)/3, Zm = (Z0 - Z1)/3."""
    out = {}
    for line_id, _, _, km in LINES:
        z1 = Z1_PER_KM * km
        z0 = z1 * z0_over_z1
        out[line_id] = _coupled(3, (z0 + 2 * z1) / 3, (z0 - z1) / 3)
    return out


def four_wire_lines(z_mutual_per_km: complex) -> dict[str, np.ndarray]:
    """Four equal cores: self Zp = Z1 + Zm for phases and neutral alike, mutual Zm between any two cores."""
    return {line_id: _coupled(4, (Z1_PER_KM + z_mutual_per_km) * km, z_mutual_per_km * km)
            for line_id, _, _, km in LINES}


# ----------------------------------------------------------------------------------- the models under test


def _dsf_se(vk: float, vkr: float) -> dict:
    code = {"id": "cable", "rmatrix": [[Z1_PER_KM.real], [0, Z1_PER_KM.real], [0, 0, Z1_PER_KM.real]],
            "xmatrix": [[Z1_PER_KM.imag], [0, Z1_PER_KM.imag], [0, 0, Z1_PER_KM.imag]], "units": "km"}
    loads = [{"id": i, "bus": f"{bus}.{phase}" if phase else bus, "phases": 1 if phase else 3, "kW": kw,
              "powerfactor": pf} for i, bus, phase, kw, pf in LOADS]
    return {
        # a stiff MV grid, as in the reference (the Fur file's own source is 20 GVA)
        "common": {"id": "small", "base_kV": 10, "per_unit": 1.0, "bus1": "mv", "angle": 0, "MVAsc3": 1e6,
                   "MVAsc1": 1e6, "base_frequency": 50},
        "radials": [{
            "transformer": [{"id": "tr", "buses": ["mv", "sec"], "kvs": [10, 0.4], "kvas": [SN_KVA, SN_KVA],
                             "conns": ["delta", "wye"], "xsc_array": [math.sqrt(vk**2 - vkr**2)],
                             "percent_load_loss": vkr}],
            "linecode": [code],
            "powerLines": [{"id": i, "bus1": a, "bus2": b, "length": km, "linecode": "cable", "unitlength": "km"}
                           for i, a, b, km in LINES],
            "loads": loads,
        }],
    }


@pytest.fixture(scope="module")
def small_feeder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "small_feeder.json"
    path.write_text(json.dumps(_dsf_se(VK, VKR)))
    return path


def _voltages(model: GridModel, solver: str) -> dict[str, np.ndarray]:
    result = GridEngine(model, mode="unbalanced", solver=solver, static_loads="file").solve()
    return {bus: result.v_abc_pu[:, model.bus_names.index(bus)] for bus in ("sec", "n1", "n2", "n3")}


def _max_error(got: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(got[b] - ref[b]))) for b in ref)


# ----------------------------------------------------------------------------------- tests


@pytest.mark.parametrize("solver", ["pandapower", "fast"])
def test_dsf_se_dyn_transformer_has_z0_equal_z1(small_feeder: Path, solver: str) -> None:
    ref = phase_frame_solution(_transformer_leakage_ohm(VK, VKR, SN_KVA), three_wire_lines(1.0))
    got = _voltages(load_dsf_se(small_feeder), solver)
    assert _max_error(got, ref) < 1e-6
    # the loads really are unbalanced: the phases at the feeder end differ by more than a percent
    assert np.ptp(ref["n2"]) > 0.01


def test_the_old_magnetising_default_fails_the_reference(small_feeder: Path) -> None:
    """mag0_percent = 100 (Zm0 = |Zsc|) shunts the HV leakage: 1e-3 pu off with a 4 % transformer."""
    model = load_dsf_se(small_feeder)
    model.net.trafo["mag0_percent"] = 100.0
    ref = phase_frame_solution(_transformer_leakage_ohm(VK, VKR, SN_KVA), three_wire_lines(1.0))
    assert _max_error(_voltages(model, "pandapower"), ref) > 1e-3


def test_simbench_style_net_gets_z0_equal_z1(small_feeder: Path) -> None:
    """A net with positive-sequence data only, as SimBench ships it: the filled data give the same answer."""
    source = load_dsf_se(small_feeder).net
    net = pp.create_empty_network(f_hz=50.0)
    for _, row in source.bus.iterrows():
        pp.create_bus(net, vn_kv=row.vn_kv, name=row["name"])
    pp.create_ext_grid(net, 0, vm_pu=1.0, s_sc_max_mva=1e6, rx_max=0.25, x0x_max=1.0, r0x0_max=0.25)
    t = source.trafo.iloc[0]
    # SimBench's 160 kVA type (SGB DOTE 160/20) on 150 kVA: no vector group, no zero-sequence columns
    pp.create_transformer_from_parameters(net, int(t.hv_bus), int(t.lv_bus), sn_mva=SN_KVA / 1e3, vn_hv_kv=10.0,
                                          vn_lv_kv=0.4, vk_percent=4.0, vkr_percent=1.46875, pfe_kw=0.0,
                                          i0_percent=0.0, shift_degree=150.0)
    for _, row in source.line.iterrows():
        pp.create_line_from_parameters(net, int(row.from_bus), int(row.to_bus), row.length_km, row.r_ohm_per_km,
                                       row.x_ohm_per_km, 0.0, 1.0, name=row["name"])
    for table in ("load", "asymmetric_load"):
        net[table] = source[table].copy()
    net.trafo = net.trafo.drop(columns=[c for c in ("vector_group", "vk0_percent", "vkr0_percent", "mag0_percent",
                                                     "mag0_rx", "si0_hv_partial") if c in net.trafo.columns])
    notes = ensure_three_phase_data(net)
    assert any("vector_group: assumed Dyn" in n for n in notes)
    assert net.trafo.mag0_percent.iloc[0] == TRANSFORMER_MAG0_PERCENT
    ref = phase_frame_solution(_transformer_leakage_ohm(4.0, 1.46875, SN_KVA), three_wire_lines(4.0))
    for solver in ("pandapower", "fast"):
        assert _max_error(_voltages(model_from_net(net, source="pandapower"), solver), ref) < 1e-6


@pytest.mark.parametrize("solver", ["pandapower", "fast"])
def test_four_wire_option_equals_an_explicit_neutral_conductor(small_feeder: Path, solver: str) -> None:
    model = load_grid("dsf-se", path=small_feeder, lv_z0_over_z1=4.0)
    assert any("four-wire" in a for a in model.assumptions)
    z_trafo = _transformer_leakage_ohm(VK, VKR, SN_KVA)
    # any coupling between the cores gives the same answer (Z0 = Zp - 4 Zm + 3 Zn = 4 Z1 when Zn = Zp)
    for z_mutual in (0.0, 0.03j, 0.01 + 0.05j):
        ref = phase_frame_solution(z_trafo, four_wire_lines(z_mutual))
        assert _max_error(_voltages(load_grid("dsf-se", path=small_feeder, lv_z0_over_z1=4.0), solver), ref) < 1e-6
    # and the neutral matters: without it the feeder end is off by more than 5e-3 pu
    assert _max_error(_voltages(load_dsf_se(small_feeder), solver), ref) > 5e-3


def test_four_wire_keeps_mv_lines_and_refuses_a_ratio_below_one() -> None:
    net = pp.create_empty_network()
    b = [pp.create_bus(net, vn_kv=kv) for kv in (10.0, 10.0, 0.4, 0.4)]
    pp.create_ext_grid(net, b[0])
    pp.create_line_from_parameters(net, b[0], b[1], 1.0, 0.3, 0.1, 0.0, 0.2, r0_ohm_per_km=0.9, x0_ohm_per_km=0.4,
                                   c0_nf_per_km=0.0)
    pp.create_transformer_from_parameters(net, b[1], b[2], 0.25, 10.0, 0.4, 1.2, 4.0, 0.0, 0.0)
    pp.create_line_from_parameters(net, b[2], b[3], 0.1, 0.2, 0.08, 0.0, 0.2)
    notes = four_wire(net, 3.5)
    assert notes and "1 line(s)" in notes[0]
    assert net.line.r0_ohm_per_km.tolist() == pytest.approx([0.9, 0.7])
    assert net.line.x0_ohm_per_km.tolist() == pytest.approx([0.4, 0.28])
    for bad in (0.5, math.nan, -4.0):
        with pytest.raises(ValueError, match="z0_over_z1"):
            four_wire(net, bad)


@pytest.fixture(scope="module")
def fast_engine(small_feeder: Path) -> GridEngine:
    return GridEngine(load_grid("dsf-se", path=small_feeder), mode="unbalanced", solver="fast", static_loads="zero")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.floats(-8.0, 15.0), min_size=len(LOADS), max_size=len(LOADS)))
def test_dyn_transformer_for_drawn_load_states(fast_engine: GridEngine, kw: list[float]) -> None:
    """Any mix of consumption and single-phase feed-in: the fast solver equals the phase-frame reference."""
    loads = [(i, bus, phase, p, pf) for (i, bus, phase, _, pf), p in zip(LOADS, kw, strict=True)]
    for name, _, _, p, pf in loads:
        q = abs(p) * math.tan(math.acos(pf))
        fast_engine.set_load(name, p_w=p * 1e3, q_var=q * 1e3)
    result = fast_engine.solve()
    names = fast_engine.model.bus_names
    got = {bus: result.v_abc_pu[:, names.index(bus)] for bus in ("sec", "n1", "n2", "n3")}
    ref = phase_frame_solution(_transformer_leakage_ohm(VK, VKR, SN_KVA), three_wire_lines(1.0), loads)
    assert _max_error(got, ref) < 1e-6


DATA = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g"


def test_fur_variant_files_differ_from_the_published_feeder_only_where_documented() -> None:
    base = json.loads((DATA / "fur_feeder.json").read_text())
    trafo = json.loads((DATA / "fur_feeder_realistic_trafo.json").read_text())
    four = json.loads((DATA / "fur_feeder_realistic_4wire.json").read_text())
    changed = {"xsc_array": [3.7201], "percent_rs": [0.735, 0.735], "percent_load_loss": 1.47}
    expected = json.loads(json.dumps(base))
    expected["radials"][0]["transformer"][0].update(changed)
    assert trafo == expected
    for line in expected["radials"][0]["powerLines"]:
        line.update(r0=round(4 * line["r1"], 6), x0=round(4 * line["x1"], 6))
    assert four == expected
    t = load_dsf_se(DATA / "fur_feeder_realistic_trafo.json").net.trafo.iloc[0]
    assert (t.vk_percent, t.vkr_percent, t.vk0_percent) == pytest.approx((4.0, 1.47, 4.0), abs=1e-4)
