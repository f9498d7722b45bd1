"""Energy-preserving resampling of interval-mean series (load, PV, any power).

A source value ``x[k]`` is the mean of a quantity (a power) over the interval
``[k*src_step_s, (k+1)*src_step_s)``. Resampling builds a smooth cumulative-energy curve ``C(t)``
through the knots ``C(k*src_step_s) = sum(x[:k]) * src_step_s`` and returns, per target step, the
mean ``(C(b1) - C(b0)) / step_s``. Because ``C`` passes through every source knot, the energy of every
source interval is preserved exactly, whatever the target step (finer, coarser, not dividing).

The curve is a piecewise cubic Hermite. Its slope (the instantaneous power) at an interior knot is
chosen by the method:

* ``"pchip"`` (non-negative series): the harmonic mean of the two neighbouring interval means, or 0
  if either is 0. This is exactly scipy's PCHIP on uniform knots; it keeps ``C`` monotone, so the
  resampled power stays >= 0, and a zero interval (PV at night) stays exactly zero.
* ``"mean"`` (signed series): the arithmetic mean of the two neighbours. Energy is still exact and
  the power continuous, but it may overshoot the source values near sign changes.
* ``"hold"``: slope = interval mean everywhere; ``C`` is piecewise linear, i.e. a staircase.

Each knot slope depends only on its two neighbouring source values, so resampling a sub-window gives
the same numbers as resampling the whole series, as long as the caller passes one extra source
interval on each side (the profiles module does). The two outermost knots, which have one
neighbour only, take the slope of their own interval.
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np

Method = Literal["auto", "pchip", "mean", "hold"]
METHODS = ("auto", "pchip", "mean", "hold")


def knot_slopes(values: np.ndarray, method: Method = "auto") -> np.ndarray:
    """Slopes of the cumulative-energy curve (= instantaneous power) at the ``len(values)+1`` knots."""
    x = np.asarray(values, dtype=np.float64)
    method = _resolve_method(x, method)
    m = np.empty(x.size + 1)
    m[0], m[-1] = x[0], x[-1]
    a, b = x[:-1], x[1:]
    if method == "pchip":
        both = (a > 0) & (b > 0)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # 2ab/(a+b) written to avoid overflowing a*b for large magnitudes.
            hm = 2.0 * (a / (a + b)) * b
        m[1:-1] = np.where(both, hm, 0.0)
        # One-sided end knots: the harmonic mean with a replicated neighbour is the value itself.
    elif method == "mean":
        m[1:-1] = 0.5 * (a + b)
    else:
        raise ValueError("'hold' has no continuous slopes: the staircase jumps at every knot")
    return m


def resample_means(
    values: np.ndarray,
    src_step_s: int,
    step_s: int,
    n_steps: int,
    offset_s: int = 0,
    method: Method = "auto",
) -> np.ndarray:
    """Means over ``n_steps`` target steps of ``step_s`` seconds starting ``offset_s`` after ``values[0]``.

    ``values`` are interval means of ``src_step_s`` seconds each. The requested window
    ``[offset_s, offset_s + n_steps*step_s)`` must lie inside the source; callers extend the source
    first (calendar wrap, padding), this function never truncates or extrapolates.
    """
    x = np.asarray(values, dtype=np.float64)
    src_step_s, step_s, n_steps, offset_s = int(src_step_s), int(step_s), int(n_steps), int(offset_s)
    if x.ndim != 1 or x.size == 0:
        raise ValueError("values must be a non-empty 1-D array")
    if src_step_s <= 0 or step_s <= 0 or n_steps < 0:
        raise ValueError(f"need src_step_s > 0, step_s > 0, n_steps >= 0 (got {src_step_s}, {step_s}, {n_steps})")
    end_s = offset_s + n_steps * step_s
    if offset_s < 0 or end_s > x.size * src_step_s:
        raise ValueError(
            f"window [{offset_s}, {end_s}) s outside the source [0, {x.size * src_step_s}) s"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("values contain NaN or infinity")
    method = _resolve_method(x, method)
    if n_steps == 0:
        return np.empty(0)

    energy = x * src_step_s  # per source interval, in value*seconds
    prefix = np.concatenate(([0.0], np.cumsum(energy)))
    bounds = offset_s + step_s * np.arange(n_steps + 1, dtype=np.int64)
    # Source interval of each boundary; the very end of the source belongs to the last interval.
    k = np.minimum(bounds // src_step_s, x.size - 1)
    b0, b1 = bounds[:-1], bounds[1:]
    k0, k1 = k[:-1], k[1:]
    curve = _Curve(x, energy, src_step_s, method)
    # Integrals are evaluated as (s1 - s0) * polynomial with s1 - s0 taken from integer seconds, so
    # a 1-s step inside a large interval loses no digits to cancellation.
    inside = curve.integral(k0, b0 - k0 * src_step_s, b1 - k0 * src_step_s)
    head = curve.integral(k0, b0 - k0 * src_step_s, np.full_like(b0, src_step_s))
    tail = curve.integral(k1, np.zeros_like(b1), b1 - k1 * src_step_s)
    between = prefix[k1] - prefix[np.minimum(k0 + 1, k1)]  # whole intervals (coarse steps only)
    step_energy = np.where(k0 == k1, inside, head + between + tail)
    if method == "pchip":
        # The curve is monotone in exact arithmetic; clip rounding-level negatives.
        np.maximum(step_energy, 0.0, out=step_energy)
    return step_energy / step_s


def _resolve_method(x: np.ndarray, method: str) -> Method:
    if method not in METHODS:
        raise ValueError(f"unknown resampling method {method!r} (one of {', '.join(METHODS)})")
    if method == "auto":
        return "pchip" if np.all(x >= 0) else "mean"
    if method == "pchip" and np.any(x < 0):
        raise ValueError("pchip resampling needs a non-negative series; use 'mean' for signed series")
    return cast(Method, method)  # one of METHODS, checked above


class _Curve:
    """Cumulative energy inside each source interval: C_k(s) = a s^3 + b s^2 + c s, s in [0, 1].

    From the Hermite form C_k(s) = E_k h01(s) + T (m_k h10(s) + m_{k+1} h11(s)), T = interval length.
    """

    def __init__(self, x, energy, src_step_s, method):
        self.T = src_step_s
        if method == "hold":
            self.a = self.b = np.zeros_like(energy)
            self.c = energy
        else:
            m = knot_slopes(x, method) * src_step_s
            self.a = m[:-1] + m[1:] - 2.0 * energy
            self.b = 3.0 * energy - 2.0 * m[:-1] - m[1:]
            self.c = m[:-1]

    def integral(self, k, u0, u1):
        """C_k(u1/T) - C_k(u0/T) for integer offsets u0 <= u1 (seconds) inside interval k."""
        s0, s1 = u0 / self.T, u1 / self.T
        ds = (u1 - u0) / self.T
        return ds * (self.a[k] * (s1 * s1 + s1 * s0 + s0 * s0) + self.b[k] * (s1 + s0) + self.c[k])
