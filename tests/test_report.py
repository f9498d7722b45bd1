"""The report: renders a synthetic run directory into PNGs and one self-contained HTML page."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cosim import kpi, report
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


def write_run(run_dir: Path, status: str | None, rows: int = N) -> Path:
    series = _series(np.random.default_rng(1))
    meta: dict[str, Any] = {
        "scenario": "fur_skive",
        "start": "2019-06-15T00:00:00+02:00",
        "step_s": STEP_S,
        "duration_s": N * STEP_S,
        "seed": 1,
        "grid": {"mode": "unbalanced", "slack_bus": "bus_001", "buses": [], "lines": [], "trafos": []},
        "sites": [{"id": f"site {i}", "bus": "node_a1", "phase": 1, "devices": [f"hh.{i}"]} for i in range(3)],
        "devices": [
            {"id": f"hh.{i}", "family": "pv_battery", "site": f"site {i}", "address": "sim://"} for i in range(3)
        ],
    }
    run_dir.mkdir(parents=True)
    (run_dir / "meta.json").write_text(json.dumps(meta))
    if status is not None:
        (run_dir / "run.json").write_text(json.dumps({"status": status}))
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


@pytest.fixture(scope="module")
def complete_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    run_dir = write_run(tmp_path_factory.mktemp("rep") / "run", "complete")
    page = report.render(run_dir)
    return run_dir, page.read_text(encoding="utf-8")


def test_html_has_every_kpi_and_four_embedded_images(complete_report: tuple[Path, str]) -> None:
    run_dir, text = complete_report
    kpis = kpi.read(run_dir)
    for key in kpi.flatten({k: kpis[k] for k in ("run", "total", "grid")}):
        assert key in text, key
    for key in _leaf_keys(kpis["sites"]) | _leaf_keys(kpis["devices"]):
        assert f"<td>{key}</td>" in text, key
    for sid in kpis["sites"]:
        assert sid in text
    images = re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 4
    assert "Partial run" not in text


def test_report_is_self_contained(complete_report: tuple[Path, str]) -> None:
    _, text = complete_report
    assert not re.search(r'(src|href)="(?!data:)', text)  # no external file or URL
    assert "http://" not in text and "https://" not in text


def test_pngs_are_valid_files(complete_report: tuple[Path, str]) -> None:
    run_dir, _ = complete_report
    for name in ("voltage", "power", "soc", "loading"):
        data = (run_dir / "report" / f"{name}.png").read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert width > 500 and height > 200, name


def test_partial_run_is_rendered_and_flagged(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", "interrupted", rows=40)
    text = report.render(run_dir).read_text(encoding="utf-8")
    assert "Partial run" in text and "interrupted" in text and f"40 of {N} steps" in text
    assert len(re.findall(r"<img ", text)) == 4


def test_run_without_rows_still_renders(tmp_path: Path) -> None:
    """A run that failed at its first step: no run.json, no rows; every figure says there is no data."""
    run_dir = write_run(tmp_path / "run", None, rows=0)
    text = report.render(run_dir).read_text(encoding="utf-8")
    assert "run.json is missing" in text
    assert len(re.findall(r"<img ", text)) == 4
