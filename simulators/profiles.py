"""Profiles simulator: load, PV and price time series for the co-simulation, resampled to the step.

The pieces: :mod:`simulators.profile_calendar` (simulated time to wall clock and profile rows),
:mod:`simulators.profile_sources` (S4G, SimBench and CSV load/PV data), :mod:`simulators.profile_prices`
(fixed, time-of-use and CSV prices). This module is the mosaik simulator over them and the same code path
as plain functions (:func:`load_pq`, :func:`pv_profile`, :func:`price_profile`).

Everything is precomputed as numpy arrays (one per entity and attribute); ``step`` only reads row
``t // step_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
import json

import mosaik_api_v3
import numpy as np

from simulators.profile_calendar import Calendar, profile_row
from simulators.profile_errors import ProfileError, name_range, positive_seconds
from simulators.profile_prices import PRICE_KINDS, price_entity
from simulators.profile_sources import LOAD_SOURCES, PV_SOURCES, Entity, data_dir, load_entity, pv_entity, s4g_columns

# The public profile API in one place (the names that used to live here before the split stay importable).
__all__ = [
    "LOAD_SOURCES",
    "PRICE_KINDS",
    "PV_SOURCES",
    "Calendar",
    "ProfileError",
    "ProfileSim",
    "data_dir",
    "load_pq",
    "load_profile",
    "price_profile",
    "profile_row",
    "pv_profile",
    "s4g_columns",
]

_FACTORIES: dict[str, Callable[..., Entity]] = {"Load": load_entity, "PV": pv_entity, "Price": price_entity}


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
        # many entities' values as one vector (element i: members[i]): one value per step for mosaik
        "Series": {
            "public": True,
            "params": ["members"],
            "attrs": ["p_w", "q_var", "w_per_kwp", "import_eur_per_kwh", "export_eur_per_kwh"],
        },
    },
    "extra_methods": ["series"],
}


class ProfileSim(mosaik_api_v3.Simulator):
    """Load (``p_w``, ``q_var``), PV (``w_per_kwp``) and Price (``import_eur_per_kwh``,
    ``export_eur_per_kwh``) entities; output at time t is the mean (price: the value) over the step
    that contains t. Time is integer seconds from ``start`` (time_resolution 1.0)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.cal: Calendar  # set by init, which mosaik calls first
        self.entities: dict[str, Entity] = {}
        self._counts: dict[str, int] = {}
        self._series: dict[str, tuple[list[Entity], np.ndarray]] = {}  # Series -> (distinct members, member -> k)
        self._shared: dict[str, Entity] = {}  # parameters (JSON) -> the entity all creations with them share
        self._row = 0
        self._horizon_rows = 1

    def init(  # type: ignore[override]  # mosaik passes the scenario's keyword arguments
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
            self._horizon_rows = -(-positive_seconds(horizon_s, "horizon_s") // self.cal.step_s)
        return self.meta

    def create(self, num: int, model: str, **model_params):
        if model == "Series":
            members = [self._entity(eid) for eid in model_params.get("members") or []]
            # members share series (same parameters): read each distinct one once, spread with one fancy index
            distinct = list({id(e): e for e in members}.values())
            where = {id(e): k for k, e in enumerate(distinct)}
            spread = np.array([where[id(e)] for e in members], dtype=np.int64)
            created = []
            for _ in range(num):
                eid = f"Series_{len(self._series)}"
                self._series[eid] = (distinct, spread)
                created.append({"eid": eid, "type": model})
            return created
        if model not in _FACTORIES:
            raise ProfileError(f"unknown model {model!r} (one of {', '.join(_FACTORIES)})")
        # Entities with identical parameters have identical series: share them (thousands of sites of a large
        # grid use a handful of profile columns; one copy each saves memory and the resampling).
        key = json.dumps([model, model_params], sort_keys=True, default=str)
        entity = self._shared.get(key)
        if entity is None:
            entity = self._shared[key] = _FACTORIES[model](self.cal, **model_params)
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
        for entity in self._shared.values():  # every entity, once
            try:
                entity.ensure(need)
            except ProfileError:
                entity.ensure(self._row + 1)  # a time series that ends with the run: extend per step
        return int(time) + step_s

    def get_data(self, outputs):
        data = {}
        row = self._row
        for eid, attrs in outputs.items():
            series = self._series.get(eid)
            if series is not None:
                distinct, spread = series
                for entity in distinct:
                    entity.ensure(row + 1)
                data[eid] = {attr: np.array([e.data[attr][row] for e in distinct], dtype=np.float64)[spread]
                             for attr in attrs}
                continue
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

    def _entity(self, eid: str) -> Entity:
        try:
            return self.entities[eid]
        except KeyError:
            raise ProfileError(f"no entity {eid!r} in {self.sid} ({name_range(list(self.entities))})") from None


# --------------------------------------------------------------------------------------------------
# Plain-Python API (no mosaik): the same code path as the simulator
# --------------------------------------------------------------------------------------------------


def _run(model: str, start, step_s, duration_s, timezone, tz_offset_h, params) -> dict[str, np.ndarray]:
    cal = Calendar.make(start, step_s, timezone, tz_offset_h)
    n = -(-positive_seconds(duration_s, "duration_s") // cal.step_s)
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
