"""KPIs from synthetic run directories written by the Recorder plain class, checked against hand-computed values."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from cosim import kpi, kpi_format
from cosim.recorder import Recorder

DAY = 86400


def write_run(
    run_dir: Path,
    series: dict[str, dict[str, np.ndarray]],
    *,
    sites: list[dict[str, Any]] = (),
    devices: list[dict[str, Any]] = (),
    step_s: int = 60,
    slack_bus: str = "bus_001",
    mode: str = "unbalanced",
    status: str | None = "complete",
) -> Path:
    """A run directory with meta.json (+ run.json) and the given tables: {table: {column: values per step}}."""
    n = len(next(iter(next(iter(series.values())).values())))
    meta = {
        "scenario": "synthetic",
        "start": "2019-06-15T00:00:00+02:00",
        "step_s": step_s,
        "duration_s": n * step_s,
        "seed": 1,
        "grid": {"mode": mode, "slack_bus": slack_bus, "buses": [], "lines": [], "trafos": []},
        "sites": list(sites),
        "devices": list(devices),
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    if status is not None:
        (run_dir / "run.json").write_text(json.dumps({"status": status, "wall_time_s": 1.5}))
    spec = [["Src-0.x", f"{table}/{col}", table, col] for table, cols in series.items() for col in cols]
    flat = {
        ("Src-0.x", f"{table}/{col}"): np.asarray(v, float) for table, cols in series.items() for col, v in cols.items()
    }
    with Recorder(run_dir, spec, flush_rows=500) as rec:
        for i in range(n):
            rec.record(i * step_s, {k: v[i] for k, v in flat.items()})
    return run_dir


def const(value: float, n: int) -> np.ndarray:
    return np.full(n, float(value))


def window(value: float, n: int, start: int, stop: int) -> np.ndarray:
    out = np.zeros(n)
    out[start:stop] = value
    return out


def site(sid: str, devices: list[str]) -> dict[str, Any]:
    return {"id": sid, "bus": "node_a11", "phase": 1, "devices": devices, "contract_import_w": 10000}


def device(did: str, sid: str, family: str = "pv_battery") -> dict[str, Any]:
    return {"id": did, "family": family, "site": sid, "address": "sim://"}


N = DAY // 60  # one day at 1-min steps
PV_HOURS = slice(10 * 60, 16 * 60)  # 6 h of PV


@pytest.fixture(scope="module")
def pv_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Site A: 1 kW load all day, 2 kW PV for 6 h, 1 kW curtailed during PV. Site B: 1 kW constant import."""
    pv = window(-2000, N, PV_HOURS.start, PV_HOURS.stop)
    load_a = const(1000, N)
    series = {
        "sites": {
            "site.A.load_p_w": load_a,
            "site.A.pcc_p_w": load_a + pv,
            "site.A.v_pu": const(1.02, N),
            "site B.load_p_w": const(1000, N),
            "site B.pcc_p_w": const(1000, N),
            "site B.v_pu": const(0.97, N),
        },
        "devices": {
            "hh.A.p_w": pv,
            "hh.A.pv_p_w": pv,
            "hh.A.pv_curtail_w": window(1000, N, PV_HOURS.start, PV_HOURS.stop),
        },
        "prices": {"price.import_eur_per_kwh": const(0.30, N), "price.export_eur_per_kwh": const(0.10, N)},
    }
    run_dir = write_run(
        tmp_path_factory.mktemp("pv") / "run",
        series,
        sites=[site("site.A", ["hh.A"]), site("site B", [])],
        devices=[device("hh.A", "site.A")],
    )
    return kpi.compute(run_dir)


def test_constant_import_for_a_day(pv_run: dict[str, Any]) -> None:
    b = pv_run["sites"]["site B"]
    assert b["import_kwh"] == pytest.approx(24.0)
    assert b["export_kwh"] == 0.0
    assert b["load_kwh"] == pytest.approx(24.0)
    assert b["peak_import_kw"] == pytest.approx(1.0)
    assert b["peak_export_kw"] == 0.0
    assert b["self_sufficiency_ratio"] == pytest.approx(0.0)
    assert b["bill_eur"] == pytest.approx(24 * 0.30)


def test_zero_pv_site_gives_none_not_a_crash(pv_run: dict[str, Any]) -> None:
    b = pv_run["sites"]["site B"]
    assert b["pv_kwh"] == 0.0
    assert b["self_consumption_ratio"] is None
    assert b["pv_curtailed_pct"] is None
    assert b["batt_efc"] is None and b["soc_min"] is None


