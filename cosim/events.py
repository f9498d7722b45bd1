"""Scheduled events of a scenario: grid outages at a PCC, voltage sags, device trips, communication losses.

    events:
      - {kind: outage, site: lab, from: 10h, duration: 45min}       # the PCC opens: the site runs as an island
      - {kind: voltage_sag, from: 2019-06-15T14:00:00+03:00, duration: 1min, v_pu: 0.8}
      - {kind: device_trip, device: er, from: 16h, duration: 10min}
      - {kind: comm_loss, role: "smx:lab", from: 18h, duration: 15min}   # or: device: er

``from`` is a duration from the scenario start or a timezone-aware date and time; ``from`` and ``duration`` are
whole multiples of the step (events take effect at step boundaries: nothing is rounded). An event is active over
``[from, from + duration)``; one after the end of the run (e.g. a run shortened with ``--until``) does not happen.

This module holds the section's schema and the schedule (pure functions of time); the mosaik side is
:mod:`cosim.event_sim`, the wiring :mod:`cosim.world`. What each kind does:

- ``outage``: the site's PCC opens in the grid simulation; the rest of the feeder's power flow goes on. The
  point draws 0 W and reports 0 V (its phases too): the grid is absent on the site side of the PCC. Devices
  reading ``point.grid_present`` there see 0 in the same step.
- ``voltage_sag``: the feeder's source voltage (the slack bus) is ``v_pu`` times its set value; every voltage
  follows through the power flow.
- ``device_trip``: the device's protection opens its AC connection: its power is not drawn at its connection
  point, and a family reading ``point.grid_present`` sees 0 (so it can island, as a real device does).
- ``comm_loss``: the flows of a broker role (``smx:<site>``, ``data``, ...; a base role covers all its sites), or
  every controller flow to or from one device, are not delivered: the receivers hold the last value they got.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Literal
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cosim.durations import positive_whole_seconds, whole_seconds
from cosim.messaging.errors import TopicError
from cosim.messaging.topics import parse_role_key

KINDS = ("outage", "voltage_sag", "device_trip", "comm_loss")
#: the target keys each kind takes (exactly one of them for comm_loss), and its own parameters
_TARGETS: dict[str, tuple[str, ...]] = {"outage": ("site",), "voltage_sag": (), "device_trip": ("device",),
                                        "comm_loss": ("role", "device")}
_PARAMS: dict[str, tuple[str, ...]] = {"voltage_sag": ("v_pu",)}


def _time_ref(value: Any) -> Any:
    """``from``: an aware datetime as it is, anything else a whole-seconds duration from the start."""
    if isinstance(value, str) and "T" in value.upper() and "-" in value:  # a quoted ISO 8601 date and time
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 date and time with a timezone, e.g. 2019-06-15T10:00:00+02:00, "
                             "or a duration from the start such as 10h") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            raise ValueError("expected a date and time with a timezone, e.g. 2019-06-15T10:00:00+02:00, or a "
                             "duration from the start such as 10h")
        return value
    if isinstance(value, dt.date):
        raise ValueError("expected a date AND time with a timezone, or a duration from the start such as 10h")
    return whole_seconds(value)


class EventSpec(BaseModel):
    """One scheduled event (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)

    kind: Literal["outage", "voltage_sag", "device_trip", "comm_loss"]
    start: int | dt.datetime = Field(alias="from", description="duration from the scenario start, or an aware "
                                     "date and time")
    duration: int = Field(description="how long the event lasts (a duration > 0)")
    site: str | None = Field(None, description="outage: the site whose PCC opens")
    device: str | None = Field(None, description="device_trip / comm_loss: the device")
    role: str | None = Field(None, description="comm_loss: a broker role (smx:<site>, smx, data, control, aggregator)")
    v_pu: float | None = Field(None, gt=0, lt=1, description="voltage_sag: source voltage during the sag, pu")

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, v: Any) -> Any:
        return _time_ref(v)

    @field_validator("duration", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> int:
        return positive_whole_seconds(v)

    @field_validator("role")
    @classmethod
    def _role(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                parse_role_key(v)
            except TopicError as exc:
                raise ValueError(str(exc)) from None
        return v

    @model_validator(mode="after")
    def _keys_of_kind(self) -> EventSpec:
        targets, params = _TARGETS[self.kind], _PARAMS.get(self.kind, ())
        for key in ("site", "device", "role", "v_pu"):
            if getattr(self, key) is not None and key not in targets + params:
                raise ValueError(f"'{key}' does not apply to an event of kind {self.kind!r} (it takes "
                                 f"{', '.join(targets + params) or 'from and duration only'})")
        given = [k for k in targets if getattr(self, k) is not None]
        if targets and len(given) != 1:
            what = " or ".join(f"'{k}'" for k in targets)
            raise ValueError(f"an event of kind {self.kind!r} needs {'exactly one of ' if len(targets) > 1 else ''}"
                             f"{what}")
        for key in params:
            if getattr(self, key) is None:
                raise ValueError(f"an event of kind {self.kind!r} needs {key!r}")
        return self

    @property
    def target(self) -> str:
        """What the event acts on, for logs and the report (``site lab``, ``role smx:lab``, ``feeder``)."""
        for key in ("site", "device", "role"):
            value = getattr(self, key)
            if value is not None:
                return f"{key} {value}"
        return "feeder source"


@dataclass(frozen=True)
class Window:
    """One event in simulated seconds: active over ``[t0, t1)``."""

    index: int
    spec: EventSpec
    t0: int
    t1: int

    def active(self, t_s: int) -> bool:
        return self.t0 <= t_s < self.t1


def offset_s(spec: EventSpec, start: dt.datetime) -> float:
    """``from`` in seconds after the scenario start (a datetime may fall before it: checked by :func:`problems`)."""
    if isinstance(spec.start, dt.datetime):
        return (spec.start - start).total_seconds()
    return float(spec.start)


class Schedule:
    """Every event of a scenario in simulated seconds, with the questions the world and its simulators ask."""

    def __init__(self, events: list[EventSpec], start: dt.datetime) -> None:
        self.windows = [Window(i, e, int(offset_s(e, start)), int(offset_s(e, start)) + e.duration)
                        for i, e in enumerate(events)]

    def __bool__(self) -> bool:
        return bool(self.windows)

    def of(self, kind: str, **target: str) -> list[Window]:
        return [w for w in self.windows if w.spec.kind == kind
                and all(getattr(w.spec, k) == v for k, v in target.items())]

    def outage_sites(self) -> set[str]:
        return {w.spec.site for w in self.of("outage") if w.spec.site is not None}

    def tripped_devices(self) -> set[str]:
        return {w.spec.device for w in self.of("device_trip") if w.spec.device is not None}

    def has_sag(self) -> bool:
        return bool(self.of("voltage_sag"))

    def grid_present(self, site: str | None, t_s: int) -> float:
        """1 while the grid is there at a site's PCC, 0 during an outage (None: a device on its own bus)."""
        return 0.0 if site is not None and any(w.active(t_s) for w in self.of("outage", site=site)) else 1.0

    def tripped(self, device: str, t_s: int) -> bool:
        return any(w.active(t_s) for w in self.of("device_trip", device=device))

    def source_v_pu(self, t_s: int) -> float:
        """The feeder's source voltage factor: the deepest active sag, else 1."""
        return min((w.spec.v_pu or 1.0 for w in self.of("voltage_sag") if w.active(t_s)), default=1.0)

    def comm_loss(self, role: str, devices: tuple[str, ...]) -> list[tuple[int, int]]:
        """Windows in which a flow of ``role`` between entities of ``devices`` (ids; others are not devices) is
        lost: a loss on its role (a base role covers every site's) or on one of its devices."""
        base, _ = parse_role_key(role)
        out = []
        for w in self.of("comm_loss"):
            on_role = w.spec.role is not None and w.spec.role in (role, base)
            if on_role or (w.spec.device is not None and w.spec.device in devices):
                out.append((w.t0, w.t1))
        return out

    def transitions(self, t_s: int) -> list[tuple[str, Window]]:
        """("start" | "end", window) of the events that start or end at ``t_s``, in scenario order."""
        return [(edge, w) for w in self.windows for edge, at in (("start", w.t0), ("end", w.t1)) if at == t_s]


def problems(sc: Any, add: Callable[..., None]) -> None:
    """References to sites, devices and roles, and times that fall between steps or before the start."""
    sites = {s.id for s in sc.sites}
    devices = {d.id for d in sc.devices}
    for i, ev in enumerate(sc.events):
        if ev.site is not None and ev.site not in sites:
            add(("events", i, "site"), "expected the id of a site in 'sites'", ev.site)
        if ev.device is not None and ev.device not in devices:
            add(("events", i, "device"), "expected the id of a device in 'devices'", ev.device)
        if ev.role is not None:
            _, site = parse_role_key(ev.role)
            if site is not None and site not in sites:
                add(("events", i, "role"), "expected smx:<the id of a site in 'sites'>", ev.role)
        t0 = offset_s(ev, sc.start)
        if t0 < 0:
            add(("events", i, "from"), f"expected a time at or after the scenario start ({sc.start.isoformat()})",
                ev.start)
        elif t0 % sc.step:
            add(("events", i, "from"), f"events take effect at step boundaries: expected a multiple of the step "
                f"({sc.step} s) after the start, found {t0:g} s", ev.start)
        if ev.duration % sc.step:
            add(("events", i, "duration"), f"events take effect at step boundaries: expected a multiple of the "
                f"step ({sc.step} s)", ev.duration)


__all__ = ["KINDS", "EventSpec", "Schedule", "Window", "offset_s", "problems"]
