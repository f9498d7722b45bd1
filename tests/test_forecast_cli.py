"""`s4g forecast RUN_DIR`: forecast MAE per site from the run directory alone."""

import json

import numpy as np

from s4g import cli
from cosim.recorder import Recorder


def test_forecast_mae_per_site_from_a_run_directory(tmp_path, capsys):
    step, days = 900, 3
    t = np.arange(days * 86400 // step) * step
    daily = 500 + 400 * np.sin(2 * np.pi * t / 86400)  # repeats every day: seasonal-naive is exact
    noisy = daily + np.random.default_rng(1).normal(0, 50, t.size)
    rec = Recorder(tmp_path, [["P-0.a", "p_w", "sites", "a.load_p_w"], ["P-0.b", "p_w", "sites", "b.load_p_w"]])
    for i, ts in enumerate(t):
        rec.record(int(ts), {("P-0.a", "p_w"): daily[i], ("P-0.b", "p_w"): noisy[i]})
    rec.close()
    (tmp_path / "meta.json").write_text(json.dumps({"step_s": step, "duration_s": days * 86400, "sites": []}))
    assert cli.main(["forecast", str(tmp_path), "--step", "15min"]) == 0
    mae = json.loads((tmp_path / "forecast_mae.json").read_text())
    assert mae["a"]["seasonal_naive"] < 1e-6 < mae["a"]["persistence"]
    assert mae["b"]["seasonal_naive"] > mae["a"]["seasonal_naive"]  # noise cannot be forecast
    assert "seasonal_naive" in capsys.readouterr().out


def test_forecast_refuses_a_run_shorter_than_two_days(tmp_path, capsys):
    rec = Recorder(tmp_path, [["P-0.a", "p_w", "sites", "a.load_p_w"]])
    for i in range(10):
        rec.record(i * 60, {("P-0.a", "p_w"): 1.0})
    rec.close()
    (tmp_path / "meta.json").write_text(json.dumps({"step_s": 60, "duration_s": 600, "sites": []}))
    assert cli.main(["forecast", str(tmp_path)]) == 2
    assert "at least 2 days" in capsys.readouterr().err