def test_pv_self_consumption_half(pv_run: dict[str, Any]) -> None:
    a = pv_run["sites"]["site.A"]
    assert a["pv_kwh"] == pytest.approx(12.0)
    assert a["export_kwh"] == pytest.approx(6.0)
    assert a["import_kwh"] == pytest.approx(18.0)
    assert a["self_consumption_ratio"] == pytest.approx(0.5)
    assert a["self_sufficiency_ratio"] == pytest.approx(0.25)
    assert a["peak_export_kw"] == pytest.approx(1.0)
    assert a["pv_curtailed_kwh"] == pytest.approx(6.0)
    assert a["pv_curtailed_pct"] == pytest.approx(100 * 6 / 18)
    assert a["bill_eur"] == pytest.approx(18 * 0.30 - 6 * 0.10)


def test_total_adds_sites_and_peaks_are_coincident(pv_run: dict[str, Any]) -> None:
    tot = pv_run["total"]
    assert tot["import_kwh"] == pytest.approx(42.0)
    assert tot["self_consumption_ratio"] == pytest.approx(0.5)
    # Site A exports 1 kW exactly while site B imports 1 kW: the aggregate never exports.
    assert tot["peak_export_kw"] == 0.0
    assert tot["peak_import_kw"] == pytest.approx(2.0)
    assert tot["v_min_pu"] == pytest.approx(0.97) and tot["v_max_pu"] == pytest.approx(1.02)


def test_kpis_json_written_and_equal(pv_run: dict[str, Any], tmp_path: Path) -> None:
    run_dir = tmp_path / "r"
    write_run(run_dir, {"sites": {"s.pcc_p_w": const(500, 10)}}, sites=[site("s", [])])
    k = kpi.compute(run_dir)
    text = (run_dir / "kpis.json").read_text()
    assert "NaN" not in text
    assert json.loads(text) == k == kpi.read(run_dir)
    assert k["run"]["status"] == "complete" and k["run"]["steps_recorded"] == 10


def test_battery_throughput_cycles_and_soc(tmp_path: Path) -> None:
    n = 24 * 4  # 15-min steps
    batt = window(1000, n, 0, 8) + window(-1000, n, 8, 16)  # 2 h charge at 1 kW, 2 h discharge
    soc = np.concatenate([np.linspace(0.3, 0.8, 8), np.linspace(0.8, 0.3, 8), np.full(n - 16, 0.3)])
    run_dir = write_run(
        tmp_path / "run",
        {
            "sites": {"s1.pcc_p_w": batt, "s1.load_p_w": const(0, n)},
            "devices": {"b1.batt_p_w": batt, "b1.soc": soc, "b1.e_wh": soc * 4000},
        },
        sites=[site("s1", ["b1"])],
        devices=[device("b1", "s1", "battery")],
        step_s=900,
    )
    k = kpi.compute(run_dir)
    dev = k["devices"]["b1"]
    assert dev["batt_throughput_kwh"] == pytest.approx(4.0)
    assert dev["batt_capacity_kwh"] == pytest.approx(4.0)
    assert dev["batt_efc"] == pytest.approx(0.5)
    assert (dev["soc_min"], dev["soc_max"]) == (pytest.approx(0.3), pytest.approx(0.8))
    s1 = k["sites"]["s1"]
    assert s1["batt_efc"] == pytest.approx(0.5) and s1["load_kwh"] == 0.0
    assert s1["self_sufficiency_ratio"] is None  # no load: undefined, not a division by zero


def _voltage_run(tmp_path: Path, step_s: int) -> dict[str, Any]:
    n = 20
    v_a2 = const(1.0, n)
    v_a2[:4] = 1.12  # 4 steps above +10 % (and +5 %)
    v_c2 = const(1.0, n)
    v_c2[4:10] = 0.94  # 6 steps below −5 %, inside ±10 %
    v_c2[10] = 0.9  # exactly on the limit: inside ±10 %
    series = {
        "buses": {
            "bus_001.v_a_pu": const(0.5, n),  # the slack bus is excluded however bad it looks
            "bus_001.v_b_pu": const(0.5, n),
            "bus_001.v_c_pu": const(0.5, n),
            "node.2.v_a_pu": v_a2,
            "node.2.v_b_pu": const(np.nan, n),  # a bus without phase b
            "node.2.v_c_pu": v_c2,
            "node 3.v_a_pu": const(1.01, n),
            "node 3.v_b_pu": const(1.06, n),  # 20 steps above +5 %
            "node 3.v_c_pu": const(1.0, n),
        },
        "sites": {"s.v_pu": const(1.0, n)},
    }
    run_dir = write_run(tmp_path / f"v{step_s}", series, sites=[site("s", [])], step_s=step_s)
    return kpi.compute(run_dir)["grid"]


