"""Price entities: fixed, time-of-use (periods of the local day, DST included) or a CSV time series.

Prices are rates: each step holds the price valid at the step's start (no averaging).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import numpy as np

from simulators.profile_calendar import Calendar
from simulators.profile_errors import ProfileError, check_finite, finite_number
from simulators.profile_sources import Entity, parse_times, read_csv

PRICE_KINDS = ("fixed", "tou", "csv")

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
        imp[minutes] = finite_number(period["import"], f"price period {i} import")
        exp[minutes] = finite_number(period.get("export", 0.0), f"price period {i} export")
    gaps = np.flatnonzero(owner < 0)
    if gaps.size:
        raise ProfileError(
            f"price periods leave {_hhmm(int(gaps[0]))} uncovered ({gaps.size} min of the day without a price)"
        )
    return imp, exp


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _iso(epoch_s, cal: Calendar) -> str:
    return datetime.fromtimestamp(int(epoch_s), UTC).astimezone(cal.local_tz).isoformat()


def _step_starts_utc(cal: Calendar, row0: int, n: int) -> np.ndarray:
    t0 = int(cal.start_utc.timestamp())
    return t0 + cal.step_s * (row0 + np.arange(n, dtype=np.int64))


def price_entity(
    cal: Calendar,
    kind: str = "fixed",
    import_eur_per_kwh: float | None = None,
    export_eur_per_kwh: float | None = None,
    periods: list | None = None,
    path: str | None = None,
) -> Entity:
    """Prices are rates: each step holds the price valid at the step's start (no averaging)."""
    if kind == "fixed":
        if import_eur_per_kwh is None:
            raise ProfileError("fixed prices need import_eur_per_kwh (and optionally export_eur_per_kwh, default 0)")
        imp = finite_number(import_eur_per_kwh, "import_eur_per_kwh")
        exp = finite_number(0.0 if export_eur_per_kwh is None else export_eur_per_kwh, "export_eur_per_kwh")

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
        p, df = read_csv(path)
        if "time" not in df.columns or "import_eur_per_kwh" not in df.columns:
            raise ProfileError(
                f"price csv {p} needs columns time and import_eur_per_kwh[, export_eur_per_kwh]; "
                f"has {', '.join(map(str, df.columns))}"
            )
        secs = parse_times(p, df["time"])
        fixed_exp = finite_number(0.0 if export_eur_per_kwh is None else export_eur_per_kwh, "export_eur_per_kwh")
        try:
            imp_col = df["import_eur_per_kwh"].to_numpy(dtype=np.float64)
            exp_col = (
                df["export_eur_per_kwh"].to_numpy(dtype=np.float64)
                if "export_eur_per_kwh" in df.columns
                else np.full(len(df), fixed_exp)
            )
        except ValueError:
            raise ProfileError(f"price csv {p}: price columns must be numeric (EUR/kWh)") from None
        check_finite(f"price csv {p.name}", np.concatenate((imp_col, exp_col)))
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

    entity = Entity(("import_eur_per_kwh", "export_eur_per_kwh"), compute)
    entity.ensure(1)
    return entity
