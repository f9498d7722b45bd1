"""Load and PV forecasts for the controllers, and how good they were.

Every forecaster works on one series sampled at a fixed step (W for load, W/kWp for PV) and answers
``forecast(k, n)``: the ``n`` values of steps ``k .. k+n-1`` knowing the observations of steps ``< k``
(observations arrive through ``observe(k, value)``, one step at a time, as a controller receives them).

* :class:`PerfectForesight` -- the true future (for studies: the controller's best case);
* :class:`Persistence`      -- the last observation, held (the simplest baseline);
* :class:`SeasonalNaive`    -- the same step one period (default one day) earlier;
* :class:`RidgeForecaster`  -- a learned model: ridge regression on lagged values (last observation,
  same time yesterday, same time a week ago when known, the mean of the last day) and time-of-day
  features (Fourier terms), one linear model for all lead times (lead time enters as features too),
  refitted once a day on everything seen so far. numpy only.

:func:`forecast_mae` replays a realised series through a forecaster the way the controller uses it
(a forecast every ``every`` steps, scored against what then happened) and :func:`site_forecast_mae`
does it for every site of a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from collections.abc import Callable

import numpy as np

ForecastMethod = Literal["perfect", "persistence", "seasonal_naive", "ridge"]
#: what PROFESS, LESSAg and GESSCon use unless a scenario says otherwise: a forecaster that sees no future
#: ("perfect" reads the true future: an explicit, labelled upper bound for studies, never a default)
DEFAULT_FORECAST: ForecastMethod = "ridge"


class Forecaster:
    """Base class: keeps the observed history (NaN where nothing was observed)."""

    def __init__(self, step_s: int, capacity: int = 0, nonnegative: bool = True) -> None:
        self.step_s = int(step_s)
        self.period = max(1, 86400 // self.step_s)
        self.nonnegative = nonnegative
        self._hist = np.full(max(capacity, 16), np.nan)
        self._known = 0  # number of steps with index < _known that may have values

    def observe(self, k: int, value: float) -> None:
        if k >= self._hist.size:
            grow = np.full(max(self._hist.size, k + 1), np.nan)
            self._hist = np.concatenate([self._hist, grow])
        self._hist[k] = value
        self._known = max(self._known, k + 1)

    def observe_many(self, k0: int, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=float)
        end = k0 + values.size
        if end > self._hist.size:
            self._hist = np.concatenate([self._hist, np.full(end - self._hist.size + self._hist.size, np.nan)])
        self._hist[k0:end] = values
        self._known = max(self._known, end)

    @property
    def history(self) -> np.ndarray:
        return self._hist[: self._known]

    def last(self, k: int) -> float:
        """The latest finite observation before step k (0 if none)."""
        h = self._hist[: min(k, self._known)]
        ok = np.flatnonzero(np.isfinite(h))
        return float(h[ok[-1]]) if ok.size else 0.0

    def forecast(self, k: int, n: int) -> np.ndarray:
        raise NotImplementedError

    def _clip(self, y: np.ndarray) -> np.ndarray:
        return np.maximum(y, 0.0) if self.nonnegative else y


class PerfectForesight(Forecaster):
    """The true series (given in full); beyond its end the last value is held."""

    def __init__(self, series: np.ndarray, step_s: int, nonnegative: bool = True) -> None:
        super().__init__(step_s, nonnegative=nonnegative)
        self.series = np.asarray(series, dtype=float)

    def forecast(self, k: int, n: int) -> np.ndarray:
        s = self.series
        idx = np.clip(np.arange(k, k + n), 0, s.size - 1)
        return s[idx].copy()


class Persistence(Forecaster):
    def forecast(self, k: int, n: int) -> np.ndarray:
        return np.full(n, self.last(k))


class SeasonalNaive(Forecaster):
    """Value of the same step one period earlier (repeated for lead times beyond one period);
    persistence where that is not yet known."""

    def __init__(self, step_s: int, period_s: int = 86400, **kw) -> None:
        super().__init__(step_s, **kw)
        self.period = max(1, period_s // self.step_s)

    def forecast(self, k: int, n: int) -> np.ndarray:
        j = np.arange(k, k + n)
        src = j - self.period * (1 + (j - k) // self.period)  # always an index < k
        h = self._hist
        out = np.full(n, self.last(k))
        ok = (src >= 0) & (src < min(k, self._known))
        vals = h[src[ok]]
        good = np.isfinite(vals)
        out_ok = out[ok]
        out_ok[good] = vals[good]
        out[ok] = out_ok
        return out


class RidgeForecaster(Forecaster):
    """Ridge regression on lags and time of day, one model for all lead times, refitted daily.

    Features for target step ``j = k + m`` (lead ``m`` >= 0, forecast made at ``k``):
    1, last observation y[k-1], its product with exp(-m / 4h), y[j - P] (same time yesterday; if that is
    not yet observed, the latest day before), the mean of the same time over the last 7 days, the mean
    of y over the last day, sin/cos of 2*pi*f*tod(j) for
    f = 1..3, and y[j - 7P] when a week of history exists (0 otherwise, with an indicator).
    Until two days are observed it answers like :class:`SeasonalNaive`.
    """

    def __init__(self, step_s: int, alpha: float = 1.0, start_tod_s: int = 0, max_train_days: int = 14,
                 samples_per_day: int = 24, **kw) -> None:
        super().__init__(step_s, **kw)
        self.alpha = alpha
        self.start_tod_s = start_tod_s  # time of day of step 0 (s)
        self.max_train_days = max_train_days
        self.samples_per_day = samples_per_day
        self._coef: np.ndarray | None = None
        self._fitted_at = -1
        self._naive = SeasonalNaive(step_s, **kw)

    def _features(self, k: int, m: np.ndarray) -> np.ndarray:
        P = self.period
        h = self._hist
        j = k + m
        last = self.last(k)
        tod = ((j * self.step_s + self.start_tod_s) % 86400) / 86400.0
        day_src = j - P * (1 + m // P)
        day = np.where((day_src >= 0) & (day_src < k), h[np.clip(day_src, 0, h.size - 1)], np.nan)
        day = np.where(np.isfinite(day), day, last)
        lo = max(0, k - P)
        window = h[lo:k]
        mean_day = float(np.nanmean(window)) if window.size and np.isfinite(window).any() else last
        # Mean of the same time of day over up to the last 7 days (a smoothed seasonal profile).
        srcs = day_src[None, :] - P * np.arange(7)[:, None]
        okd = (srcs >= 0) & (srcs < k)
        vals = np.where(okd, h[np.clip(srcs, 0, h.size - 1)], np.nan)
        with np.errstate(all="ignore"):
            prof = np.nanmean(vals, axis=0) if vals.size else np.full_like(tod, np.nan)
        prof = np.where(np.isfinite(prof), prof, day)
        wk_src = j - 7 * P
        has_wk = (wk_src >= 0) & (wk_src < k)
        wk = np.where(has_wk, h[np.clip(wk_src, 0, h.size - 1)], 0.0)
        has_wk = has_wk & np.isfinite(wk)
        wk = np.where(has_wk, wk, 0.0)
        decay = np.exp(-m * self.step_s / (4 * 3600.0))
        cols = [np.ones_like(tod), np.full_like(tod, last), last * decay, day, prof, np.full_like(tod, mean_day)]
        for f in (1, 2, 3):
            cols += [np.sin(2 * np.pi * f * tod), np.cos(2 * np.pi * f * tod)]
        cols += [wk, has_wk.astype(float)]
        return np.column_stack(cols)

    def _fit(self, k: int) -> None:
        P = self.period
        first = max(P, k - self.max_train_days * P)
        origins = np.arange(first, k - 1, max(1, P // self.samples_per_day))
        X_parts: list[np.ndarray] = []
        y_parts: list[np.ndarray] = []
        h = self._hist
        for k0 in origins.tolist():
            lead = np.arange(0, min(P, k - k0))
            tgt = h[k0 + lead]
            ok = np.isfinite(tgt)
            if ok.any():
                X_parts.append(self._features(k0, lead[ok]))
                y_parts.append(tgt[ok])
        if not X_parts:
            return
        X = np.vstack(X_parts)
        y = np.concatenate(y_parts)
        scale = np.maximum(np.abs(X).max(axis=0), 1e-9)
        Xs = X / scale
        A = Xs.T @ Xs + self.alpha * np.eye(Xs.shape[1])
        A[0, 0] -= self.alpha  # no penalty on the intercept
        self._coef = np.linalg.solve(A, Xs.T @ y) / scale
        self._fitted_at = k

    def observe(self, k: int, value: float) -> None:
        super().observe(k, value)
        self._naive.observe(k, value)

    def observe_many(self, k0: int, values: np.ndarray) -> None:
        super().observe_many(k0, values)
        self._naive.observe_many(k0, values)

    def forecast(self, k: int, n: int) -> np.ndarray:
        if min(k, self._known) < 2 * self.period:
            return self._naive.forecast(k, n)
        if self._coef is None or k - self._fitted_at >= self.period:
            self._fit(min(k, self._known))
        if self._coef is None:
            return self._naive.forecast(k, n)
        return self._clip(self._features(k, np.arange(n)) @ self._coef)


def make_forecaster(method: ForecastMethod, step_s: int, truth: np.ndarray | None = None,
                    start_tod_s: int = 0, nonnegative: bool = True) -> Forecaster:
    if method == "perfect":
        if truth is None:
            raise ValueError("perfect foresight needs the true series (pass zeros for a quantity the site lacks)")
        return PerfectForesight(truth, step_s, nonnegative=nonnegative)
    if method == "persistence":
        return Persistence(step_s, nonnegative=nonnegative)
    if method == "seasonal_naive":
        return SeasonalNaive(step_s, nonnegative=nonnegative)
    if method == "ridge":
        return RidgeForecaster(step_s, start_tod_s=start_tod_s, nonnegative=nonnegative)
    raise ValueError(f"unknown forecast method {method!r}")


@dataclass(frozen=True)
class ForecastScore:
    mae: float  # mean absolute error over all forecasts and lead times (series unit)
    mae_first_step: float  # of the first value only (what a receding-horizon controller acts on)
    mae_by_lead: np.ndarray  # per lead time
    n_forecasts: int


def forecast_mae(series: np.ndarray, make: Callable[[], Forecaster], horizon: int, every: int = 1,
                 warmup: int = 0) -> ForecastScore:
    """Replay ``series`` through a new forecaster: at steps ``warmup, warmup+every, ...`` forecast the
    next ``horizon`` steps (truncated at the series end) from the observations so far, then score."""
    y = np.asarray(series, dtype=float)
    f = make()
    errs = np.zeros(horizon)
    counts = np.zeros(horizon)
    first = []
    seen = 0
    n_fc = 0
    for k in range(warmup, y.size, every):
        if k > seen:
            f.observe_many(seen, y[seen:k])
            seen = k
        n = min(horizon, y.size - k)
        pred = f.forecast(k, n)
        e = np.abs(pred - y[k:k + n])
        errs[:n] += np.where(np.isfinite(e), e, 0.0)
        counts[:n] += np.isfinite(e)
        first.append(e[0])
        n_fc += 1
    by_lead = np.where(counts > 0, errs / np.maximum(counts, 1), np.nan)
    total = float(errs.sum() / max(counts.sum(), 1))
    return ForecastScore(total, float(np.nanmean(first)) if first else float("nan"), by_lead, n_fc)


def site_forecast_mae(realised: dict[str, np.ndarray], step_s: int, method: ForecastMethod,
                      horizon_s: int = 86400, every_s: int | None = None, start_tod_s: int = 0,
                      warmup_s: int = 0) -> dict[str, ForecastScore]:
    """Forecast MAE per site over a run, from each site's realised series (e.g. the recorder's
    ``sites`` table column ``<site>.load_p_w`` resampled to ``step_s``)."""
    horizon = max(1, horizon_s // step_s)
    every = max(1, (every_s or step_s) // step_s)
    out = {}
    for site, y in realised.items():
        y = np.asarray(y, dtype=float)
        # mypy cannot type a lambda with a default argument
        out[site] = forecast_mae(y, lambda y=y: make_forecaster(method, step_s, truth=y, start_tod_s=start_tod_s),  # type: ignore[misc]
                                 horizon, every, warmup_s // step_s)
    return out


def block_means(values: np.ndarray, factor: int) -> np.ndarray:
    """Means of consecutive blocks of ``factor`` values (resample a fine series to a coarser step)."""
    v = np.asarray(values, dtype=float)
    n = v.size // factor
    return v[: n * factor].reshape(n, factor).mean(axis=1) if factor > 1 else v.copy()
