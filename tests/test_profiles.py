"""Profiles simulator: energy-preserving resampling, calendar (DST, leap years, New Year), prices,
SimBench profiles, the mosaik simulator and its error messages."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import mosaik
import mosaik_api_v3
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import PchipInterpolator

from simulators import profile_sources as sources
from simulators import profiles as P
from simulators.resample import resample_means

CPH = "Europe/Copenhagen"
JUN15_ROW = (31 + 28 + 31 + 30 + 31 + 14) * 24  # 2019-06-15 00:00 local standard time


def residential(column: str = "profile_12") -> np.ndarray:
    return sources._s4g_column("s4g-residential", column)  # W, hourly


def res12(start: str, step_s: int, duration_s: int) -> np.ndarray:
    return P.load_profile("s4g-residential", "profile_12", start=start, step_s=step_s, duration_s=duration_s)


def raises(pattern: str):
    return pytest.raises(P.ProfileError, match=pattern)


# ---------------------------------------------------------------------------------------------------
# resampling (hypothesis)
# ---------------------------------------------------------------------------------------------------

nonneg = st.lists(
    st.one_of(st.just(0.0), st.floats(1e-3, 1e4, allow_nan=False, allow_subnormal=False)), min_size=3, max_size=30
)
signed = st.lists(st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False), min_size=3, max_size=30)
dividing_steps = st.sampled_from([1, 5, 60, 90, 300, 450, 900, 1200, 3600])


def _hour_energy(values, step_s):
    """Resample hours 1 … n-2 (hour 0 and n-1 are padding) and return energy per source hour."""
    x = np.asarray(values)
    n_hours = x.size - 2
    out = resample_means(x, 3600, step_s, n_hours * 3600 // step_s, offset_s=3600)
    return out, (out * step_s).reshape(n_hours, -1).sum(axis=1), x[1:-1] * 3600


@settings(max_examples=200, deadline=None)
@given(values=nonneg, step_s=dividing_steps)
def test_energy_per_source_hour_is_preserved(values, step_s):
    out, got, want = _hour_energy(values, step_s)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=0)
    assert np.all(out >= 0)
    # A zero hour (PV at night) stays exactly zero, not just approximately.
    zero = np.asarray(values[1:-1]) == 0
    assert np.all(out.reshape(zero.size, -1)[zero] == 0)


@settings(max_examples=100, deadline=None)
@given(values=signed, step_s=dividing_steps)
def test_signed_series_energy_per_hour_is_preserved(values, step_s):
    _, got, want = _hour_energy(values, step_s)
    # float rounding scales with the largest neighbouring value, not with this hour's (possibly zero) energy
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, np.abs(values).max()))


@settings(max_examples=100, deadline=None)
@given(values=nonneg, step_s=st.sampled_from([7, 13, 1000, 1800 + 7, 5400, 7000]), offset_s=st.integers(0, 3599))
def test_step_not_dividing_an_hour(values, step_s, offset_s):
    x = np.asarray(values)
    n_steps = (x.size * 3600 - offset_s) // step_s
    out = resample_means(x, 3600, step_s, n_steps, offset_s=offset_s)
    assert np.all(out >= 0)
    # Cumulative energy at every step boundary lies on the monotone PCHIP curve through the
    # source's cumulative-energy knots (scipy's PCHIP, interior knots identical).
    cum = np.concatenate(([0.0], np.cumsum(out * step_s)))
    knots = np.concatenate(([0.0], np.cumsum(x * 3600)))
    bounds = offset_s + step_s * np.arange(n_steps + 1)
    inner = (bounds >= 3600) & (bounds <= (x.size - 1) * 3600)  # away from the one-sided end knots
    if x.size >= 4 and inner.sum() >= 2:
        ref = PchipInterpolator(np.arange(x.size + 1) * 3600.0, knots)(bounds)
        first = np.flatnonzero(inner)[0]
        got = cum[inner] - cum[first]
        want = ref[inner] - ref[first]
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * max(1.0, knots[-1]))
    # Wherever a step boundary meets an hour boundary the energy so far is exact.
    if offset_s == 0:
        k = np.flatnonzero(bounds % 3600 == 0)
        np.testing.assert_allclose(cum[k], knots[bounds[k] // 3600], rtol=1e-9, atol=0)


@settings(max_examples=50, deadline=None)
@given(
    c=st.floats(-1e4, 1e4, allow_nan=False, allow_subnormal=False),
    step_s=st.sampled_from([1, 7, 60, 900, 3600, 7200]),
    offset_s=st.integers(0, 3600),
)
def test_constant_series_stays_constant(c, step_s, offset_s):
    out = resample_means(np.full(6, c), 3600, step_s, (5 * 3600 - offset_s) // step_s, offset_s=offset_s)
    np.testing.assert_allclose(out, c, rtol=1e-12, atol=1e-12)


def test_coarsening_averages_and_is_smooth():
    x = np.array([1.0, 3.0, 0.0, 0.0, 2.0, 6.0, 4.0, 4.0])
    np.testing.assert_allclose(resample_means(x, 3600, 7200, 4), [2.0, 0.0, 4.0, 4.0], rtol=1e-12)
    fine = resample_means(x, 3600, 60, 6 * 60, offset_s=3600)
    stair = resample_means(x, 3600, 60, 6 * 60, offset_s=3600, method="hold")
    jump = np.abs(np.diff(x[1:7])).max()
    assert np.abs(np.diff(stair)).max() == jump  # the staircase jumps by a whole source step …
    assert np.abs(np.diff(fine)).max() < 0.1 * jump  # … the smooth curve moves a little per minute


def test_window_outside_source_is_an_error():
    with pytest.raises(ValueError, match="outside the source"):
        resample_means(np.ones(2), 3600, 60, 121)


# ---------------------------------------------------------------------------------------------------
# calendar
# ---------------------------------------------------------------------------------------------------


def test_data_dir_holds_the_packaged_s4g_data():
    s4g = P.data_dir() / "s4g"
    for name in ("residential_load_kw_hourly.csv.gz", "commercial_load_kw_hourly.csv", "pv_w_per_kwp_hourly.csv",
                 "fur_feeder.json", "LICENSE-simulation-engine", "LICENSE-optimization-framework", "PROVENANCE.md"):
        assert (s4g / name).is_file(), name


def test_dst_start_maps_to_standard_time_hour():
    # 00:00 CEST on 15 June is 23:00 CET on 14 June: the profile's clock has no DST.
    start = "2019-06-15T00:00:00+02:00"
    assert P.profile_row(start, 0, timezone=CPH) == JUN15_ROW - 1
    assert P.profile_row(datetime(2019, 6, 15, tzinfo=ZoneInfo(CPH)), 3600) == JUN15_ROW
    assert P.profile_row(start, 0, tz_offset_h=1) == JUN15_ROW - 1
    # A fixed offset without a zone carries no DST information: it is taken as standard time.
    assert P.profile_row(start, 0) == JUN15_ROW
    p = P.load_profile("s4g-residential", "profile_12", start=start, timezone=CPH, step_s=3600, duration_s=3 * 3600)
    np.testing.assert_allclose(p, residential()[JUN15_ROW - 1 : JUN15_ROW + 2], rtol=1e-12)


def test_leap_day_repeats_feb_28_and_leap_profile_skips_it():
    col = residential()
    feb28, feb29, mar1 = 58 * 24, 59 * 24, 60 * 24
    p = res12("2020-02-28T00:00:00+01:00", 3600, 3 * 86400)
    np.testing.assert_allclose(p[:24], col[feb28 : feb28 + 24], rtol=1e-12)
    np.testing.assert_allclose(p[24:48], col[feb28 : feb28 + 24], rtol=1e-12)  # Feb 29 = Feb 28 again
    np.testing.assert_allclose(p[48:], col[feb29 : feb29 + 24], rtol=1e-12)  # Mar 1 = 366-day row 59
    pv = sources._s4g_column("s4g-pv", "fur_denmark")  # 8784 rows: a leap year
    w19 = P.pv_profile(column="fur_denmark", start="2019-03-01T00:00:00+01:00", step_s=3600, duration_s=86400)
    np.testing.assert_allclose(w19, pv[mar1 : mar1 + 24], rtol=1e-12)  # Feb 29 skipped
    w20 = P.pv_profile(column="fur_denmark", start="2020-02-29T00:00:00+01:00", step_s=3600, duration_s=86400)
    np.testing.assert_allclose(w20, pv[feb29 : feb29 + 24], rtol=1e-12)


def test_new_year_wraps_to_the_start_of_the_profile():
    col = residential()
    p = res12("2019-12-31T22:00:00+01:00", 3600, 4 * 3600)
    np.testing.assert_allclose(p, col[[8758, 8759, 0, 1]], rtol=1e-12)
    fine = res12("2019-12-31T22:00:00+01:00", 60, 4 * 3600)
    np.testing.assert_allclose(fine.reshape(4, 60).mean(axis=1), col[[8758, 8759, 0, 1]], rtol=1e-9)
    # Smooth across the wrap: the New-Year minute is no jump to the other end of the year.
    assert abs(fine[120] - fine[119]) < 0.05 * max(col[8759], col[0])


def test_short_commercial_profile_repeats_its_last_day():
    com = sources._s4g_column("s4g-commercial", "commercial_general")
    assert com.size == 8736
    p = P.load_profile("s4g-commercial", start="2019-12-31T00:00:00+01:00", step_s=3600, duration_s=86400)
    np.testing.assert_allclose(p, com[-24:], rtol=1e-12)


def test_results_do_not_depend_on_how_the_run_is_chunked():
    cal = P.Calendar.make("2019-06-15T00:00:00+02:00", 60, CPH)
    whole = sources.load_entity(cal, column="profile_7").compute(0, 3000)
    parts = sources.load_entity(cal, column="profile_7")
    for n in (5, 700, 3000):
        parts.ensure(n)
    np.testing.assert_allclose(parts.data["p_w"][:3000], whole["p_w"], rtol=1e-12)


# ---------------------------------------------------------------------------------------------------
# mosaik simulator
# ---------------------------------------------------------------------------------------------------


def test_sim_energy_per_day_at_60_s_equals_the_hourly_source():
    sim = P.ProfileSim()
    sim.init("Profiles-0", start="2019-06-15T00:00:00+01:00", step_size=60, horizon_s=86400)
    loads = sim.create(2, "Load", source="s4g-residential", column="profile_12", power_factor=0.95)
    (pv,) = sim.create(1, "PV", source="s4g-pv", column="fur_denmark", scale=2.0)
    ids = [e["eid"] for e in loads] + [pv["eid"]]
    rows = {"p_w": [], "q_var": [], "w_per_kwp": []}
    t = 0
    while t < 86400:
        t_next = sim.step(t, {}, 86400)
        data = sim.get_data({ids[0]: ["p_w", "q_var"], ids[2]: ["w_per_kwp"]})
        rows["p_w"].append(data[ids[0]]["p_w"])
        rows["q_var"].append(data[ids[0]]["q_var"])
        rows["w_per_kwp"].append(data[ids[2]]["w_per_kwp"])
        assert t_next == t + 60
        t = t_next
    day_wh = sum(rows["p_w"]) * 60 / 3600
    want_wh = residential()[JUN15_ROW : JUN15_ROW + 24].sum()
    assert math.isclose(day_wh, want_wh, rel_tol=1e-9)
    np.testing.assert_allclose(rows["q_var"], np.array(rows["p_w"]) * math.tan(math.acos(0.95)), rtol=1e-12)
    pv_wh = sum(rows["w_per_kwp"]) * 60 / 3600
    pv_source = sources._s4g_column("s4g-pv", "fur_denmark")  # leap-year rows: 15 June 2019 is row day 166
    assert math.isclose(pv_wh, 2.0 * pv_source[JUN15_ROW + 24 : JUN15_ROW + 48].sum(), rel_tol=1e-9)
    assert min(rows["w_per_kwp"]) == 0.0 and max(rows["w_per_kwp"]) > 0
    # The forecast accessor returns the same numbers the steps produce, and looks past the horizon.
    np.testing.assert_array_equal(sim.series(ids[0], "p_w", 0, 86400), rows["p_w"])
    assert sim.series(ids[0], "p_w", 86400 - 60, 2 * 3600).size == 120


class Collector(mosaik_api_v3.Simulator):
    """Records every input it gets: {(source full id, attr): {time: value}}."""

    instance: Collector | None = None

    def __init__(self):
        monitor = {"public": True, "params": [], "attrs": [], "any_inputs": True}
        super().__init__({"type": "event-based", "models": {"Monitor": monitor}})
        self.data: dict = {}
        Collector.instance = self

    def create(self, num, model):
        return [{"eid": f"mon_{i}", "type": model} for i in range(num)]

    def step(self, time, inputs, max_advance):
        for attrs in inputs.values():
            for attr, values in attrs.items():
                for src, value in values.items():
                    self.data.setdefault((src, attr), {})[time] = value
        return None


def test_mosaik_world_runs_an_hour():
    world = mosaik.World(
        {"Profiles": {"python": "simulators.profiles:ProfileSim"}, "Collector": {"python": f"{__name__}:Collector"}}
    )
    profiles = world.start("Profiles", start="2019-06-15T00:00:00+02:00", timezone=CPH, step_size=60)
    load = profiles.Load(source="s4g-residential", column="profile_12")
    pv = profiles.PV(source="s4g-pv", column="fur_denmark")
    price = profiles.Price(kind="fixed", import_eur_per_kwh=0.3, export_eur_per_kwh=0.05)
    monitor = world.start("Collector").Monitor()
    world.connect(load, monitor, "p_w", "q_var")
    world.connect(pv, monitor, "w_per_kwp")
    world.connect(price, monitor, "import_eur_per_kwh")
    expected = profiles.series(load.eid, "p_w", 0, 3600)  # extra method, in-process
    world.run(until=3600, print_progress=False)
    got = Collector.instance.data[(load.full_id, "p_w")]
    assert sorted(got) == list(range(0, 3600, 60))
    np.testing.assert_array_equal([got[t] for t in sorted(got)], expected)
    assert math.isclose(np.mean(expected), residential()[JUN15_ROW - 1], rel_tol=1e-9)
    assert set(Collector.instance.data[(price.full_id, "import_eur_per_kwh")].values()) == {0.3}


# ---------------------------------------------------------------------------------------------------
# prices
# ---------------------------------------------------------------------------------------------------

TOU = [
    {"from": "07:00", "to": "22:00", "import": 0.30, "export": 0.10},
    {"from": "22:00", "to": "07:00", "import": 0.20, "export": 0.05},
]


def test_tou_prices_follow_local_time_across_dst_changes():
    # Spring forward 2019-03-31 02:00 -> 03:00 in Rome: the day has 23 hours.
    imp, exp = P.price_profile("tou", start="2019-03-31T00:00:00+01:00", timezone="Europe/Rome", step_s=3600,
                               duration_s=23 * 3600, periods=TOU)
    # Local hours 00,01,03,04,05,06 are night; 07:00 local is 05:00 UTC, the 7th step.
    assert list(imp[:6]) == [0.2] * 6 and imp[6] == 0.3 and exp[6] == 0.1
    assert list(imp[-2:]) == [0.2, 0.2] and imp[-3] == 0.3  # 21:00 day, 22:00 and 23:00 night
    # Fall back 2019-10-27 03:00 -> 02:00: the day has 25 hours, 07:00 local is the 9th step.
    imp, _ = P.price_profile("tou", start=datetime(2019, 10, 27, tzinfo=ZoneInfo("Europe/Rome")), step_s=3600,
                             duration_s=25 * 3600, periods=TOU)
    assert list(imp[:8]) == [0.2] * 8 and imp[8] == 0.3


def test_fixed_and_csv_prices_hold_each_value(tmp_path):
    imp, exp = P.price_profile("fixed", start="2019-06-15T00:00:00+02:00", duration_s=600, import_eur_per_kwh=0.25)
    assert imp.tolist() == [0.25] * 10 and exp.tolist() == [0.0] * 10
    path = tmp_path / "prices.csv"
    path.write_text(
        "time,import_eur_per_kwh,export_eur_per_kwh\n"
        "2019-06-15T00:00:00+02:00,0.10,0.01\n"
        "2019-06-15T00:15:00+02:00,0.20,0.02\n"
        "2019-06-15T00:30:00+02:00,0.30,0.03\n"
    )
    imp, exp = P.price_profile("csv", path=str(path), start="2019-06-14T22:05:00+00:00", step_s=300, duration_s=2400)
    assert imp.tolist() == [0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3] and exp[-1] == 0.03
    with raises(r"covers 2019-06-15T00:00:00\+02:00 … 2019-06-15T00:45:00\+02:00"):
        P.price_profile("csv", path=str(path), start="2019-06-15T00:00:00+02:00", step_s=300, duration_s=3600)


@pytest.mark.parametrize(
    "periods, message",
    [
        ([{"from": "00:00", "to": "12:00", "import": 0.2}], "12:00 uncovered"),
        (TOU + [{"from": "06:00", "to": "08:00", "import": 0.1}], "periods 2 and 3 overlap at 06:00"),
        ([{"from": "7:60", "to": "24:00", "import": 0.2}], "'7:60' is not a time"),
        ([{"from": "00:00", "to": "24:00", "imp": 0.2}], r"unknown keys \['imp'\]; missing keys \['import'\]"),
        ([{"from": "00:00", "to": "24:00", "import": "cheap"}], "import must be a finite number"),
        ([], "need periods"),
    ],
)
def test_bad_price_tables_are_named(periods, message):
    with raises(message):
        P.price_profile("tou", start="2019-06-15T00:00:00+02:00", duration_s=60, periods=periods)


# ---------------------------------------------------------------------------------------------------
# errors and CSV sources
# ---------------------------------------------------------------------------------------------------


def test_profile_errors_name_what_was_asked_and_what_exists(tmp_path):
    start = "2019-06-15T00:00:00+02:00"
    with raises(r"column 'profile_999' not in s4g-residential \(profile_1 … profile_475, 473 in all\)"):
        P.load_profile("s4g-residential", "profile_999", start=start, duration_s=60)
    with raises(r"column 'fur' not in s4g-pv \(fur_denmark, bolzano_italy\); did you mean 'fur_denmark'"):
        P.pv_profile("s4g-pv", "fur", start=start, duration_s=60)
    with raises(r"s4g-pv needs a column \(fur_denmark, bolzano_italy\)"):
        P.pv_profile("s4g-pv", start=start, duration_s=60)
    with raises(r"unknown Load source 'h0' \(one of s4g-residential, s4g-commercial, simbench, csv\)"):
        P.load_profile("h0", start=start, duration_s=60)
    with raises(r"csv file 'nope.csv' not found \(looked in: .*nope.csv, .*scenarios/data/nope.csv\)"):
        P.load_profile("csv", "p", path="nope.csv", start=start, duration_s=60)
    with raises("has no timezone"):
        P.load_profile("s4g-residential", "profile_1", start="2019-06-15T00:00:00", duration_s=60)
    with raises("unknown timezone 'Europe/Kopenhagen'"):
        P.load_profile("s4g-residential", "profile_1", start=start, timezone="Europe/Kopenhagen", duration_s=60)
    with raises(r"power_factor must be in \(0, 1\]"):
        P.load_pq("s4g-residential", "profile_1", start=start, duration_s=60, power_factor=1.2)
    sim = P.ProfileSim()
    sim.init("Profiles-0", start=start)
    with raises("unknown price kind 'spot'"):
        sim.create(1, "Price", kind="spot")
    with raises("no entity 'Load_3'"):
        sim.series("Load_3", "p_w", 0, 60)


def test_csv_load_as_yearly_profile_and_as_time_series(tmp_path):
    year = tmp_path / "year.csv"
    kw = np.arange(8760) % 24 / 10.0
    year.write_text("hour,house_kw\n" + "".join(f"{h},{v}\n" for h, v in enumerate(kw)))
    p, q = P.load_pq("csv", "house_kw", path=str(year), unit="kW", start="2019-01-01T05:00:00+01:00", step_s=3600,
                     duration_s=3 * 3600, power_factor=-0.8)
    np.testing.assert_allclose(p, [500.0, 600.0, 700.0], rtol=1e-12)
    np.testing.assert_allclose(q, -p * 0.75, rtol=1e-12)  # capacitive
    series = tmp_path / "series.csv"
    series.write_text(
        "time,p\n2019-06-15T00:00:00+02:00,100\n2019-06-15T00:15:00+02:00,300\n2019-06-15T00:30:00+02:00,200\n"
    )
    p = P.load_profile("csv", "p", path=str(series), start="2019-06-15T00:00:00+02:00", step_s=300, duration_s=2700)
    np.testing.assert_allclose(p.reshape(3, 3).mean(axis=1), [100.0, 300.0, 200.0], rtol=1e-12)
    with raises(r"csv series.csv column 'p' covers .* but the run needs"):
        P.load_profile("csv", "p", path=str(series), start="2019-06-15T00:00:00+02:00", step_s=300, duration_s=3000)


# ---------------------------------------------------------------------------------------------------
# SimBench (loading the net takes seconds: one net for the module, cached by the profiles module)
# ---------------------------------------------------------------------------------------------------

SB_CODE = "1-LV-semiurb4--0-sw"


@pytest.fixture(scope="module")
def simbench_net():
    """The net and its absolute profiles straight from simbench (not through our cache)."""
    import simbench

    net = simbench.get_simbench_net(SB_CODE)
    return net, simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)


def test_simbench_load_and_pv_profiles(simbench_net):
    net, profiles = simbench_net
    name = str(net.load.name.iloc[0])
    idx = net.load.index[0]
    start = "2016-01-01T00:00:00+01:00"
    p, q = P.load_pq("simbench", code=SB_CODE, element=name, start=start, step_s=900, duration_s=86400)
    np.testing.assert_allclose(p, profiles[("load", "p_mw")][idx].to_numpy()[:96] * 1e6, rtol=1e-12)
    np.testing.assert_allclose(q, profiles[("load", "q_mvar")][idx].to_numpy()[:96] * 1e6, rtol=1e-12, atol=1e-9)
    p60, _ = P.load_pq("simbench", code=SB_CODE, element=name, start=start, step_s=60, duration_s=86400)
    np.testing.assert_allclose(p60.reshape(96, 15).mean(axis=1), p, rtol=1e-9)  # 15-min energy preserved
    sgen = str(net.sgen.name.iloc[0])
    w = P.pv_profile("simbench", code=SB_CODE, element=sgen, start="2016-06-15T00:00:00+01:00", step_s=900,
                     duration_s=86400)
    factor = profiles[("sgen", "p_mw")][net.sgen.index[0]].to_numpy() / net.sgen.p_mw.iloc[0]
    row = (31 + 29 + 31 + 30 + 31 + 14) * 96
    np.testing.assert_allclose(w, factor[row : row + 96] * 1000, rtol=1e-12)
    assert w.min() == 0 and w.max() > 100
    with raises(r"load 'LV4.101 Load 99' not in simbench 1-LV-semiurb4--0-sw \(LV4.101 Load 1 …"):
        P.load_profile("simbench", code=SB_CODE, element="LV4.101 Load 99", start=start, duration_s=60)
