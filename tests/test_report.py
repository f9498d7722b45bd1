"""The report: renders a synthetic run directory into PNGs and one self-contained HTML page."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cosim import kpi, kpi_format, report
from cosim.recorder import Recorder

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STEP_S = 300
N = 288  # one day at 5-min steps


def _series(rng: np.random.Generator) -> dict[str, dict[str, np.ndarray]]:
    hours = np.arange(N) * STEP_S / 3600
    sun = np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None)
    buses: dict[str, np.ndarray] = {}
    for b in ("bus_001", "node_a1", "node.a 2", "node_a3"):
        for ph in "abc":
            buses[f"{b}.v_{ph}_pu"] = 1.0 + 0.04 * sun + 0.01 * rng.standard_normal(N)
    buses["node_a3.v_b_pu"][:] = np.nan  # a single-phase branch
    sites, devices = {}, {}
    for i in range(3):
        load = 400 + 300 * rng.random(N)
        pv = -3000 * sun
        batt = np.where(sun > 0.3, 800.0, -300.0)
        soc = np.clip(0.2 + np.cumsum(batt) * STEP_S / 3600 / 5000, 0, 1)
        sites |= {f"site {i}.load_p_w": load, f"site {i}.pcc_p_w": load + pv + batt, f"site {i}.v_pu": 1 + 0.03 * sun}
        devices |= {
            f"hh.{i}.p_w": pv + batt,
            f"hh.{i}.pv_p_w": pv,
            f"hh.{i}.batt_p_w": batt,
            f"hh.{i}.soc": soc,
            f"hh.{i}.e_wh": soc * 5000,
            f"hh.{i}.pv_curtail_w": np.zeros(N),
        }
    p_hv = sum(sites[f"site {i}.pcc_p_w"] for i in range(3)) + 50
    return {
        "grid": {"grid.p_slack_w": p_hv, "grid.q_slack_var": np.zeros(N), "grid.losses_w": np.full(N, 50.0)},
        "buses": buses,
        "lines": {f"line_{j}.loading_pct": 20 + 30 * sun * (j + 1) / 3 for j in range(3)},
        "trafos": {"transformer_20082.loading_pct": 10 + 40 * sun, "transformer_20082.p_hv_w": p_hv},
        "sites": sites,
        "devices": devices,
        "prices": {"price.import_eur_per_kwh": np.full(N, 0.28), "price.export_eur_per_kwh": np.full(N, 0.05)},
    }


TOPOLOGY = {"lines": [{"id": "l1", "from_bus": "bus_002", "to_bus": "node_a1", "length_km": 0.1, "in_service": True},
                      {"id": "l2", "from_bus": "node_a1", "to_bus": "node.a 2", "length_km": 0.05, "in_service": True},
                      {"id": "l3", "from_bus": "node_a1", "to_bus": "node_a3", "length_km": 0.2, "in_service": True},
                      {"id": "open", "from_bus": "node_a3", "to_bus": "bus_001", "length_km": 9.0,
                       "in_service": False}],
            "trafos": [{"id": "transformer_20082", "hv_bus": "bus_001", "lv_bus": "bus_002"}]}


def write_run(run_dir: Path, status: str | None, rows: int = N, *, scenario: str = "fur_skive") -> Path:
    series = _series(np.random.default_rng(1))
    meta: dict[str, Any] = {
        "scenario": scenario,
        "start": "2019-06-15T00:00:00+02:00",
        "step_s": STEP_S,
        "duration_s": N * STEP_S,
        "seed": 1,
        "grid": {"mode": "unbalanced", "slack_bus": "bus_001", "buses": [], "lines": [], "trafos": [],
                 "topology": TOPOLOGY},
        "sites": [{"id": f"site {i}", "bus": "node_a1", "phase": 1, "devices": [f"hh.{i}"]} for i in range(3)],
        "devices": [
            {"id": f"hh.{i}", "family": "pv_battery", "site": f"site {i}", "address": "sim://"} for i in range(3)
        ],
        "controllers": [{"id": "sc", "kind": "self_consumption", "devices": ["hh.0"], "params": {}}],
    }
    run_dir.mkdir(parents=True)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    if status is not None:
        (run_dir / "run.json").write_text(json.dumps({"status": status, "wall_s": 12.5}))
    series["controllers"] = {"sc/hh.0.p_set_w": series["devices"]["hh.0.batt_p_w"]}
    spec = [["S-0.x", col, table, col] for table, cols in series.items() for col in cols]
    arrays = {("S-0.x", col): v for cols in series.values() for col, v in cols.items()}
    with Recorder(run_dir, spec, flush_rows=100) as rec:
        for i in range(rows):
            rec.record(i * STEP_S, {k: v[i] for k, v in arrays.items()})
    return run_dir


def _leaf_keys(d: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for k, v in d.items():
        out |= _leaf_keys(v) if isinstance(v, dict) else {k}
    return out



SESSIONS = [
    {"record": "session", "site": "fleet", "ev_id": 1, "ev_type": "bev", "t_arrival_s": 28800, "t_plug_s": 28800,
     "t_departure_s": 36000, "wait_s": 0, "served": True, "completed": True, "e_wanted_wh": 10000.0,
     "e_delivered_wh": 10000.0, "e_unmet_wh": 0.0},
    {"record": "session", "site": "fleet", "ev_id": 2, "ev_type": "bev", "t_arrival_s": 30000, "t_plug_s": None,
     "t_departure_s": 40000, "wait_s": 10000, "served": False, "completed": False, "e_wanted_wh": 7000.0,
     "e_delivered_wh": 0.0, "e_unmet_wh": 7000.0},
    {"record": "site", "site": "fleet", "connectors": 1, "p_peak_w": 11000.0},
]
EVENTS = [{"t_s": 3600, "device": "hh.0", "kind": "setpoint_rejected", "message": "p_set_w=9e9 outside [-3000, 3000]"},
          {"t_s": 7200.0, "kind": "dead_letter", "role": "data", "sender": "<external>", "message": "not SenML"}]


@pytest.fixture(scope="module")
def complete_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = write_run(tmp_path_factory.mktemp("rep") / "run", "complete")
    (run_dir / "sessions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SESSIONS))
    (run_dir / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in EVENTS))
    page = report.render(run_dir)
    return run_dir, page.read_text(encoding="utf-8")


def test_key_figures_carry_their_kpis_json_values(complete_report: tuple[Path, str]) -> None:
    run_dir, text = complete_report
    flat = kpi.flatten(kpi.read(run_dir))
    rows = re.findall(r'<tr data-kpi="([^"]+)" data-value="([^"]*)"><td title="[^"]*">([^<]+)</td>'
                      r'<td class="v">([^<]*)</td><td class="l">([^<]*)</td>', text)
    assert len(rows) >= 15
    for key, raw, label, shown, unit in rows:
        assert json.loads(html.unescape(raw)) == flat[key], key
        assert html.unescape(shown) == kpi_format.fmt(key, flat[key]), key
        assert html.unescape(label) == kpi_format.label(key) and "." not in label  # a label, not a raw key
        assert html.unescape(unit) == kpi_format.display_unit(key)


def test_every_section_is_drawn(complete_report: tuple[Path, str]) -> None:
    _, text = complete_report
    for section in ("profile", "heatmap", "unbalance", "single_line", "energy", "storage", "ev", "setpoints",
                    "loading", "events", "sites", "devices", "definitions"):
        assert f'<section id="{section}">' in text, section
    assert "could not be drawn" not in text
    assert text.count('class="plotly-graph-div"') >= 10
    assert "7.0 of 17.0 kWh requested were not delivered (41 %)" in text  # the EV headline says what is unmet
    assert "1 × setpoint_rejected" in text and "1 × dead_letter" in text
    assert '<a href="#definitions">' in text  # the footer's link is a link


def test_report_is_self_contained(complete_report: tuple[Path, str]) -> None:
    _, text = complete_report
    assert all("src" not in attrs for attrs in re.findall(r"<script([^>]*)>", text))  # plotly.js is inline
    page = re.sub(r"<script[^>]*>.*?</script>", "", text, flags=re.S)  # the page's own markup
    assert not re.search(r'<(img|link|iframe)[^>]+(src|href)="(?!data:|#)', page)  # nothing fetched
    assert not re.search(r'<a [^>]*href="(?!#)', page)
    assert text.count("Plotly.newPlot") >= 10 and len(re.findall(r"<script[^>]*>\s*/\*\*\s*\n\* plotly", text)) <= 1


def test_storage_is_stationary_batteries_only(tmp_path: Path) -> None:
    """A PV inverter without battery (no SoC) and an EV charger (SoC of the EV, no battery power) are not storage."""
    from cosim import report_context, report_flows

    run_dir = write_run(tmp_path / "run", "complete")
    ctx = report_context.load(run_dir)
    devices = ctx.run.tables["devices"]
    assert report_flows.storage_ids(ctx) == ["hh.0", "hh.1", "hh.2"]
    ctx.kpis["devices"]["hh.1"]["batt_capacity_kwh"] = None  # e.g. a pv_battery family device without battery
    assert report_flows.storage_ids(ctx) == ["hh.0", "hh.2"]
    assert devices.ids("soc") == ["hh.0", "hh.1", "hh.2"]


def test_unreadable_event_lines_are_counted_and_said_not_dropped_in_silence(tmp_path: Path, caplog) -> None:
    from cosim import report_context, report_flows

    run_dir = write_run(tmp_path / "run", "complete")
    lines = [json.dumps(EVENTS[0]), '{"t_s": 7200, "kind": "dead_le', "[1, 2]", "", json.dumps(EVENTS[1])]
    (run_dir / "events.jsonl").write_text("\n".join(lines) + "\n")
    ctx = report_context.load(run_dir)
    assert len(ctx.events) == 2 and ctx.events_unreadable == 2 and not ctx.events_truncated
    assert "2 line(s) are not JSON objects" in caplog.text
    section = report_flows.events(ctx)
    assert "2 line(s) of events.jsonl could not be read" in "".join(str(part) for part in vars(section).values())


def test_static_figures_for_papers(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", "complete")
    report.render(run_dir, static=True)
    for name in ("voltage", "power", "soc", "loading"):
        data = (run_dir / "report" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 500 and height > 200, name
        assert (run_dir / "report" / f"{name}.svg").read_text().lstrip().startswith("<?xml")


def test_partial_run_is_rendered_and_flagged(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", "interrupted", rows=40)
    text = report.render(run_dir).read_text(encoding="utf-8")
    assert "Partial run" in text and "interrupted" in text and f"40 of {N} steps" in text


def test_run_without_rows_still_renders(tmp_path: Path) -> None:
    """A run that failed at its first step: no run.json, no rows; the page says so and draws what it can."""
    run_dir = write_run(tmp_path / "run", None, rows=0)
    text = report.render(run_dir).read_text(encoding="utf-8")
    assert "run.json is missing" in text and "could not be drawn" not in text


def test_a_failing_section_costs_only_itself_and_pilots_add_sections(tmp_path: Path, monkeypatch) -> None:
    from cosim.report_sections import Section

    def broken(ctx):
        raise ZeroDivisionError("no data for this")

    def pilot(ctx):
        return Section("pilot", "A pilot's own view", f"<p>{len(ctx.meta['sites'])} sites</p>")

    monkeypatch.setattr(report, "EXTRA_SECTIONS", [broken, pilot])
    text = report.render(write_run(tmp_path / "run", "complete")).read_text(encoding="utf-8")
    assert "could not be drawn: ZeroDivisionError: no data for this" in text
    assert '<section id="pilot"><h2>A pilot&#x27;s own view</h2><p>3 sites</p>' in text
    assert '<section id="profile">' in text


def test_baseline_sibling_is_found_and_shown(tmp_path: Path) -> None:
    write_run(tmp_path / "all" / "baseline", "complete", scenario="fur_skive-baseline")
    run_dir = write_run(tmp_path / "all" / "full", "complete", scenario="fur_skive-full")
    text = report.render(run_dir).read_text(encoding="utf-8")
    assert "baseline (fur_skive-baseline)" in text
    base_text = report.render(tmp_path / "all" / "baseline").read_text(encoding="utf-8")
    assert "baseline (" not in base_text  # a baseline has no baseline of its own
    other = write_run(tmp_path / "elsewhere", "complete")
    assert "baseline (fur_skive)" in report.render(run_dir, baseline=other).read_text(encoding="utf-8")


def test_feeder_distances_and_rows() -> None:
    from cosim.report_context import feeder

    f = feeder({"grid": {"slack_bus": "bus_001", "topology": TOPOLOGY}})
    assert f.distance_m == pytest.approx({"bus_001": 0, "bus_002": 0, "node_a1": 100, "node.a 2": 150,
                                          "node_a3": 300})  # the open line is no path
    assert f.parent["node_a3"] == "node_a1" and f.parent["bus_001"] is None
    assert f.row["node_a3"] == f.row["node_a1"] == f.row["bus_001"]  # the longest branch goes straight on
    assert f.row["node.a 2"] < f.row["node_a1"]  # the shorter one on a row below


def test_lvur() -> None:
    from cosim.report_grid import lvur_pct

    u = lvur_pct(np.array([1.0, 1.02, np.nan]), np.array([1.0, 0.99, 1.0]), np.array([1.0, 0.99, 1.0]))
    assert u[0] == 0 and u[1] == pytest.approx(2.0, rel=1e-9)  # mean 1.0, largest deviation 0.02
    assert np.isnan(u[2])
