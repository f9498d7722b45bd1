"""EV charging-session models fitted to published session statistics (arrival, dwell, energy per session).

A :class:`SessionModel` describes one kind of site by day type (working day / weekend): how many sessions
come relative to the site's ``evs_per_day``, and a mixture of user profiles, each with a normal arrival
time, a lognormal dwell time and a lognormal energy per session. The fleet simulator
(:mod:`simulators.ev_fleet`) draws a site's sessions from a model when the fleet names one
(``session_model:``); the models and the published figures they reproduce are documented, with their
sources, in ``scenarios/data/ev_sessions/PROVENANCE.md`` and checked by ``tests/test_ev_sessions.py``.

Fitting: the published figures are summary statistics (modes of arrival and departure, the mean energy per
session). Each model matches them by construction: the profile that dominates a day type has its arrival
mean at the published modal arrival and its dwell median at the published modal departure minus arrival
(a normal's mode is its mean; the departure mode of a sum of a normal and a narrow lognormal lies within
minutes of arrival mode + dwell median, checked by the tests); the energy distribution's mean is the
published mean. Spreads and shares that no source gives are stated as assumptions in the provenance file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UserProfile:
    """One group of users: arrival ~ N(arrival_h, arrival_sd_h) (local hours), dwell ~ lognormal with median
    ``dwell_h`` and log-sd ``dwell_sigma``, energy per session ~ lognormal with mean ``energy_kwh`` and
    coefficient of variation ``energy_cv``."""

    name: str
    share: float
    arrival_h: float
    arrival_sd_h: float
    dwell_h: float
    dwell_sigma: float
    energy_kwh: float
    energy_cv: float

    def __post_init__(self) -> None:
        if not (self.share > 0 and 0 <= self.arrival_h < 24 and self.arrival_sd_h >= 0 and self.dwell_h > 0
                and self.dwell_sigma >= 0 and self.energy_kwh > 0 and self.energy_cv >= 0):
            raise ValueError(f"user profile {self.name!r}: share, dwell and energy must be positive, "
                             "arrival in [0, 24) h, spreads >= 0")


@dataclass(frozen=True)
class DayType:
    """Sessions of one day type: ``ratio`` x the site's evs_per_day sessions, from ``profiles`` by share."""

    ratio: float
    profiles: tuple[UserProfile, ...]

    def mean_energy_kwh(self) -> float:
        shares = np.array([p.share for p in self.profiles])
        return float(np.dot(shares / shares.sum(), [p.energy_kwh for p in self.profiles]))


@dataclass(frozen=True)
class SessionModel:
    name: str
    description: str
    working_day: DayType
    weekend: DayType
    source: str  # short citation; the full one is in the provenance file

    def day_type(self, weekday: int) -> DayType:
        return self.working_day if weekday < 5 else self.weekend


@dataclass(frozen=True)
class DrawnSession:
    group: str
    arrival_h: float  # local hours after midnight
    dwell_h: float
    energy_wh: float  # AC energy the user wants (before capping by the EV's free capacity)


def draw_day(model: SessionModel, rng: np.random.Generator, evs_per_day: float, weekday: int) -> list[DrawnSession]:
    """The sessions of one day: ``round(ratio * evs_per_day)`` of them (deterministic count: a study that
    raises evs_per_day raises the count, nothing else), each from a profile drawn by share."""
    day = model.day_type(weekday)
    n = int(round(day.ratio * evs_per_day))
    if n <= 0:
        return []
    shares = np.array([p.share for p in day.profiles], dtype=float)
    out = []
    for _ in range(n):
        p = day.profiles[int(rng.choice(len(day.profiles), p=shares / shares.sum()))]
        arrival = float(np.clip(rng.normal(p.arrival_h, p.arrival_sd_h), 0.0, 23.75))
        dwell = float(max(p.dwell_h * math.exp(p.dwell_sigma * rng.standard_normal()), 0.25))
        s2 = math.log1p(p.energy_cv ** 2)  # lognormal with the given mean and coefficient of variation
        energy = float(rng.lognormal(math.log(p.energy_kwh) - s2 / 2, math.sqrt(s2))) * 1e3
        out.append(DrawnSession(p.name, arrival, dwell, energy))
    return out


# -- the models ----------------------------------------------------------------------------------------------
# Published figures (see scenarios/data/ev_sessions/PROVENANCE.md):
# EVnetNL/ElaadNL public charge points, whole year 2015: most sessions started on working days around 08:51 and
# ended around 17:12; on weekends they started around 13:45 and ended around 16:13; 8.4 kWh per session on average.

_WD_ARRIVAL_H = 8 + 51 / 60
_WD_DEPARTURE_H = 17 + 12 / 60
_WE_ARRIVAL_H = 13 + 45 / 60
_WE_DEPARTURE_H = 16 + 13 / 60
_MEAN_KWH = 8.4

WORKPLACE = SessionModel(
    name="workplace",
    description="commercial / workplace car park: commuters on working days, visitors, few weekend sessions",
    working_day=DayType(1.0, (
        UserProfile("commuter", 0.7, _WD_ARRIVAL_H, 0.9, _WD_DEPARTURE_H - _WD_ARRIVAL_H, 0.12, _MEAN_KWH, 0.6),
        UserProfile("visitor", 0.3, 13.0, 2.5, 2.0, 0.5, _MEAN_KWH, 0.6),
    )),
    weekend=DayType(0.2, (
        UserProfile("visitor", 1.0, _WE_ARRIVAL_H, 1.5, _WE_DEPARTURE_H - _WE_ARRIVAL_H, 0.3, _MEAN_KWH, 0.6),
    )),
    source="EVnetNL (ElaadNL) public charging statistics 2015",
)

MODELS: dict[str, SessionModel] = {m.name: m for m in (WORKPLACE,)}


def model(name: str) -> SessionModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown session model {name!r}; known: {', '.join(sorted(MODELS))}") from None


__all__ = ["MODELS", "WORKPLACE", "DayType", "DrawnSession", "SessionModel", "UserProfile", "draw_day", "model"]
