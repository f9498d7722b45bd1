"""The profiles' calendar: simulated seconds to wall-clock time (prices) and to rows of yearly profiles.

Yearly profiles are indexed by the hour (row) of the year in the profile's local *standard* time; see
:class:`Calendar` and docs/profiles.md for the DST, leap-year and New-Year rules.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from simulators.profile_errors import ProfileError, positive_seconds


def _parse_start(start: str | datetime) -> datetime:
    if isinstance(start, str):
        try:
            start = datetime.fromisoformat(start)
        except ValueError as exc:
            raise ProfileError(f"start {start!r} is not an ISO 8601 date-time ({exc})") from None
    if not isinstance(start, datetime):
        raise ProfileError(f"start must be an ISO 8601 string or a datetime, got {type(start).__name__}")
    if start.tzinfo is None or start.utcoffset() is None:
        raise ProfileError(f"start {start.isoformat()} has no timezone; give an offset, e.g. +01:00")
    if start.microsecond:
        raise ProfileError(f"start {start.isoformat()} has sub-second precision; simulated time is whole seconds")
    return start


def _zone(timezone: str | tzinfo | None) -> tzinfo | None:
    if timezone is None or isinstance(timezone, tzinfo):
        return timezone
    try:
        return ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ProfileError(f"unknown timezone {timezone!r} (an IANA name such as 'Europe/Copenhagen')") from None


@dataclass(frozen=True)
class Calendar:
    """Maps simulated seconds to wall-clock time (prices) and to profile rows (yearly profiles).

    start         aware datetime of simulated second 0, in ``local_tz``
    step_s        simulation step in seconds
    local_tz      the scenario's wall clock (with DST if it is an IANA zone): used for time-of-use prices
    std_offset_s  UTC offset of the profiles' local standard time (no DST): used for yearly profiles
    """

    start: datetime
    step_s: int
    local_tz: tzinfo
    std_offset_s: int

    @classmethod
    def make(
        cls,
        start: str | datetime,
        step_s: int = 60,
        timezone: str | tzinfo | None = None,
        tz_offset_h: float | None = None,
    ) -> Calendar:
        """``timezone`` (IANA name) overrides the start's own tzinfo as the wall clock.

        ``tz_offset_h`` is the profiles' standard-time UTC offset; by default it is the standard
        offset of the wall clock at the start (its UTC offset minus DST). A start with a fixed offset
        and no ``timezone`` carries no DST information, so its offset is taken as standard time:
        give ``timezone="Europe/Copenhagen"`` (or ``tz_offset_h=1``) for a summer start like
        ``2019-06-15T00:00+02:00``.
        """
        start = _parse_start(start)
        step_s = positive_seconds(step_s, "step_s")
        tz = _zone(timezone) or start.tzinfo
        assert tz is not None  # _parse_start accepts only aware datetimes
        start = start.astimezone(tz)
        if tz_offset_h is None:
            utc_offset = start.utcoffset()
            assert utc_offset is not None
            std = utc_offset - (start.dst() or timedelta(0))
            std_offset_s = int(std.total_seconds())
        else:
            if not isinstance(tz_offset_h, numbers.Real) or not -14 <= tz_offset_h <= 14:
                raise ProfileError(f"tz_offset_h must be a number of hours in [-14, 14], got {tz_offset_h!r}")
            std_offset_s = round(tz_offset_h * 3600)
        return cls(start=start, step_s=step_s, local_tz=tz, std_offset_s=std_offset_s)

    @property
    def start_utc(self) -> datetime:
        return self.start.astimezone(UTC)

    def standard_time(self, t_s: int) -> datetime:
        """Naive local standard time of simulated second ``t_s`` (the profiles' clock)."""
        return (self.start_utc + timedelta(seconds=int(t_s) + self.std_offset_s)).replace(tzinfo=None)


def _is_leap(years: np.ndarray) -> np.ndarray:
    return (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))


def yearly_rows(base_year: int, idx: np.ndarray, rows_per_day: int, n_days: int) -> np.ndarray:
    """Profile row for each row-sized interval ``idx`` counted from Jan 1 00:00 of ``base_year``.

    A yearly profile repeats every calendar year (a run across New Year continues at the profile's
    first row). Leap days: a 365-day profile used in a leap year repeats Feb 28 for Feb 29; a 366-day
    profile used in a common year skips its Feb 29. A profile shorter than 365 days (the 364-day
    commercial profile) repeats its last day for the missing day(s) at the end of the year.
    """
    day = idx // rows_per_day  # floor division: negative idx falls into the previous year
    in_day = idx % rows_per_day
    dates = np.datetime64(f"{base_year:04d}-01-01") + day.astype("timedelta64[D]")
    year_start = dates.astype("datetime64[Y]")
    years = year_start.astype(np.int64) + 1970
    doy = (dates - year_start.astype("datetime64[D]")).astype(np.int64)  # 0-based, Feb 29 = 59
    leap = _is_leap(years)
    if n_days >= 366:
        pday = np.where(~leap & (doy >= 59), doy + 1, doy)
    else:
        pday = np.where(leap & (doy >= 59), np.where(doy == 59, 58, doy - 1), doy)
        pday = np.minimum(pday, n_days - 1)
    return pday * rows_per_day + in_day


def profile_row(
    start: str | datetime,
    t_s: int,
    n_rows: int = 8760,
    row_s: int = 3600,
    timezone: str | tzinfo | None = None,
    tz_offset_h: float | None = None,
) -> int:
    """Row of a yearly profile (``n_rows`` rows of ``row_s`` s) that holds simulated second ``t_s``."""
    cal = Calendar.make(start, 1, timezone, tz_offset_h)
    local = cal.standard_time(t_s)
    sec = int((local - datetime(local.year, 1, 1)).total_seconds())
    rpd = 86400 // row_s
    return int(yearly_rows(local.year, np.array([sec // row_s]), rpd, n_rows // rpd)[0])
