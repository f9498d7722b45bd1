"""Profiles simulator: load, PV and price time series for the co-simulation, resampled to the step.

Sources
  s4g-residential  473 yearly residential load profiles, hourly kW      (column ``profile_N``)
  s4g-commercial   one yearly commercial load profile, hourly kW (364 d) (column ``commercial_general``)
  s4g-pv           PV output in W per kWp, hourly, leap year             (``fur_denmark``, ``bolzano_italy``)
  simbench         load / sgen profiles of a SimBench grid, 15-min MW    (``code`` + ``element``)
  csv              a user file: a yearly profile (no ``time`` column) or a time series (``time`` column)

Calendar: yearly profiles are indexed by the hour (row) of the year in the profile's local *standard*
time. See :class:`Calendar` and docs/profiles.md for the DST, leap-year and New-Year rules.

Everything is precomputed as numpy arrays (one per entity and attribute) with the energy-preserving
resampler of :mod:`simulators.resample`; ``step`` only reads row ``t // step_s``.
"""

from __future__ import annotations

import difflib
import functools
import math
import numbers
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as _fixed_tz, tzinfo
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import mosaik_api_v3
import numpy as np

from simulators.resample import resample_means

__all__ = [
    "ProfileError",
    "ProfileSim",
    "Calendar",
    "data_dir",
    "s4g_columns",
    "load_profile",
    "load_pq",
    "pv_profile",
    "price_profile",
    "profile_row",
    "LOAD_SOURCES",
    "PV_SOURCES",
    "PRICE_KINDS",
]


class ProfileError(ValueError):
    """A profile, column, file or price table that was asked for does not exist or is malformed.

    The message names what was asked and what exists; the scenario layer shows it to the user.
    """


def data_dir() -> Path:
    """The repository's ``scenarios/data`` folder (the package is installed editable)."""
    return Path(__file__).resolve().parents[1] / "scenarios" / "data"


# source name -> (file under data_dir()/s4g, factor from file unit to output unit, label of the unit)
_S4G_FILES = {
    "s4g-residential": ("residential_load_kw_hourly.csv.gz", 1000.0),  # kW -> W
    "s4g-commercial": ("commercial_load_kw_hourly.csv", 1000.0),  # kW -> W
    "s4g-pv": ("pv_w_per_kwp_hourly.csv", 1.0),  # already W/kWp
}
LOAD_SOURCES = ("s4g-residential", "s4g-commercial", "simbench", "csv")
PV_SOURCES = ("s4g-pv", "simbench", "csv")
PRICE_KINDS = ("fixed", "tou", "csv")
_LOAD_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
_PV_UNITS = {"W/kWp": 1.0, "kW/kWp": 1e3}


# --------------------------------------------------------------------------------------------------
# Calendar
# --------------------------------------------------------------------------------------------------


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
        step_s = _positive_int(step_s, "step_s")
        tz = _zone(timezone) or start.tzinfo
        start = start.astimezone(tz)
        if tz_offset_h is None:
            std = start.utcoffset() - (start.dst() or timedelta(0))
            std_offset_s = int(std.total_seconds())
        else:
            if not isinstance(tz_offset_h, numbers.Real) or not -14 <= tz_offset_h <= 14:
                raise ProfileError(f"tz_offset_h must be a number of hours in [-14, 14], got {tz_offset_h!r}")
            std_offset_s = int(round(tz_offset_h * 3600))
        return cls(start=start, step_s=step_s, local_tz=tz, std_offset_s=std_offset_s)

    @property
    def start_utc(self) -> datetime:
        return self.start.astimezone(_fixed_tz.utc)

    def standard_time(self, t_s: int) -> datetime:
        """Naive local standard time of simulated second ``t_s`` (the profiles' clock)."""
        return (self.start_utc + timedelta(seconds=int(t_s) + self.std_offset_s)).replace(tzinfo=None)


def _is_leap(years: np.ndarray) -> np.ndarray:
    return (years % 4 == 0) & ((years % 100 != 0) | (years % 400 == 0))


