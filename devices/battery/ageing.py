"""Battery ageing from a state-of-charge series: rainflow cycle counting plus calendar ageing (no I/O).

Cycle counting follows the rainflow method of ASTM E1049-85 (2017), section 5.4.4 (three-point algorithm on the
reversals; ranges left in the residue count as half cycles). Ageing follows

    B. Xu, A. Oudalov, A. Ulbig, G. Andersson, D. S. Kirschen, "Modeling of Lithium-Ion Battery Degradation for
    Cell Life Assessment", IEEE Transactions on Smart Grid 9(2), 1131-1140, 2018 (doi:10.1109/TSG.2016.2578950):

    f_d = sum_i n_i S_DoD(d_i) S_SoC(s_i) S_T(T) + k_t t S_SoC(s_mean) S_T(T)   (cycle + calendar, linear)
    L   = 1 - a_sei exp(-b_sei f_d) - (1 - a_sei) exp(-f_d)                     (capacity lost, with SEI film)
    S_DoD(d) = (k_d1 d^k_d2 + k_d3)^-1,  S_SoC(s) = exp(k_s (s - s_ref)),  S_T(T) = exp(k_T (T - T_ref) T_ref / T)

with n_i = 1 for a full cycle and 0.5 for a half cycle, d its depth (range of SoC), s its mean SoC, T in kelvin.
The parameters are the paper's Table II fit for LMO cells (``XU2018_LMO``). ``NMC`` and ``LFP`` keep the same
stress functions with the DoD stress scaled so that 100 % DoD cycles reach 80 % capacity after a typical
datasheet cycle life (about 3000 for NMC, 6000 for LFP) and the calendar rate scaled to about 20 and 25 years
to 80 % at 25 degC and 50 % SoC: labelled assumptions, not fits (docs/studies.md).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, replace
from typing import cast

import numpy as np


# ---------------------------------------------------------------------------------------------- rainflow
def reversals(series: np.ndarray) -> np.ndarray:
    """The turning points of ``series`` (first and last point kept, plateaus and NaN dropped)."""
    x = np.asarray(series, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return cast(np.ndarray, x.copy())
    keep = [x[0]]
    for v in x[1:]:
        if v == keep[-1]:
            continue
        # compare directions, not the product of the two steps: that underflows to 0 for tiny steps
        if len(keep) >= 2 and (keep[-1] > keep[-2]) == (v > keep[-1]):
            keep[-1] = v  # still rising (or falling): the turning point moves on
        else:
            keep.append(v)
    return np.array(keep)


def rainflow(series: np.ndarray) -> list[tuple[float, float, float]]:
    """Cycles of ``series`` as (range, mean, count) with count 1.0 (full) or 0.5 (half), ASTM E1049 5.4.4."""
    out: list[tuple[float, float, float]] = []
    stack: list[float] = []
    for point in reversals(series):
        stack.append(float(point))
        while len(stack) >= 3:
            x = abs(stack[-1] - stack[-2])
            y = abs(stack[-2] - stack[-3])
            if x < y:
                break
            if len(stack) == 3:  # Y contains the starting point: count it as a half cycle, drop the start
                out.append((y, (stack[-2] + stack[-3]) / 2.0, 0.5))
                stack.pop(0)
            else:
                out.append((y, (stack[-2] + stack[-3]) / 2.0, 1.0))
                last = stack.pop()
                stack.pop()
                stack.pop()
                stack.append(last)
    for a, b in itertools.pairwise(stack):  # the residue: each remaining range is a half cycle
        out.append((abs(b - a), (a + b) / 2.0, 0.5))
    return out


# ---------------------------------------------------------------------------------------------- Xu et al. 2018
@dataclass(frozen=True)
class AgeingParams:
    name: str
    k_d1: float = 1.40e5
    k_d2: float = -0.501
    k_d3: float = -1.23e5
    k_soc: float = 1.04
    soc_ref: float = 0.5
    k_temp: float = 6.93e-2  # 1/K
    t_ref_k: float = 298.15
    k_time_per_s: float = 4.14e-10
    a_sei: float = 5.75e-2
    b_sei: float = 121.0
    dod_scale: float = 1.0  # multiplies S_DoD (chemistry variants below)


#: Xu et al. 2018, Table II (LMO cells)
XU2018_LMO = AgeingParams("xu2018_lmo")


def _scaled(name: str, cycles_to_80: float, calendar_years_to_80: float) -> AgeingParams:
    """The Xu model with the cycle and calendar terms rescaled to a datasheet cycle life and calendar life."""
    base = XU2018_LMO
    target = _fd_for_loss(0.2, base)
    dod_scale = target / (cycles_to_80 * _stress_dod(1.0, base) * _stress_soc(0.5, base))
    k_time = target / (calendar_years_to_80 * 365.25 * 86400)
    return replace(base, name=name, dod_scale=dod_scale, k_time_per_s=k_time)


def _stress_dod(d: float | np.ndarray, p: AgeingParams) -> np.ndarray:
    d = np.maximum(np.asarray(d, dtype=float), 1e-6)
    return p.dod_scale / (p.k_d1 * d**p.k_d2 + p.k_d3)


def _stress_soc(s: float | np.ndarray, p: AgeingParams) -> np.ndarray:
    return np.exp(p.k_soc * (np.asarray(s, dtype=float) - p.soc_ref))


def _stress_temp(t_c: float, p: AgeingParams) -> float:
    t_k = t_c + 273.15
    return math.exp(p.k_temp * (t_k - p.t_ref_k) * p.t_ref_k / t_k)


def loss(f_d: float | np.ndarray, p: AgeingParams = XU2018_LMO) -> np.ndarray:
    """Capacity lost (0..1) for a linearised degradation ``f_d``."""
    f = np.asarray(f_d, dtype=float)
    return cast(np.ndarray, 1.0 - p.a_sei * np.exp(-p.b_sei * f) - (1.0 - p.a_sei) * np.exp(-f))


def _fd_for_loss(target: float, p: AgeingParams) -> float:
    lo, hi = 0.0, 10.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(loss(mid, p)) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


NMC = _scaled("nmc", cycles_to_80=3000, calendar_years_to_80=20)
LFP = _scaled("lfp", cycles_to_80=6000, calendar_years_to_80=25)
MODELS = {p.name: p for p in (XU2018_LMO, NMC, LFP)}


@dataclass(frozen=True)
class AgeingResult:
    fd_cycle_per_day: float
    fd_calendar_per_day: float
    efc_per_day: float
    cycles: int

    def soh_after(self, days: float, p: AgeingParams = XU2018_LMO) -> float:
        return float(1.0 - loss((self.fd_cycle_per_day + self.fd_calendar_per_day) * days, p))

    def years_to(self, soh: float, p: AgeingParams = XU2018_LMO) -> float | None:
        """Years until the SoH falls to ``soh`` if the analysed period repeats (None: not within 100 years)."""
        per_day = self.fd_cycle_per_day + self.fd_calendar_per_day
        if per_day <= 0:
            return None
        days = _fd_for_loss(1.0 - soh, p) / per_day
        return days / 365.25 if days <= 100 * 365.25 else None


def analyse(soc: np.ndarray, dt_s: float, temperature_c: float = 25.0,
            p: AgeingParams = XU2018_LMO) -> AgeingResult:
    """Degradation rates of one battery from its SoC series (0..1, one value per ``dt_s``), repeated in time."""
    soc = np.asarray(soc, dtype=float)
    soc = soc[np.isfinite(soc)]
    days = len(soc) * dt_s / 86400.0
    if days <= 0:
        return AgeingResult(0.0, 0.0, 0.0, 0)
    s_t = _stress_temp(temperature_c, p)
    cycles = rainflow(soc)
    fd_cyc = sum(n * float(_stress_dod(d, p)) * float(_stress_soc(m, p)) * s_t for d, m, n in cycles if d > 0)
    fd_cal = p.k_time_per_s * days * 86400.0 * float(_stress_soc(float(np.mean(soc)), p)) * s_t
    efc = sum(n * d for d, _, n in cycles)
    return AgeingResult(fd_cyc / days, fd_cal / days, efc / days, len(cycles))


__all__ = [
    "LFP",
    "MODELS",
    "NMC",
    "XU2018_LMO",
    "AgeingParams",
    "AgeingResult",
    "analyse",
    "loss",
    "rainflow",
    "reversals",
]