@pytest.mark.parametrize("step_s", [60, 300])
def test_voltage_minutes_exclude_slack_and_nan_phases(tmp_path: Path, step_s: int) -> None:
    g = _voltage_run(tmp_path, step_s)
    minutes = step_s / 60
    assert g["v_minutes_outside_10pct"] == pytest.approx(4 * minutes)
    assert g["v_minutes_outside_5pct"] == pytest.approx((4 + 6 + 1 + 20) * minutes)
    assert g["voltage"]["a"]["max_pu"] == pytest.approx(1.12) and g["voltage"]["a"]["max_bus"] == "node.2"
    assert g["voltage"]["a"]["min_pu"] == pytest.approx(1.0)
    assert g["voltage"]["b"]["min_bus"] == "node 3"  # the NaN phase of node.2 is not a minimum
    assert g["voltage"]["c"]["min_pu"] == pytest.approx(0.9) and g["voltage"]["c"]["min_t_s"] == 10 * step_s
    assert g["v_within_10pct"] is True


def test_balanced_grid_and_slack_fallback(tmp_path: Path) -> None:
    n = 60
    p_slack = window(3000, n, 0, 30) + window(-2000, n, 30, 60)
    series = {
        "grid": {"grid.p_slack_w": p_slack, "grid.q_slack_var": const(0, n), "grid.losses_w": const(60, n)},
        "buses": {"bus_001.v_pu": const(1.0, n), "b2.v_pu": const(0.93, n)},
        "lines": {"l.1.loading_pct": const(40, n), "l 2.loading_pct": window(70, n, 5, 6)},
        "sites": {"s.v_pu": window(1.0, n, 0, n) + window(0.15, n, 3, 4)},
    }
    run_dir = write_run(tmp_path / "bal", series, sites=[site("s", [])], mode="balanced")
    g = kpi.compute(run_dir)["grid"]
    assert g["power_source"] == "slack"
    assert g["import_kwh"] == pytest.approx(1.5) and g["export_kwh"] == pytest.approx(1.0)
    assert g["peak_import_kw"] == pytest.approx(3.0) and g["peak_export_kw"] == pytest.approx(2.0)
    assert g["losses_kwh"] == pytest.approx(0.06) and g["losses_pct_of_import"] == pytest.approx(4.0)
    assert list(g["voltage"]) == ["pos"] and g["voltage"]["pos"]["min_bus"] == "b2"
    assert g["v_minutes_outside_5pct"] == pytest.approx(60) and g["v_minutes_outside_10pct"] == 0
    assert (g["max_line_loading_pct"], g["max_line_loading_line"]) == (pytest.approx(70), "l 2")
    assert g["max_trafo_loading_pct"] is None
    assert g["v_within_10pct"] is False  # one step at 1.15 pu at the PCC


def test_transformer_preferred_over_slack(tmp_path: Path) -> None:
    n = 10
    series = {
        "grid": {"grid.p_slack_w": const(99999, n), "grid.losses_w": const(0, n)},
        "trafos": {"tr.1.p_hv_w": const(6000, n), "tr.1.loading_pct": window(80, n, 2, 3) + 10},
    }
    g = kpi.compute(write_run(tmp_path / "tr", series))["grid"]
    assert g["power_source"] == "trafo" and g["peak_import_kw"] == pytest.approx(6.0)
    assert (g["max_trafo_loading_pct"], g["max_trafo_loading_trafo"]) == (pytest.approx(90), "tr.1")
    assert g["losses_pct_of_import"] == 0.0
    assert g["v_minutes_outside_10pct"] is None and g["v_within_10pct"] is None  # no buses, no sites


def test_interrupted_run_reports_status(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "r", {"sites": {"s.pcc_p_w": const(1, 30)}}, status="interrupted")
    k = kpi.compute(run_dir)
    assert k["run"]["status"] == "interrupted"
    assert k["run"]["steps_recorded"] == 30
    (run_dir / "run.json").unlink()
    assert kpi.compute(run_dir)["run"]["status"] == "unknown"


