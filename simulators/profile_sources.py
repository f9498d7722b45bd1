"""Where load and PV numbers come from, and the Load and PV entities built on them.

Sources
  s4g-residential  473 yearly residential load profiles, hourly kW      (column ``profile_N``)
  s4g-commercial   one yearly commercial load profile, hourly kW (364 d) (column ``commercial_general``)
  s4g-pv           PV output in W per kWp, hourly, leap year             (``fur_denmark``, ``bolzano_italy``)
  simbench         load / sgen profiles of a SimBench grid, 15-min MW    (``code`` + ``element``)
  csv              a user file: a yearly profile (no ``time`` column) or a time series (``time`` column)

A source returns its (padded) values around a window of the run; an :class:`Entity` resamples them to the
step with the energy-preserving resampler of :mod:`simulators.resample`, a block of steps at a time.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from simulators.profile_calendar import Calendar, yearly_rows
from simulators.profile_errors import ProfileError, check_finite, did_you_mean, finite_number, name_range
from simulators.resample import resample_means


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
_LOAD_UNITS = {"W": 1.0, "kW": 1e3, "MW": 1e6}
_PV_UNITS = {"W/kWp": 1.0, "kW/kWp": 1e3}


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
        check_finite(self.label, self.values)

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
        rows = yearly_rows(local.year, np.arange(i0, i1), rpd, self.values.size // rpd)
        return self.values[rows], sec - i0 * self.row_s


@dataclass(frozen=True)
class _SeriesSource:
    """A finite time series of interval means starting at ``t0`` (aware), ``row_s`` seconds each."""

    label: str
    values: np.ndarray
    row_s: int
    t0: datetime

    def __post_init__(self):
        check_finite(self.label, self.values)

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


def _resampled(source, cal: Calendar, row0: int, n: int) -> np.ndarray:
    """Step means of ``source`` for steps ``row0 … row0+n-1`` of the calendar."""
    t0_s = row0 * cal.step_s
    duration_s = n * cal.step_s
    padded, offset_s = source.window(cal, t0_s, duration_s)
    return resample_means(padded, source.row_s, cal.step_s, n, offset_s, source.method)


# ---- S4G package data -----------------------------------------------------------------------------


@functools.cache
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


@functools.cache
def _s4g_column(source: str, column: str) -> np.ndarray:
    """One column in output units (W or W/kWp); only columns that are asked for are converted."""
    names = s4g_columns(source)
    if column not in names:
        raise ProfileError(f"column {column!r} not in {source} ({name_range(names)}){did_you_mean(column, names)}")
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
            raise ProfileError(f"{source} needs a column ({name_range(names)})")
        column = names[0]
    return _YearlySource(f"{source} column {column!r}", _s4g_column(source, str(column)), 3600)


# ---- SimBench ---------------------------------------------------------------------------------------


def simbench_profiles(code: str):
    """The SimBench net's load and generator profiles (:mod:`simulators.simbench_data`: one parse per code for
    the grid and the profiles together, cached)."""
    from simulators import simbench_data

    try:
        return simbench_data.profiles(str(code))
    except simbench_data.UnknownSimbenchCode as exc:
        raise ProfileError(f"unknown SimBench code {code!r} ({exc})") from None


def _simbench_index(code: str | None, table: str, element: str | int | None) -> tuple[Any, int]:
    """(the code's profiles, the element's column in them)."""
    if not code:
        raise ProfileError("source 'simbench' needs code (a SimBench grid code, e.g. '1-LV-semiurb4--0-sw')")
    data = simbench_profiles(str(code))
    names = data.names[table]
    if element is None:
        raise ProfileError(f"source 'simbench' needs element: a {table} name of {code} ({name_range(names)})")
    if str(element) not in names:
        raise ProfileError(
            f"{table} {str(element)!r} not in simbench {code} ({name_range(names)})"
            f"{did_you_mean(str(element), names)}"
        )
    return data, names.index(str(element))


def _simbench_source(code: str | None, table: str, element, attr: str) -> _YearlySource:
    """SimBench profiles are 2016 (366 days) of 15-min means; used as a yearly profile."""
    data, col = _simbench_index(code, table, element)
    values = data.values[(table, attr)][:, col] * 1e6  # MW -> W, Mvar -> var
    if table == "sgen":
        peak_mw = float(data.sgen_p_mw[col])  # SimBench sgen p_mw is the installed power
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


def read_csv(path) -> tuple[Path, Any]:
    p = _resolve_path(path)
    return p, _read_csv_cached(str(p), p.stat().st_mtime_ns)


def parse_times(path: Path, col) -> np.ndarray:
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
    p, df = read_csv(path)
    names = [c for c in df.columns if c not in ("time", "hour")]
    if column is None:
        if len(names) != 1:
            raise ProfileError(f"csv {p.name} needs column ({name_range(names)})")
        column = names[0]
    if column not in names:
        raise ProfileError(f"column {column!r} not in csv {p} ({name_range(names)}){did_you_mean(column, names)}")
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
    secs = parse_times(p, df["time"])
    if secs.size < 2 or np.any(np.diff(secs) != secs[1] - secs[0]):
        raise ProfileError(f"{label}: times must be uniformly spaced (at least two rows)")
    t0 = datetime.fromtimestamp(int(secs[0]), UTC)
    return _SeriesSource(label, values, int(secs[1] - secs[0]), t0)


# ---- entities: each computes its attributes for a block of steps; the simulator stores the arrays ----


@dataclass
class Entity:
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


def _unit_factor(unit: str | None, units: dict[str, float], default: str) -> tuple[float, str]:
    unit = default if unit is None else unit
    if unit not in units:
        raise ProfileError(f"unit {unit!r} not known (one of {', '.join(units)})")
    return units[unit], unit


def _q_factor(power_factor) -> float:
    """q = p * tan(acos(pf)); pf > 0 inductive (q > 0, load arrow), pf < 0 capacitive (q < 0)."""
    pf = finite_number(power_factor, "power_factor")
    if pf == 0 or abs(pf) > 1:
        raise ProfileError(f"power_factor must be in (0, 1] (inductive) or [-1, 0) (capacitive), got {pf}")
    return math.copysign(math.tan(math.acos(abs(pf))), pf)


def load_entity(
    cal: Calendar,
    source: str = "s4g-residential",
    column: str | None = None,
    scale: float = 1.0,
    power_factor: float | None = None,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
) -> Entity:
    scale = finite_number(scale, "scale")
    p_src: _YearlySource | _SeriesSource
    q_src: _YearlySource | _SeriesSource | None
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
    # q from its own profile, else from p and the power factor
    q_per_p = 0.0 if q_src is not None else _q_factor(1.0 if power_factor is None else power_factor)

    def compute(row0: int, n: int) -> dict[str, np.ndarray]:
        p_w = _resampled(p_src, cal, row0, n) * scale
        q_var = _resampled(q_src, cal, row0, n) * scale if q_src is not None else p_w * q_per_p
        return {"p_w": p_w, "q_var": q_var}

    entity = Entity(("p_w", "q_var"), compute)
    entity.ensure(1)  # fail at creation (bad window, coverage), not in the middle of a run
    return entity


def pv_entity(
    cal: Calendar,
    source: str = "s4g-pv",
    column: str | None = None,
    scale: float = 1.0,
    path: str | None = None,
    code: str | None = None,
    element: str | None = None,
    unit: str | None = None,
) -> Entity:
    scale = finite_number(scale, "scale")
    if scale < 0:
        raise ProfileError(f"PV scale must be >= 0 (w_per_kwp is available power), got {scale}")
    src: _YearlySource | _SeriesSource
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

    entity = Entity(("w_per_kwp",), lambda row0, n: {"w_per_kwp": _resampled(src, cal, row0, n) * scale})
    entity.ensure(1)
    return entity
