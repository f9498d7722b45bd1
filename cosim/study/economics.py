"""Total cost of ownership for the DSO, the households and the community, in the way of the S4G economic engine.

The S4G economic engine (DSF-EE, Apache-2.0, storage4grid/DSF-EE) compared four cases over a horizon of years --
0: traditional grid strengthening, 1: household storage, 2: DSO storage at the substation, 3: both -- with yearly
cash flows discounted at 7 % and summed into a TCO per stakeholder. Its parameter values are the defaults here
(:class:`Assumptions`): battery price 817 EUR/kWh (its 2019 figure) falling 7.16 % a year, 290.6 EUR/kWh of
permitting ("bureaucracy") per installed kWh, grid strengthening CAPEX from its regression on the installed PV
kWp with 2 % of CAPEX a year as OPEX, network losses valued at the energy price and split 50/50 between DSO and
households. Our own choices, where the original was silent or inconsistent: operating costs run in years
1..N (year 0 is the investment), batteries are replaced every ``lifetime`` years strictly inside the horizon with
no residual value, strengthening is paid only when the variant breaks a grid target, and the households' energy
bill comes from the simulated run (annualised) instead of fixed consumption figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Sequence
from typing import cast

import numpy as np

#: DSF-EE grid strengthening regression: EUR as a polynomial of installed PV kWp (fitted on 0..150 kWp)
STRENGTHENING_POLY = (24.426, 2994.1, -90.806, 0.8923, -0.0027)
STRENGTHENING_FIT_MAX_KWP = 150.0


def strengthening_capex_eur(pv_kwp: float) -> float:
    """Grid strengthening CAPEX for ``pv_kwp`` of PV; beyond the fitted range, proportional to the kWp (ours)."""
    if pv_kwp <= 0:
        return 0.0
    kwp = min(pv_kwp, STRENGTHENING_FIT_MAX_KWP)
    cost = sum(a * kwp**i for i, a in enumerate(STRENGTHENING_POLY))
    return float(cost * pv_kwp / kwp)


def battery_capex_eur(kwh: float, year: int, eur_per_kwh: float, trend: float) -> float:
    """Purchase of ``kwh`` in ``year`` (0 = now) at today's price changing by ``trend`` a year."""
    return kwh * eur_per_kwh * (1.0 + trend) ** year


def discount(cash_flows: Sequence[float] | np.ndarray, rate: float) -> np.ndarray:
    cf = np.asarray(cash_flows, dtype=float)
    return cast(np.ndarray, cf / (1.0 + rate) ** np.arange(len(cf)))


def npv(cash_flows: Sequence[float] | np.ndarray, rate: float) -> float:
    """Net present value of yearly cash flows, the first at year 0 (not discounted)."""
    return float(discount(cash_flows, rate).sum())


def payback_years(cash_flows: Sequence[float], rate: float) -> float | None:
    """Discounted payback: when the cumulative discounted cash flow first reaches 0, interpolated linearly
    within the year; 0 when it never is negative, None when it does not pay back within the horizon."""
    cum = np.cumsum(discount(cash_flows, rate))
    if cum[0] >= 0:
        return 0.0
    for t in range(1, len(cum)):
        if cum[t] >= 0:
            return float(t - 1 + (-cum[t - 1]) / (cum[t] - cum[t - 1]))
    return None


@dataclass(frozen=True)
class Assumptions:
    years: int = 20
    discount_rate: float = 0.07
    battery_eur_per_kwh: float = 817.0
    battery_price_trend: float = -0.0716
    battery_lifetime_years: float = 15.0
    permit_eur_per_kwh: float = 290.6
    energy_eur_per_kwh: float = 0.30
    loss_share_dso: float = 0.5
    opex_share: float = 0.02


@dataclass(frozen=True)
class Case:
    """What one variant puts in place and what its simulated period costs, per year."""

    pv_kwp: float
    dso_storage_kwh: float
    household_storage_kwh: float
    losses_kwh_per_year: float
    bill_eur_per_year: float
    strengthening: bool

    @property
    def kind(self) -> int:
        """The DSF-EE scenario number: 0 strengthening only, 1 household, 2 DSO, 3 both."""
        return (1 if self.household_storage_kwh > 0 else 0) + (2 if self.dso_storage_kwh > 0 else 0)


def _storage_flows(kwh: float, a: Assumptions) -> np.ndarray:
    cf = np.zeros(a.years + 1)
    if kwh <= 0:
        return cf
    cf[0] = battery_capex_eur(kwh, 0, a.battery_eur_per_kwh, a.battery_price_trend) + a.permit_eur_per_kwh * kwh
    k = 1
    while (year := k * a.battery_lifetime_years) < a.years:
        t = int(math.ceil(year - 1e-9))
        cf[t] += battery_capex_eur(kwh, t, a.battery_eur_per_kwh, a.battery_price_trend) + a.permit_eur_per_kwh * kwh
        k += 1
    return cf


def cash_flows(case: Case, a: Assumptions) -> dict[str, np.ndarray]:
    """Yearly costs (EUR, + = paid) of the DSO and of the households, years 0..N."""
    n = a.years + 1
    dso = _storage_flows(case.dso_storage_kwh, a)
    homes = _storage_flows(case.household_storage_kwh, a)
    if case.strengthening:
        capex = strengthening_capex_eur(case.pv_kwp)
        dso[0] += capex
        dso[1:] += a.opex_share * capex
    loss_eur = case.losses_kwh_per_year * a.energy_eur_per_kwh
    dso[1:] += a.loss_share_dso * loss_eur
    homes[1:] += (1.0 - a.loss_share_dso) * loss_eur + case.bill_eur_per_year
    assert len(dso) == len(homes) == n
    return {"dso": dso, "households": homes, "community": dso + homes}


def tco(case: Case, a: Assumptions) -> dict[str, float]:
    """Discounted total cost of ownership per stakeholder (EUR)."""
    return {k: npv(v, a.discount_rate) for k, v in cash_flows(case, a).items()}


def versus(case: Case, reference: Case, a: Assumptions) -> dict[str, float | None]:
    """NPV and payback of choosing ``case`` instead of ``reference``: the cash flow is what the community saves."""
    ours, ref = cash_flows(case, a)["community"], cash_flows(reference, a)["community"]
    saving = ref - ours
    return {"npv_eur": npv(saving, a.discount_rate), "payback_years": payback_years(saving, a.discount_rate)}


__all__ = ["Assumptions", "Case", "battery_capex_eur", "cash_flows", "npv", "payback_years",
           "strengthening_capex_eur", "tco", "versus"]