def test_terminal_tables(pv_run: dict[str, Any]) -> None:
    console = Console(record=True, width=200)
    console.print(kpi_format.table(pv_run, wall_time_s=12.34))
    text = console.export_text()
    assert "energy imported" in text and " 42 " in text and "wall time 12.3 s" in text
    assert "50.0 │ %" in text  # ratios shown as percentages, the unit in its column
    assert "total." not in text and "_ratio" not in text  # labels, never raw keys
    assert "per site" not in text  # the per-site table only on request
    console = Console(record=True, width=200)
    console.print(kpi_format.table(pv_run, sites=True))
    assert "per site" in console.export_text()
    other = json.loads(json.dumps(pv_run))
    other["total"]["import_kwh"] = 7.0
    console = Console(record=True, width=200)
    console.print(kpi_format.compare_table([("base", pv_run), ("what-if", other)]))
    text = console.export_text()
    assert "base" in text and "what-if" in text and " 7 " in text and " 42 " in text and "energy imported" in text
    assert kpi.table is kpi_format.table and kpi.fmt is kpi_format.fmt  # the CLIs still call kpi.table


@pytest.mark.parametrize(("seconds", "text"), [(86400, "1 d"), (3600, "1 h"), (5400, "1 h 30 min"), (60, "1 min"),
                                               (2.24, "2.2 s"), (34.5, "34.5 s"), (604800, "7 d"),
                                               (97200, "1 d 3 h"), (None, "—")])
def test_durations_for_people(seconds, text) -> None:
    assert kpi_format.duration(seconds) == text


def test_kpi_values_for_people() -> None:
    fmt = kpi_format.fmt
    assert fmt("total.import_kwh", 1114.2) == "1,114" and fmt("total.import_kwh", 0.0) == "0"
    assert fmt("total.self_consumption_ratio", 0.937) == "93.7"
    assert fmt("ev.total.waiting_mean_s", 14261.0) == "238"  # minutes
    assert kpi_format.display_unit("ev.total.waiting_mean_s") == "min"
    assert fmt("ev.total.unmet_energy_wh", 64954.0) == "65.0" and kpi_format.display_unit(
        "ev.total.unmet_energy_wh") == "kWh"
    assert fmt("run.simulated_s", 3600) == "1 h" and fmt("grid.v_within_10pct", False) == "no"
    assert kpi_format.show("grid.peak_import_kw", 34.3) == "34.3 kW"
    assert kpi_format.label("grid.voltage.a.min_pu") == "lowest bus voltage, phase a"
    assert kpi_format.label("sites.x.self_sufficiency_ratio") == "self-sufficiency"


def test_peaks_leave_out_the_warm_up(tmp_path: Path) -> None:
    """At step 0 no controller has acted: with controllers the peaks start at step 1 (or at kpis.warmup)."""
    pcc = np.array([9000.0, 1000, 2000, 1500, 500, 800])
    trafo = pcc + 100
    tables = {"sites": {"s.pcc_p_w": pcc}, "trafos": {"t.loading_pct": const(10, 6), "t.p_hv_w": trafo}}
    run_dir = write_run(tmp_path / "r", tables, sites=[{"id": "s", "devices": []}])
    plain = kpi.compute(run_dir)
    assert plain["grid"]["peak_import_kw"] == pytest.approx(9.1) and plain["run"]["warmup_s"] == 0
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["controllers"] = [{"id": "c", "kind": "self_consumption"}]
    (run_dir / "meta.json").write_text(json.dumps(meta))
    k = kpi.compute(run_dir)
    assert k["run"]["warmup_s"] == 60
    assert k["grid"]["peak_import_kw"] == pytest.approx(2.1) and k["total"]["peak_import_kw"] == pytest.approx(2.0)
    assert k["sites"]["s"]["peak_import_kw"] == pytest.approx(2.0)
    assert k["total"]["import_kwh"] == plain["total"]["import_kwh"]  # energies keep every step
    meta["kpis"] = {"warmup": 180}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    assert kpi.compute(run_dir)["grid"]["peak_import_kw"] == pytest.approx(1.6)


