"""The meter model: exact energy registers (no drift, rollover, tariffs), load profile, phases, resolution."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices import registry
from devices.family import DeviceContext
from devices.meter.model import MW_S_PER_WH, PROFILE_KEYS, MeterBank, MeterConfig

FAM = registry.family("meter")
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def bank(n: int = 1, **cfg) -> MeterBank:
    """Meters whose clock starts at START (the build context of a scenario starting then)."""
    return MeterBank([MeterConfig(**cfg) for _ in range(n)], [DeviceContext(START, 60, f"m{i}") for i in range(n)])


def step(b: MeterBank, t: int, dt_s: int, p: float, q: float = 0.0, v: float = 1.0, **extra) -> None:
    b.step(t, dt_s, {"point_p_w": np.full(b.n, p), "point_q_var": np.full(b.n, q), "point_v_pu": np.full(b.n, v),
                     **{k: np.full(b.n, x) for k, x in extra.items()}})


def test_family_is_registered_read_only_observes_its_point_and_declares_its_inputs():
    assert FAM.setpoints == () and FAM.capabilities(FAM.parse_config({})).setpoints == {}
    assert FAM.injects is False  # stepped after the power flow: it meters the solution of its own step
    assert set(FAM.input_names) == {"point_p_w", "point_q_var", "point_v_pu", "point_v_a_pu", "point_v_b_pu",
                                    "point_v_c_pu", "point_p_a_w", "point_p_b_w", "point_p_c_w"}
    assert {i.source for i in FAM.inputs if i.required} == {"point.p_w", "point.q_var", "point.v_pu"}
    assert all(i.scope == "point" for i in FAM.inputs)
    from cosim import sources
    assert {i.source for i in FAM.inputs} <= set(sources.known())  # every source is in the world's vocabulary


def test_clock_starts_at_the_build_context_unless_the_config_sets_one():
    ctx = DeviceContext(dt.datetime(2025, 6, 1, 12, tzinfo=dt.UTC), 60, "m1")
    own = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    b = MeterBank([MeterConfig(), MeterConfig(clock_start=own)], [ctx, ctx])
    step(b, 0, 60, 1000.0)
    assert b.clock_s(0) == ctx.start.timestamp() + 60 and b.clock_s(1) == own.timestamp() + 60
    m = b.measure()
    assert list(m["clock_unix_s"]) == [ctx.start.timestamp() + 60, own.timestamp() + 60]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(-60_000, 60_000, allow_nan=False), st.integers(1, 4000)), min_size=1,
                max_size=40),
       st.integers(-3, 3))
def test_energy_registers_are_exact_integers_of_the_quantised_power(steps, scaler):
    b = bank(energy_scaler=scaler)
    unit = MW_S_PER_WH * 10 ** (scaler + 3) // 1000
    t = 0
    imp = exp = 0
    for p, dt_s in steps:
        step(b, t, dt_s, p)
        t += dt_s
        p_mw = round(p * 1000.0)
        imp += max(p_mw, 0) * dt_s
        exp += max(-p_mw, 0) * dt_s
    mod = 10 ** 9
    assert int(b.reg["e_import_wh"][0]) == (imp // unit) % mod
    assert int(b.reg["e_export_wh"][0]) == (exp // unit) % mod
    assert int(b.reg["e_import_t1_wh"][0] + b.reg["e_import_t2_wh"][0]) in (imp // unit, imp // unit - 1)
    m = b.measure()
    assert m["e_import_wh"][0] == pytest.approx((imp // unit) * 10.0 ** scaler)


@settings(max_examples=12, deadline=None)
@given(st.floats(-20_000, 20_000, allow_nan=False), st.sampled_from([13, 60, 450, 900, 5400]))
def test_step_length_does_not_change_registers_or_profile(p, dt_s):
    """Six hours in steps of dt_s or in one-hour chunks end with the same registers and profile."""
    a, b = bank(), bank()
    span = 6 * 3600
    for t in range(0, span, dt_s):
        step(a, t, min(dt_s, span - t), p)
    for t in range(0, span, 3600):
        step(b, t, 3600, p)
    for key in a.reg:
        assert a.reg[key][0] == b.reg[key][0], key
    ta, va = a.profile(0)
    tb, vb = b.profile(0)
    assert np.array_equal(ta, tb) and np.array_equal(va, vb)


def test_a_year_of_steps_does_not_drift():
    """A year (365 one-day steps, each integrated segment by segment; the test above shows the step length
    does not matter) at a power no binary float holds exactly: the register is the exact sum."""
    b = bank(profile_period_s=3600)
    p = 1234.567
    for k in range(365):
        step(b, k * 86_400, 86_400, p)
    exact = 1_234_567 * 900 * 35_040 // MW_S_PER_WH  # mW·s -> Wh
    assert int(b.reg["e_import_wh"][0]) == exact == 10_814_806
    naive = 0.0
    for _ in range(35_040):
        naive += p * 900 / 3600
    assert naive != exact  # what a float accumulator would have shown (and why the registers are integers)


def test_registers_roll_over_like_a_real_register():
    b = bank(energy_digits=4)  # 9999 Wh, then 0
    step(b, 0, 3600, 9_000.0)
    assert b.reg["e_import_wh"][0] == 9000
    step(b, 3600, 3600, 1_500.0)
    assert b.reg["e_import_wh"][0] == 500  # 10 500 Wh on a four-digit register
    step(b, 7200, 360, 5_000.0)
    assert b.reg["e_import_wh"][0] == 1000


def test_tariffs_split_a_day_exactly_and_follow_local_time():
    b = bank(tariff2_hours=(22, 6))
    for k in range(96):
        step(b, k * 900, 900, 1000.0)
    assert b.reg["e_import_t2_wh"][0] == 8000 and b.reg["e_import_t1_wh"][0] == 16000
    assert b.reg["e_import_wh"][0] == 24000
    # local time one hour east of UTC: T2 = 21:00..05:00 UTC; a step straddling 05:00 UTC is split
    c = bank(tariff2_hours=(22, 6), utc_offset_min=60)
    step(c, 4 * 3600 + 1800, 3600, 1000.0)  # 04:30..05:30 UTC = 05:30..06:30 local: half T2, half T1
    assert c.reg["e_import_t2_wh"][0] == 500 and c.reg["e_import_t1_wh"][0] == 500


def test_load_profile_captures_at_period_ends_and_keeps_the_newest():
    b = bank(profile_entries=4)
    for k in range(12):
        step(b, k * 600, 600, 3600.0, q=-360.0)  # 10-min steps: captures at 15, 30, 45, ... min
    times, values = b.profile(0)
    assert len(times) == 4  # ring buffer of 4
    start = int(START.timestamp())
    assert list(times - start) == [4500, 5400, 6300, 7200]
    col = PROFILE_KEYS.index("e_import_wh")
    assert list(values[:, col]) == [4500, 5400, 6300, 7200]  # 3600 W: 1 Wh per second
    assert list(values[:, PROFILE_KEYS.index("e_q_export_varh")]) == [450, 540, 630, 720]


def test_instantaneous_values_carry_the_register_resolution():
    b = bank()
    step(b, 0, 60, 2345.678, q=-543.21, v=1.0437)
    m = {k: float(v[0]) for k, v in b.measure().items()}
    assert m["p_w"] == 2346 and m["q_var"] == -543 and m["p_import_w"] == 2346 and m["q_export_var"] == 543
    assert m["v_a_v"] == pytest.approx(240.1, abs=1e-9)  # 230 * 1.0437 = 240.051 -> 0.1 V
    s = math.hypot(2345.678, 543.21)
    assert abs(m["i_a_a"] - s / 3 / (230 * 1.0437)) <= 0.005 + 1e-12
    assert m["pf"] == pytest.approx(round(2345.678 / s, 3)) and m["f_hz"] == 50.0


def test_per_phase_inputs_and_a_single_phase_meter():
    b = bank()
    step(b, 0, 60, 3000.0, point_v_b_pu=0.95, point_p_a_w=2000.0, point_p_b_w=1500.0, point_p_c_w=-500.0)
    m = {k: float(v[0]) for k, v in b.measure().items()}
    assert (m["p_a_w"], m["p_b_w"], m["p_c_w"]) == (2000.0, 1500.0, -500.0)
    assert m["v_b_v"] == pytest.approx(218.5) and m["v_a_v"] == pytest.approx(230.0)
    single = bank(phases=1, phase="c")
    step(single, 0, 60, -1200.0, point_v_c_pu=1.02)
    m = {k: float(v[0]) for k, v in single.measure().items()}
    assert m["p_c_w"] == -1200.0 and m["p_w"] == -1200.0 and m["v_v"] == pytest.approx(234.6)
    assert all(math.isnan(m[k]) for k in ("p_a_w", "v_b_v", "i_a_a", "v_a_v", "p_b_w"))


def test_a_dead_point_reads_zero_and_never_poisons_the_registers():
    b = bank()
    step(b, 0, 900, 1000.0)
    step(b, 900, 900, math.nan, q=math.inf, v=math.nan)
    m = {k: float(v[0]) for k, v in b.measure().items()}
    assert m["p_w"] == 0 and m["v_a_v"] == 0 and m["i_a_a"] == 0 and m["f_hz"] == 0
    assert m["e_import_wh"] == 250


def test_config_errors_name_the_field():
    with pytest.raises(ValidationError, match="profile_period_s"):
        MeterConfig(profile_period_s=700)
    with pytest.raises(ValidationError, match="timezone-aware"):
        MeterConfig(clock_start=dt.datetime(2024, 1, 1))
    with pytest.raises(ValidationError, match="energy_digits"):
        MeterConfig(energy_digits=12)
    with pytest.raises(ValidationError, match="tariff2_hours"):
        MeterConfig(tariff2_hours=(22, 24))