def _yearly_rows(base_year: int, idx: np.ndarray, rows_per_day: int, n_days: int) -> np.ndarray:
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
    return int(_yearly_rows(local.year, np.array([sec // row_s]), rpd, n_rows // rpd)[0])


# --------------------------------------------------------------------------------------------------
# Sources: a source returns the (padded) source values around a window; entities resample them.
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _YearlySource:
    """A cyclic yearly profile of interval means (``row_s`` seconds each) in local standard time."""

    label: str
    values: np.ndarray
    row_s: int

    def __post_init__(self):
        rpd = 86400 // self.row_s
        n_days, rest = divmod(self.values.size, rpd)
        if 86400 % self.row_s or rest or not 364 <= n_days <= 366:
            raise ProfileError(
                f"{self.label}: {self.values.size} rows of {self.row_s} s is not a yearly profile "
                f"(expected 364, 365 or 366 days, e.g. 8760 hourly or 35040 quarter-hourly rows)"
            )
        _check_finite(self.label, self.values)

    @functools.cached_property
    def method(self) -> str:
        return "pchip" if np.all(self.values >= 0) else "mean"

    def window(self, cal: Calendar, t0_s: int, duration_s: int) -> tuple[np.ndarray, int]:
        local = cal.standard_time(t0_s)
        sec = int((local - datetime(local.year, 1, 1)).total_seconds())
        # One padding row on each side so edge knots see real neighbours (chunk-independent results).
        i0 = sec // self.row_s - 1
        i1 = -(-(sec + duration_s) // self.row_s) + 1
        rpd = 86400 // self.row_s
        rows = _yearly_rows(local.year, np.arange(i0, i1), rpd, self.values.size // rpd)
        return self.values[rows], sec - i0 * self.row_s


@dataclass(frozen=True)
class _SeriesSource:
    """A finite time series of interval means starting at ``t0`` (aware), ``row_s`` seconds each."""

    label: str
    values: np.ndarray
    row_s: int
    t0: datetime

    def __post_init__(self):
        _check_finite(self.label, self.values)

    @functools.cached_property
    def method(self) -> str:
        return "pchip" if np.all(self.values >= 0) else "mean"

    def window(self, cal: Calendar, t0_s: int, duration_s: int) -> tuple[np.ndarray, int]:
        sec = int((cal.start_utc - self.t0).total_seconds()) + t0_s
        end = sec + duration_s
        n = self.values.size
        if sec < 0 or end > n * self.row_s:
            def iso(offset_s: int, base: datetime) -> str:
                return (base + timedelta(seconds=offset_s)).astimezone(cal.local_tz).isoformat()

            raise ProfileError(
                f"{self.label} covers {iso(0, self.t0)} … {iso(n * self.row_s, self.t0)}, but the run needs "
                f"{iso(t0_s, cal.start)} … {iso(t0_s + duration_s, cal.start)} "
                f"(a time series is not wrapped; drop the time column to use it as a yearly profile)"
            )
        i0 = sec // self.row_s - 1
        i1 = -(-end // self.row_s) + 1
        idx = np.clip(np.arange(i0, i1), 0, n - 1)  # beyond the ends: replicate the edge value
        return self.values[idx], sec - i0 * self.row_s


def _check_finite(label: str, values: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise ProfileError(f"{label}: {bad.size} missing or non-finite values (first at row {bad[0]})")


def _resampled(source, cal: Calendar, row0: int, n: int) -> np.ndarray:
    """Step means of ``source`` for steps ``row0 … row0+n-1`` of the calendar."""
    t0_s = row0 * cal.step_s
    duration_s = n * cal.step_s
    padded, offset_s = source.window(cal, t0_s, duration_s)
    return resample_means(padded, source.row_s, cal.step_s, n, offset_s, source.method)


# ---- S4G package data -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _s4g_table(source: str):
    """The whole file parsed once per process into Arrow (multi-threaded C++ parser, ~0.3-0.5 s)."""
    import pyarrow.csv as pacsv

    name, _ = _S4G_FILES[source]
    path = data_dir() / "s4g" / name
    if not path.is_file():
        raise ProfileError(f"{source} data file missing: {path} (the package data under scenarios/data/s4g)")
    return pacsv.read_csv(path)


def s4g_columns(source: str) -> list[str]:
    """Profile columns of an S4G source, e.g. ``s4g_columns("s4g-pv") == ["fur_denmark", "bolzano_italy"]``."""
    if source not in _S4G_FILES:
        raise ProfileError(f"unknown S4G source {source!r} (one of {', '.join(_S4G_FILES)})")
    return [c for c in _s4g_table(source).column_names if c != "hour"]


@functools.lru_cache(maxsize=None)
def _s4g_column(source: str, column: str) -> np.ndarray:
    """One column in output units (W or W/kWp); only columns that are asked for are converted."""
    names = s4g_columns(source)
    if column not in names:
        raise ProfileError(f"column {column!r} not in {source} ({_name_range(names)}){_did_you_mean(column, names)}")
    chunks = _s4g_table(source).column(column).chunks
    if any(c.null_count for c in chunks):
        raise ProfileError(f"column {column!r} of {source} has missing values")
    # Read the Arrow buffers directly: Array.to_numpy() would import pandas (~0.4 s) on first use.
    values = np.concatenate(
        [np.frombuffer(c.buffers()[1], dtype=np.float64, count=len(c), offset=c.offset * 8) for c in chunks]
    ) * _S4G_FILES[source][1]
    values.flags.writeable = False  # shared by every entity using the column
    return values


def _s4g_source(source: str, column: str | None) -> _YearlySource:
    names = s4g_columns(source)
    if column is None:
        if len(names) != 1:
            raise ProfileError(f"{source} needs a column ({_name_range(names)})")
        column = names[0]
    return _YearlySource(f"{source} column {column!r}", _s4g_column(source, str(column)), 3600)


def _name_range(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else f"{names[0]} … {names[-1]}, {len(names)} in all"


def _did_you_mean(name: str, names: list[str]) -> str:
    close = [n for n in names if n.startswith(str(name))][:3] or difflib.get_close_matches(str(name), names, n=3)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# ---- SimBench ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _simbench(code: str):
    """SimBench net and its absolute profiles (loading a net takes seconds: once per code and process)."""
    import simbench

    try:
        net = simbench.get_simbench_net(code)
    except Exception as exc:  # simbench raises plain ValueError/KeyError with little context
        raise ProfileError(
            f"unknown SimBench code {code!r} ({exc}); e.g. '1-LV-semiurb4--0-sw', "
            f"see simbench.collect_all_simbench_codes()"
        ) from None
    profiles = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
    return net, profiles


def _simbench_index(code: str, table: str, element: str | int | None) -> tuple[Any, int]:
    if not code:
        raise ProfileError("source 'simbench' needs code (a SimBench grid code, e.g. '1-LV-semiurb4--0-sw')")
    net, _ = _simbench(str(code))
    names = [str(n) for n in getattr(net, table).name]
    if element is None:
        raise ProfileError(f"source 'simbench' needs element: a {table} name of {code} ({_name_range(names)})")
    if str(element) not in names:
        raise ProfileError(
            f"{table} {str(element)!r} not in simbench {code} ({_name_range(names)})"
            f"{_did_you_mean(str(element), names)}"
        )
    return net, int(getattr(net, table).index[names.index(str(element))])


def _simbench_source(code: str, table: str, element, attr: str) -> _YearlySource:
    """SimBench profiles are 2016 (366 days) of 15-min means; used as a yearly profile."""
    net, idx = _simbench_index(code, table, element)
    _, profiles = _simbench(str(code))
    values = profiles[(table, attr)][idx].to_numpy(dtype=np.float64) * 1e6  # MW -> W, Mvar -> var
    if table == "sgen":
        peak_mw = float(net.sgen.at[idx, "p_mw"])  # SimBench sgen p_mw is the installed power
        if peak_mw <= 0:
            raise ProfileError(f"simbench sgen {element!r} in {code} has no installed power (p_mw = {peak_mw})")
        values = values / (peak_mw * 1e3)  # W / kWp
    return _YearlySource(f"simbench {code} {table} {element!r} {attr}", values, 900)


# ---- user CSV files ---------------------------------------------------------------------------------

_TZ_SUFFIX = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


def _resolve_path(path) -> Path:
    if not path:
        raise ProfileError("source 'csv' needs path (a CSV file)")
    p = Path(path).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, data_dir() / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ProfileError(f"csv file {str(path)!r} not found (looked in: {', '.join(str(c) for c in candidates)})")


@functools.lru_cache(maxsize=32)
def _read_csv_cached(path: str, mtime_ns: int):
    import pandas as pd

    try:
        return pd.read_csv(path)
    except Exception as exc:
        raise ProfileError(f"cannot read csv file {path!r}: {exc}") from None


def _read_csv(path) -> tuple[Path, Any]:
    p = _resolve_path(path)
    return p, _read_csv_cached(str(p), p.stat().st_mtime_ns)


def _parse_times(path: Path, col) -> np.ndarray:
    """ISO times with offset -> int64 UTC epoch seconds."""
    import pandas as pd

    text = col.astype(str).str.strip()
    naive = ~text.str.contains(_TZ_SUFFIX)
    if naive.any():
        i = int(np.flatnonzero(naive.to_numpy())[0])
        raise ProfileError(
            f"{path}: time {text.iloc[i]!r} (row {i + 1}) has no UTC offset, e.g. 2019-06-15T00:00+02:00"
        )
    try:
        times = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError) as exc:
        raise ProfileError(f"{path}: cannot parse the time column ({exc})") from None
    secs = times.dt.tz_localize(None).to_numpy().astype("datetime64[s]").astype(np.int64)  # naive UTC
    if secs.size and np.any(np.diff(secs) <= 0):
        i = int(np.flatnonzero(np.diff(secs) <= 0)[0]) + 1
        raise ProfileError(f"{path}: times must increase strictly (row {i + 1}: {text.iloc[i]})")
    return secs


def _csv_source(path, column, factor: float, unit_label: str) -> _YearlySource | _SeriesSource:
    """A CSV with a ``time`` column is a time series; without one it is a yearly profile by row count."""
    p, df = _read_csv(path)
    names = [c for c in df.columns if c not in ("time", "hour")]
    if column is None:
        if len(names) != 1:
            raise ProfileError(f"csv {p.name} needs column ({_name_range(names)})")
        column = names[0]
    if column not in names:
        raise ProfileError(f"column {column!r} not in csv {p} ({_name_range(names)}){_did_you_mean(column, names)}")
    try:
        values = df[column].to_numpy(dtype=np.float64) * factor
    except ValueError:
        raise ProfileError(f"csv {p} column {column!r} is not numeric ({unit_label})") from None
    label = f"csv {p.name} column {column!r}"
    if "time" not in df.columns:
        n = values.size
        for row_s in (3600, 900, 1800, 600, 300, 60):
            if n % (86400 // row_s) == 0 and 364 <= n // (86400 // row_s) <= 366:
                return _YearlySource(label, values, row_s)
        raise ProfileError(
            f"{label}: {n} rows without a time column is not a yearly profile "
            f"(364-366 days of 1-60 min rows, e.g. 8760); add a time column with ISO times"
        )
    secs = _parse_times(p, df["time"])
    if secs.size < 2 or np.any(np.diff(secs) != secs[1] - secs[0]):
        raise ProfileError(f"{label}: times must be uniformly spaced (at least two rows)")
    t0 = datetime.fromtimestamp(int(secs[0]), _fixed_tz.utc)
    return _SeriesSource(label, values, int(secs[1] - secs[0]), t0)


# --------------------------------------------------------------------------------------------------
# Entities: each computes its attributes for a block of steps; the simulator stores the arrays.
# --------------------------------------------------------------------------------------------------


@dataclass
class _Entity:
    attrs: tuple[str, ...]
    compute: Callable[[int, int], dict[str, np.ndarray]]  # (first step row, n rows) -> attr -> values
    data: dict[str, np.ndarray] = field(default_factory=dict)
    rows: int = 0

    def ensure(self, n_rows: int) -> None:
        """Precompute at least ``n_rows`` steps; grows geometrically so long runs extend rarely."""
        if n_rows <= self.rows:
            return
        n_new = max(n_rows - self.rows, self.rows)
        try:
            block = self.compute(self.rows, n_new)
        except ProfileError:
            if n_new == n_rows - self.rows:
                raise
            n_new = n_rows - self.rows  # a finite time series may end right after what is asked
            block = self.compute(self.rows, n_new)
        self.data = {a: np.concatenate((self.data[a], block[a])) if self.rows else block[a] for a in self.attrs}
        self.rows += n_new


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0 or value != int(value):
        raise ProfileError(f"{name} must be a positive whole number of seconds, got {value!r}")
    return int(value)


def _number(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ProfileError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _unit_factor(unit: str | None, units: dict[str, float], default: str) -> tuple[float, str]:
    unit = default if unit is None else unit
    if unit not in units:
        raise ProfileError(f"unit {unit!r} not known (one of {', '.join(units)})")
    return units[unit], unit


def _q_factor(power_factor) -> float:
    """q = p * tan(acos(pf)); pf > 0 inductive (q > 0, load arrow), pf < 0 capacitive (q < 0)."""
    pf = _number(power_factor, "power_factor")
    if pf == 0 or abs(pf) > 1:
        raise ProfileError(f"power_factor must be in (0, 1] (inductive) or [-1, 0) (capacitive), got {pf}")
    return math.copysign(math.tan(math.acos(abs(pf))), pf)


def _load_entity(
    cal: Calendar,
    source: str = "s4g-residential",
    column: str | None = None,
    scale: float = 1.0,
    power_factor: float | None = None,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
) -> _Entity:
    scale = _number(scale, "scale")
    if source in ("s4g-residential", "s4g-commercial"):
        p_src, q_src = _s4g_source(source, column), None
    elif source == "simbench":
        p_src = _simbench_source(code, "load", element, "p_mw")
        q_src = _simbench_source(code, "load", element, "q_mvar") if power_factor is None else None
    elif source == "csv":
        factor, unit = _unit_factor(unit, _LOAD_UNITS, "W")
        p_src, q_src = _csv_source(path, column, factor, unit), None
    else:
        raise ProfileError(f"unknown Load source {source!r} (one of {', '.join(LOAD_SOURCES)})")
    q_per_p = None if q_src is not None else _q_factor(1.0 if power_factor is None else power_factor)

    def compute(row0: int, n: int) -> dict[str, np.ndarray]:
        p_w = _resampled(p_src, cal, row0, n) * scale
        q_var = _resampled(q_src, cal, row0, n) * scale if q_src is not None else p_w * q_per_p
        return {"p_w": p_w, "q_var": q_var}

    entity = _Entity(("p_w", "q_var"), compute)
    entity.ensure(1)  # fail at creation (bad window, coverage), not in the middle of a run
    return entity


def _pv_entity(
    cal: Calendar,
    source: str = "s4g-pv",
    column: str | None = None,
    scale: float = 1.0,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
) -> _Entity:
    scale = _number(scale, "scale")
    if scale < 0:
        raise ProfileError(f"PV scale must be >= 0 (w_per_kwp is available power), got {scale}")
    if source == "s4g-pv":
        src = _s4g_source(source, column)
    elif source == "simbench":
        src = _simbench_source(code, "sgen", element, "p_mw")
    elif source == "csv":
        factor, unit = _unit_factor(unit, _PV_UNITS, "W/kWp")
        src = _csv_source(path, column, factor, unit)
    else:
        raise ProfileError(f"unknown PV source {source!r} (one of {', '.join(PV_SOURCES)})")
    if src.method != "pchip":
        raise ProfileError(f"{src.label} has negative values; PV w_per_kwp must be >= 0")

    entity = _Entity(("w_per_kwp",), lambda row0, n: {"w_per_kwp": _resampled(src, cal, row0, n) * scale})
    entity.ensure(1)
    return entity


# ---- prices -----------------------------------------------------------------------------------------

_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


def _minute_of_day(text, what: str, allow_24: bool) -> int:
    m = _HHMM.match(str(text).strip())
    if not m or int(m.group(2)) > 59 or int(m.group(1)) > 24 or (int(m.group(1)) == 24 and int(m.group(2))):
        raise ProfileError(f"price period {what} {text!r} is not a time 'HH:MM' (00:00 … 24:00)")
    minute = int(m.group(1)) * 60 + int(m.group(2))
    if minute == 1440 and not allow_24:
        raise ProfileError(f"price period {what} {text!r}: a period cannot start at 24:00")
    return minute


def _tou_tables(periods) -> tuple[np.ndarray, np.ndarray]:
    """Import and export price for each minute of the local day; every minute covered exactly once."""
    if not isinstance(periods, (list, tuple)) or not periods:
        raise ProfileError(
            "time-of-use prices need periods: a list of {from: 'HH:MM', to: 'HH:MM', import, export}"
        )
    owner = np.full(1440, -1)
    imp, exp = np.zeros(1440), np.zeros(1440)
    for i, period in enumerate(periods, 1):
        if not isinstance(period, dict):
            raise ProfileError(f"price period {i} must be a mapping with from, to, import, export; got {period!r}")
        unknown = set(period) - {"from", "to", "import", "export"}
        missing = {"from", "to", "import"} - set(period)
        if unknown or missing:
            problems = [f"unknown keys {sorted(unknown)}"] * bool(unknown)
            problems += [f"missing keys {sorted(missing)}"] * bool(missing)
            raise ProfileError(f"price period {i} {period!r}: {'; '.join(problems)} (keys: from, to, import, export)")
        a = _minute_of_day(period["from"], "from", allow_24=False)
        b = _minute_of_day(period["to"], "to", allow_24=True)
        if a == b:
            raise ProfileError(
                f"price period {i} is empty ({period['from']} to {period['to']}); use 00:00 to 24:00 for a whole day"
            )
        # to <= from wraps over midnight (22:00 to 06:00).
        minutes = np.arange(a, b) if a < b else np.concatenate((np.arange(a, 1440), np.arange(0, b)))
        clash = owner[minutes] >= 0
        if clash.any():
            j = int(owner[minutes[clash][0]]) + 1
            raise ProfileError(f"price periods {j} and {i} overlap at {_hhmm(int(minutes[clash][0]))}")
        owner[minutes] = i - 1
        imp[minutes] = _number(period["import"], f"price period {i} import")
        exp[minutes] = _number(period.get("export", 0.0), f"price period {i} export")
    gaps = np.flatnonzero(owner < 0)
    if gaps.size:
        raise ProfileError(
            f"price periods leave {_hhmm(int(gaps[0]))} uncovered ({gaps.size} min of the day without a price)"
        )
    return imp, exp


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _iso(epoch_s, cal: Calendar) -> str:
    return datetime.fromtimestamp(int(epoch_s), _fixed_tz.utc).astimezone(cal.local_tz).isoformat()


def _step_starts_utc(cal: Calendar, row0: int, n: int) -> np.ndarray:
    t0 = int(cal.start_utc.timestamp())
    return t0 + cal.step_s * (row0 + np.arange(n, dtype=np.int64))


def _price_entity(
    cal: Calendar,
    kind: str = "fixed",
    import_eur_per_kwh: float | None = None,
    export_eur_per_kwh: float | None = None,
    periods: list | None = None,
    path: str | None = None,
) -> _Entity:
    """Prices are rates: each step holds the price valid at the step's start (no averaging)."""
    if kind == "fixed":
        if import_eur_per_kwh is None:
            raise ProfileError("fixed prices need import_eur_per_kwh (and optionally export_eur_per_kwh, default 0)")
        imp = _number(import_eur_per_kwh, "import_eur_per_kwh")
        exp = _number(0.0 if export_eur_per_kwh is None else export_eur_per_kwh, "export_eur_per_kwh")

        def compute(row0, n):
            return {"import_eur_per_kwh": np.full(n, imp), "export_eur_per_kwh": np.full(n, exp)}

    elif kind == "tou":
        imp_min, exp_min = _tou_tables(periods)

        def compute(row0, n):
            import pandas as pd

            # Wall clock of each step start in the scenario timezone, DST included.
            utc = pd.DatetimeIndex(_step_starts_utc(cal, row0, n).astype("datetime64[s]"), tz="UTC")
            local = utc.tz_convert(cal.local_tz)
            minute = np.asarray(local.hour * 60 + local.minute)
            return {"import_eur_per_kwh": imp_min[minute], "export_eur_per_kwh": exp_min[minute]}

    elif kind == "csv":
        p, df = _read_csv(path)
        if "time" not in df.columns or "import_eur_per_kwh" not in df.columns:
            raise ProfileError(
                f"price csv {p} needs columns time and import_eur_per_kwh[, export_eur_per_kwh]; "
                f"has {', '.join(map(str, df.columns))}"
            )
        secs = _parse_times(p, df["time"])
        fixed_exp = _number(0.0 if export_eur_per_kwh is None else export_eur_per_kwh, "export_eur_per_kwh")
        try:
            imp_col = df["import_eur_per_kwh"].to_numpy(dtype=np.float64)
            exp_col = (
                df["export_eur_per_kwh"].to_numpy(dtype=np.float64)
                if "export_eur_per_kwh" in df.columns
                else np.full(len(df), fixed_exp)
            )
        except ValueError:
            raise ProfileError(f"price csv {p}: price columns must be numeric (EUR/kWh)") from None
        _check_finite(f"price csv {p.name}", np.concatenate((imp_col, exp_col)))
        # A row's price holds until the next row; the last one for one more (last) interval.
        end = secs[-1] + (secs[-1] - secs[-2]) if secs.size > 1 else np.iinfo(np.int64).max

        def compute(row0, n):
            t = _step_starts_utc(cal, row0, n)
            if t[0] < secs[0] or t[-1] >= end:
                cover = f"{_iso(secs[0], cal)} … {_iso(end, cal)}" if secs.size > 1 else f"from {_iso(secs[0], cal)}"
                need = f"{_iso(t[0], cal)} … {_iso(t[-1] + cal.step_s, cal)}"
                raise ProfileError(f"price csv {p} covers {cover}, but the run needs {need}")
            i = np.searchsorted(secs, t, side="right") - 1
            return {"import_eur_per_kwh": imp_col[i], "export_eur_per_kwh": exp_col[i]}

    else:
        raise ProfileError(f"unknown price kind {kind!r} (one of {', '.join(PRICE_KINDS)})")

    entity = _Entity(("import_eur_per_kwh", "export_eur_per_kwh"), compute)
    entity.ensure(1)
    return entity


_FACTORIES = {"Load": _load_entity, "PV": _pv_entity, "Price": _price_entity}


# --------------------------------------------------------------------------------------------------
# mosaik simulator
# --------------------------------------------------------------------------------------------------

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Load": {
            "public": True,
            "params": ["source", "column", "scale", "power_factor", "path", "code", "element", "unit"],
            "attrs": ["p_w", "q_var"],
        },
        "PV": {
            "public": True,
            "params": ["source", "column", "scale", "path", "code", "element", "unit"],
            "attrs": ["w_per_kwp"],
        },
        "Price": {
            "public": True,
            "params": ["kind", "import_eur_per_kwh", "export_eur_per_kwh", "periods", "path"],
            "attrs": ["import_eur_per_kwh", "export_eur_per_kwh"],
        },
    },
    "extra_methods": ["series"],
}


class ProfileSim(mosaik_api_v3.Simulator):
    """Load (``p_w``, ``q_var``), PV (``w_per_kwp``) and Price (``import_eur_per_kwh``,
    ``export_eur_per_kwh``) entities; output at time t is the mean (price: the value) over the step
    that contains t. Time is integer seconds from ``start`` (time_resolution 1.0)."""

    def __init__(self):
        super().__init__(META)
        self.cal: Calendar | None = None
        self.entities: dict[str, _Entity] = {}
        self._counts: dict[str, int] = {}
        self._row = 0
        self._horizon_rows = 1

    def init(
        self,
        sid,
        time_resolution: float = 1.0,
        start: str | datetime = "2019-06-15T00:00:00+02:00",
        step_size: int = 60,
        horizon_s: int | None = None,
        timezone: str | None = None,
        tz_offset_h: float | None = None,
    ):
        """``horizon_s``: run length if known, to precompute everything at create time; otherwise the
        first step precomputes up to mosaik's ``until`` and later requests extend the arrays."""
        if float(time_resolution) != 1.0:
            raise ProfileError(f"ProfileSim works in seconds: time_resolution must be 1.0, got {time_resolution}")
        self.sid = sid
        self.cal = Calendar.make(start, step_size, timezone, tz_offset_h)
        if horizon_s is not None:
            self._horizon_rows = -(-_positive_int(horizon_s, "horizon_s") // self.cal.step_s)
        return self.meta

    def create(self, num: int, model: str, **model_params):
        if model not in _FACTORIES:
            raise ProfileError(f"unknown model {model!r} (one of {', '.join(_FACTORIES)})")
        # Entities created in one call have identical parameters, hence identical series: share them.
        entity = _FACTORIES[model](self.cal, **model_params)
        entity.ensure(self._horizon_rows)
        created = []
        for _ in range(num):
            n = self._counts.get(model, 0)
            self._counts[model] = n + 1
            eid = f"{model}_{n}"
            self.entities[eid] = entity
            created.append({"eid": eid, "type": model})
        return created

    def step(self, time: int, inputs, max_advance: int):
        step_s = self.cal.step_s
        self._row = int(time) // step_s
        # max_advance is the run's end for time-based simulators: precompute the rest of the run once.
        need = max(self._row + 1, -(-(int(max_advance) + 1) // step_s))
        for entity in self.entities.values():
            try:
                entity.ensure(need)
            except ProfileError:
                entity.ensure(self._row + 1)  # a time series that ends with the run: extend per step
        return int(time) + step_s

    def get_data(self, outputs):
        data = {}
        for eid, attrs in outputs.items():
            entity = self._entity(eid)
            entity.ensure(self._row + 1)
            values = {}
            for attr in attrs:
                if attr not in entity.attrs:
                    raise ProfileError(f"{eid} has no attribute {attr!r} ({', '.join(entity.attrs)})")
                values[attr] = float(entity.data[attr][self._row])
            data[eid] = values
        return data

    def series(self, eid: str, attr: str, t_s: int, horizon_s: int) -> np.ndarray:
        """True future values of ``attr`` for the steps from the one holding ``t_s`` over ``horizon_s``
        seconds (``ceil(horizon_s / step)`` values): a perfect forecast for controllers."""
        entity = self._entity(eid)
        if attr not in entity.attrs:
            raise ProfileError(f"{eid} has no attribute {attr!r} ({', '.join(entity.attrs)})")
        step_s = self.cal.step_s
        row0 = int(t_s) // step_s
        n = -(-int(horizon_s) // step_s)
        entity.ensure(row0 + n)
        return entity.data[attr][row0 : row0 + n].copy()

    def _entity(self, eid: str) -> _Entity:
        try:
            return self.entities[eid]
        except KeyError:
            raise ProfileError(f"no entity {eid!r} in {self.sid} ({_name_range(list(self.entities))})") from None


# --------------------------------------------------------------------------------------------------
# Plain-Python API (no mosaik): the same code path as the simulator
# --------------------------------------------------------------------------------------------------


def _run(model: str, start, step_s, duration_s, timezone, tz_offset_h, params) -> dict[str, np.ndarray]:
    cal = Calendar.make(start, step_s, timezone, tz_offset_h)
    n = -(-_positive_int(duration_s, "duration_s") // cal.step_s)
    return _FACTORIES[model](cal, **params).compute(0, n)


def load_pq(
    source: str = "s4g-residential",
    column: str | None = None,
    *,
    start: str | datetime,
    duration_s: int,
    step_s: int = 60,
    scale: float = 1.0,
    power_factor: float | None = None,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
    timezone: str | None = None,
    tz_offset_h: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(p_w, q_var)`` of a load for ``ceil(duration_s / step_s)`` steps from ``start``."""
    out = _run(
        "Load", start, step_s, duration_s, timezone, tz_offset_h,
        dict(source=source, column=column, scale=scale, power_factor=power_factor, path=path, code=code,
             element=element, unit=unit),
    )
    return out["p_w"], out["q_var"]


def load_profile(source: str = "s4g-residential", column: str | None = None, **kwargs) -> np.ndarray:
    """``p_w`` of a load (same arguments as :func:`load_pq`)."""
    return load_pq(source, column, **kwargs)[0]


def pv_profile(
    source: str = "s4g-pv",
    column: str | None = None,
    *,
    start: str | datetime,
    duration_s: int,
    step_s: int = 60,
    scale: float = 1.0,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
    timezone: str | None = None,
    tz_offset_h: float | None = None,
) -> np.ndarray:
    """Available PV power ``w_per_kwp`` (W per installed kWp, >= 0)."""
    return _run(
        "PV", start, step_s, duration_s, timezone, tz_offset_h,
        dict(source=source, column=column, scale=scale, path=path, code=code, element=element, unit=unit),
    )["w_per_kwp"]


def price_profile(
    kind: str = "fixed",
    *,
    start: str | datetime,
    duration_s: int,
    step_s: int = 60,
    import_eur_per_kwh: float | None = None,
    export_eur_per_kwh: float | None = None,
    periods: list | None = None,
    path: str | None = None,
    timezone: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(import_eur_per_kwh, export_eur_per_kwh)`` per step (the price valid at each step's start)."""
    out = _run(
        "Price", start, step_s, duration_s, timezone, None,
        dict(kind=kind, import_eur_per_kwh=import_eur_per_kwh, export_eur_per_kwh=export_eur_per_kwh,
             periods=periods, path=path),
    )
    return out["import_eur_per_kwh"], out["export_eur_per_kwh"]


if __name__ == "__main__":  # run as a standalone mosaik process: python -m simulators.profiles HOST:PORT
    mosaik_api_v3.start_simulation(ProfileSim(), "S4G profiles simulator")