power = st.floats(min_value=-5000, max_value=5000, allow_nan=False)
site_strategy = st.fixed_dictionaries(
    {
        "load": st.lists(st.floats(0, 5000), min_size=6, max_size=6),
        "pv": st.lists(st.floats(-5000, 0), min_size=6, max_size=6),
        "batt": st.lists(power, min_size=6, max_size=6),
    }
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(site_strategy, min_size=1, max_size=3), st.lists(st.floats(-0.1, 0.5), min_size=6, max_size=6))
def test_energy_kpis_additive_and_ratios_bounded(
    tmp_path: Path, sites_data: list[dict[str, list[float]]], price: list[float]
) -> None:
    sites_meta, devices_meta, s_cols, d_cols = [], [], {}, {}
    for i, d in enumerate(sites_data):
        load_, pv, batt = (np.asarray(d[k]) for k in ("load", "pv", "batt"))
        s_cols |= {f"s.{i}.load_p_w": load_, f"s.{i}.pcc_p_w": load_ + pv + batt}
        d_cols |= {f"d.{i}.pv_p_w": pv, f"d.{i}.batt_p_w": batt, f"d.{i}.p_w": pv + batt}
        sites_meta.append(site(f"s.{i}", [f"d.{i}"]))
        devices_meta.append(device(f"d.{i}", f"s.{i}"))
    run_dir = tmp_path / f"h{len(list(tmp_path.iterdir()))}"
    prices = {"price.import_eur_per_kwh": np.asarray(price), "price.export_eur_per_kwh": np.asarray(price) / 2}
    series = {"sites": s_cols, "devices": d_cols, "prices": prices}
    k = kpi.compute(write_run(run_dir, series, sites=sites_meta, devices=devices_meta))
    for key in kpi.ADDITIVE_KEYS:
        assert k["total"][key] == pytest.approx(sum(s[key] for s in k["sites"].values()), abs=1e-9), key
    for scope in [k["total"], *k["sites"].values()]:
        for key in ("self_consumption_ratio", "self_sufficiency_ratio"):
            value = scope[key]
            assert value is None or 0.0 <= value <= 1.0
            assert value is None or math.isfinite(value)


def test_coarser_prices_hold_until_the_next_price(tmp_path: Path) -> None:
    """Prices recorded hourly by another recorder apply to every 15-min step of their hour."""
    n = 8  # two hours of 15-min steps, 1 kW import throughout
    run_dir = write_run(tmp_path / "r", {"sites": {"s.pcc_p_w": const(1000, n)}}, sites=[site("s", [])], step_s=900)
    with Recorder(run_dir, [["P-0.p", "imp", "prices", "price.import_eur_per_kwh"]]) as rec:
        rec.record(0, {("P-0.p", "imp"): 0.2})
        rec.record(3600, {("P-0.p", "imp"): 0.4})
    k = kpi.compute(run_dir)
    assert k["sites"]["s"]["bill_eur"] == pytest.approx(1 * 0.2 + 1 * 0.4)  # no export price: exports cost 0


def test_site_and_total_share_keys_and_missing_columns_give_none(tmp_path: Path) -> None:
    n = 10
    run_dir = write_run(
        tmp_path / "r",
        {"sites": {"a.pcc_p_w": const(100, n)}, "devices": {"grid_batt.batt_p_w": const(500, n)}},
        sites=[site("a", []), site("no data", [])],
        devices=[{"id": "grid_batt", "family": "battery", "site": None, "address": "sim://"}],
    )
    k = kpi.compute(run_dir)
    assert list(k["total"]) == list(kpi.SITE_KEYS) == list(k["sites"]["a"])
    assert k["sites"]["no data"]["import_kwh"] is None and k["sites"]["no data"]["peak_import_kw"] is None
    assert k["total"]["import_kwh"] == pytest.approx(100 * n / 60 / 1000)
    assert k["sites"]["a"]["bill_eur"] is None  # no prices table
    # A grid battery belongs to no site: it has device KPIs but does not enter the site totals.
    assert k["devices"]["grid_batt"]["batt_charge_kwh"] == pytest.approx(500 * n / 60 / 1000)
    assert k["total"]["batt_throughput_kwh"] == 0.0


def test_scenario_voltage_bands_from_meta(tmp_path: Path) -> None:
    """meta.json kpis.v_band_pu / v_band_tight_pu (from the scenario) replace the EN 50160 defaults."""
    n = 10
    v = np.linspace(0.90, 1.08, n)  # 0.90, 0.92, ..., 1.08
    run_dir = write_run(tmp_path / "r", {"buses": {"b.v_pu": v}, "sites": {"s.v_pu": v}}, sites=[site("s", [])])
    g = kpi.compute(run_dir)["grid"]
    assert g["v_band_pu"] == [0.9, 1.1] and g["v_minutes_outside_10pct"] == 0 and g["v_within_10pct"] is True
    meta = json.loads((run_dir / "meta.json").read_text())
    meta["kpis"] = {"v_band_pu": [0.93, 1.07], "v_band_tight_pu": [0.97, 1.03]}
    (run_dir / "meta.json").write_text(json.dumps(meta))
    g = kpi.compute(run_dir)["grid"]
    assert g["v_band_pu"] == [0.93, 1.07]
    assert g["v_minutes_outside_10pct"] == 3  # 0.90, 0.92 and 1.08
    assert g["v_minutes_outside_5pct"] == 7  # 0.90 .. 0.96 and 1.04 .. 1.08
    assert g["v_within_10pct"] is False
