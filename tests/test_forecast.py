"""Forecasts: causality, baselines, the learned model, and the MAE over a run."""

import numpy as np
import pytest

from controllers.forecast import (Persistence, PerfectForesight, RidgeForecaster, SeasonalNaive, block_means,
                                  forecast_mae, make_forecaster, site_forecast_mae)

STEP = 3600


def periodic(days=21, noise=50.0, seed=0):
    rng = np.random.default_rng(seed)
    h = np.arange(days * 24)
    return 500 + 400 * np.sin(2 * np.pi * h / 24) ** 2 + 300 * (h % 24 == 19) + noise * rng.standard_normal(h.size)


def test_perfect_foresight_is_exact_and_holds_the_end():
    y = np.arange(10.0)
    f = PerfectForesight(y, STEP)
    assert np.array_equal(f.forecast(3, 4), [3, 4, 5, 6])
    assert np.array_equal(f.forecast(8, 4), [8, 9, 9, 9])


def test_persistence_and_seasonal_naive_use_only_the_past():
    y = periodic(3)
    p, s = Persistence(STEP), SeasonalNaive(STEP)
    for k in range(30):
        p.observe(k, y[k])
        s.observe(k, y[k])
    assert np.all(p.forecast(30, 5) == y[29])
    fc = s.forecast(30, 24)
    assert np.allclose(fc, y[6:30])  # same hour one day earlier
    y2 = y.copy()
    y2[30:] = -1e9  # the future cannot leak: nothing observed beyond step 29
    assert np.allclose(s.forecast(30, 24), fc)


def test_learned_model_beats_persistence_and_is_causal():
    y = periodic(21, seed=1)
    horizon = 24
    warm = 7 * 24
    mae = {m: forecast_mae(y, lambda m=m: make_forecaster(m, STEP, truth=y), horizon, every=6, warmup=warm).mae
           for m in ("perfect", "persistence", "seasonal_naive", "ridge")}
    assert mae["perfect"] == 0.0
    assert mae["ridge"] < 0.6 * mae["persistence"]
    assert mae["ridge"] < mae["seasonal_naive"]  # averaging days beats a single noisy day
    f = RidgeForecaster(STEP)
    f.observe_many(0, y[:warm])
    a = f.forecast(warm, horizon)
    f.observe_many(warm, np.full(100, 1e6))  # observations after the forecast time do not change it
    f2 = RidgeForecaster(STEP)
    f2.observe_many(0, y[:warm])
    assert np.allclose(a, f2.forecast(warm, horizon))


def test_mae_function_and_per_site_report():
    y = periodic(10, noise=0.0)
    sc = forecast_mae(y, lambda: Persistence(STEP), 24, every=24, warmup=24)
    manual = np.mean([np.mean(np.abs(y[k - 1] - y[k:k + 24])) for k in range(24, y.size, 24)])
    assert sc.mae == pytest.approx(manual)
    assert sc.mae_by_lead.shape == (24,) and sc.n_forecasts == 9
    rep = site_forecast_mae({"a": y, "b": 2 * y}, STEP, "seasonal_naive", warmup_s=2 * 86400)
    assert set(rep) == {"a", "b"} and rep["a"].mae == pytest.approx(0.0, abs=1e-9)
    assert rep["b"].mae == pytest.approx(0.0, abs=1e-9)


def test_block_means():
    assert np.allclose(block_means(np.arange(8.0), 4), [1.5, 5.5])
    with pytest.raises(ValueError):
        make_forecaster("perfect", STEP)
