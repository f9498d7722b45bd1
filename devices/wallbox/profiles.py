"""OCPP smart-charging semantics as pure functions: validate, install and clear charging profiles, and compute
the limit in force at an instant and the composite schedule over a window.

Version-neutral internal form (:class:`Profile`) with converters from/to the OCPP 1.6 ``csChargingProfiles``
and OCPP 2.0.1 ``chargingProfile`` JSON objects (camelCase, as on the wire). Rules implemented (see
docs/devices/wallbox.md for the full list and the interpretations chosen where the standards are vague):

* purposes: ChargePointMaxProfile (2.0.1: ChargingStationMaxProfile) and ChargingStationExternalConstraints
  cap the whole station; TxDefaultProfile applies to every transaction (connector 0 = all connectors, a
  connector-specific one overrides it); TxProfile applies to one running transaction and overrides the
  TxDefault stack.
* within a purpose the applicable profile with the highest stack level prevails; a profile applies at t when
  t is inside [validFrom, validTo) and inside its schedule (after the schedule start, before its duration).
* kinds: Absolute (startSchedule), Recurring Daily/Weekly (startSchedule is the first recurrence), Relative
  (starts with the transaction; without one, its first period applies). OCPP 1.6 makes startSchedule
  optional for every kind: without it an Absolute or Recurring schedule runs from the start of charging (like
  Relative), and a Relative one ignores it; 2.0.1 requires it for Absolute/Recurring and forbids it for
  Relative (K01.FR.40/41).
* the composite limit is the minimum of the station cap, the transaction stack and the hardware limit; A and
  W convert with the phase-to-neutral voltage and the number of phases in use (never more than a period's
  numberPhases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from typing import Any
from collections.abc import Iterable, Mapping

MAX = "ChargePointMaxProfile"
EXTERNAL = "ChargingStationExternalConstraints"
TX_DEFAULT = "TxDefaultProfile"
TX = "TxProfile"
_V201_PURPOSE = {MAX: "ChargingStationMaxProfile"}
_FROM_V201_PURPOSE = {"ChargingStationMaxProfile": MAX}
STATION_PURPOSES = (MAX, EXTERNAL)

RECURRENCE_S = {"Daily": 86_400, "Weekly": 7 * 86_400}


class ProfileError(ValueError):
    """A charging profile that cannot be accepted; the message says why."""


@dataclass(frozen=True)
class Period:
    start_s: int
    limit: float
    phases: int | None = None
    phase_to_use: int | None = None  # 2.0.1, single-phase charging on a switchable station


@dataclass(frozen=True)
class Schedule:
    unit: str  # "A" (per phase) or "W"
    periods: tuple[Period, ...]
    start: datetime | None = None
    duration_s: int | None = None
    min_rate: float | None = None
    id: int | None = None  # 2.0.1 schedules carry an id


@dataclass(frozen=True)
class Profile:
    id: int
    stack_level: int
    purpose: str
    kind: str  # Absolute | Recurring | Relative
    schedule: Schedule
    connector: int = 0  # 1.6 connectorId / 2.0.1 evseId; 0 = the whole station
    recurrency: str | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None
    extra_schedules: tuple[Schedule, ...] = ()  # 2.0.1 alternatives (ISO 15118); only the first is used


@dataclass(frozen=True)
class Station:
    """What the charge point knows about itself when judging and evaluating profiles."""

    max_current_a: float = 32.0
    phases: int = 3
    voltage_v: float = 230.0
    connectors: int = 1
    max_stack_level: int = 8
    max_profiles: int = 16
    max_periods: int = 48
    version: str = "1.6"

    @property
    def max_power_w(self) -> float:
        return self.max_current_a * self.voltage_v * self.phases


@dataclass(frozen=True)
class Tx:
    """The transaction running on a connector (``id`` None = none)."""

    id: str | None = None
    start: datetime | None = None

    @property
    def active(self) -> bool:
        return self.id is not None


NO_TX = Tx()


# -- time ------------------------------------------------------------------------------------------------------
def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ProfileError(f"not an ISO 8601 date-time: {value!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def format_time(t: datetime) -> str:
    t = t.astimezone(UTC)
    ms = t.microsecond // 1000
    return t.strftime("%Y-%m-%dT%H:%M:%S") + (f".{ms:03d}Z" if ms else "Z")


# -- wire form -------------------------------------------------------------------------------------------------
def _periods(raw: Iterable[Mapping[str, Any]]) -> tuple[Period, ...]:
    out = []
    for p in raw:
        phases, use = p.get("numberPhases"), p.get("phaseToUse")
        out.append(Period(int(p["startPeriod"]), float(p["limit"]), int(phases) if phases is not None else None,
                          int(use) if use is not None else None))
    return tuple(out)


def _schedule(raw: Mapping[str, Any]) -> Schedule:
    return Schedule(
        unit=str(raw["chargingRateUnit"]),
        periods=_periods(raw.get("chargingSchedulePeriod", [])),
        start=parse_time(raw.get("startSchedule")),
        duration_s=int(raw["duration"]) if raw.get("duration") is not None else None,
        min_rate=float(raw["minChargingRate"]) if raw.get("minChargingRate") is not None else None,
        id=int(raw["id"]) if raw.get("id") is not None else None,
    )


def _schedule_wire(s: Schedule, with_id: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_id:
        out["id"] = s.id if s.id is not None else 1
    if s.start is not None:
        out["startSchedule"] = format_time(s.start)
    if s.duration_s is not None:
        out["duration"] = int(s.duration_s)
    out["chargingRateUnit"] = s.unit
    out["chargingSchedulePeriod"] = [
        {"startPeriod": int(p.start_s), "limit": round(float(p.limit), 1),
         **({"numberPhases": int(p.phases)} if p.phases is not None else {}),
         **({"phaseToUse": int(p.phase_to_use)} if p.phase_to_use is not None and with_id else {})}
        for p in s.periods
    ]
    if s.min_rate is not None:
        out["minChargingRate"] = round(float(s.min_rate), 1)
    return out


def from_v16(connector_id: int, raw: Mapping[str, Any]) -> Profile:
    """OCPP 1.6 ``csChargingProfiles`` (already schema-valid) to a :class:`Profile`."""
    tx = raw.get("transactionId")
    return Profile(
        id=int(raw["chargingProfileId"]), stack_level=int(raw["stackLevel"]),
        purpose=str(raw["chargingProfilePurpose"]), kind=str(raw["chargingProfileKind"]),
        schedule=_schedule(raw["chargingSchedule"]), connector=int(connector_id),
        recurrency=raw.get("recurrencyKind"), valid_from=parse_time(raw.get("validFrom")),
        valid_to=parse_time(raw.get("validTo")), transaction_id=str(tx) if tx is not None else None,
    )


def to_v16(p: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"chargingProfileId": p.id}
    if p.transaction_id is not None:
        out["transactionId"] = int(p.transaction_id)
    out.update(stackLevel=p.stack_level, chargingProfilePurpose=p.purpose, chargingProfileKind=p.kind)
    if p.recurrency:
        out["recurrencyKind"] = p.recurrency
    if p.valid_from:
        out["validFrom"] = format_time(p.valid_from)
    if p.valid_to:
        out["validTo"] = format_time(p.valid_to)
    out["chargingSchedule"] = _schedule_wire(p.schedule, with_id=False)
    return out


def from_v201(evse_id: int, raw: Mapping[str, Any]) -> Profile:
    """OCPP 2.0.1 ``chargingProfile`` (already schema-valid) to a :class:`Profile`."""
    schedules = [_schedule(s) for s in raw["chargingSchedule"]]
    purpose = str(raw["chargingProfilePurpose"])
    return Profile(
        id=int(raw["id"]), stack_level=int(raw["stackLevel"]), purpose=_FROM_V201_PURPOSE.get(purpose, purpose),
        kind=str(raw["chargingProfileKind"]), schedule=schedules[0], connector=int(evse_id),
        recurrency=raw.get("recurrencyKind"), valid_from=parse_time(raw.get("validFrom")),
        valid_to=parse_time(raw.get("validTo")), transaction_id=raw.get("transactionId"),
        extra_schedules=tuple(schedules[1:]),
    )


def to_v201(p: Profile) -> dict[str, Any]:
    out: dict[str, Any] = {"id": p.id, "stackLevel": p.stack_level,
                           "chargingProfilePurpose": _V201_PURPOSE.get(p.purpose, p.purpose),
                           "chargingProfileKind": p.kind}
    if p.recurrency:
        out["recurrencyKind"] = p.recurrency
    if p.valid_from:
        out["validFrom"] = format_time(p.valid_from)
    if p.valid_to:
        out["validTo"] = format_time(p.valid_to)
    out["chargingSchedule"] = [_schedule_wire(s, with_id=True) for s in (p.schedule, *p.extra_schedules)]
    if p.transaction_id is not None:
        out["transactionId"] = str(p.transaction_id)
    return out


def floor1(x: float) -> float:
    """Round a limit down to the 0.1 resolution of the schema (never report more than is allowed)."""
    if not math.isfinite(x):
        return 0.0
    return math.floor(x * 10 + 1e-6) / 10


def constant_limit(profile_id: int, stack_level: int, limit: float, unit: str, *, purpose: str = TX_DEFAULT,
                   connector: int = 1, start: datetime | None = None, transaction_id: str | None = None) -> Profile:
    """A profile holding one limit from ``start`` on (Absolute) or from the transaction start (Relative)."""
    kind = "Absolute" if start is not None else "Relative"
    return Profile(id=profile_id, stack_level=stack_level, purpose=purpose, kind=kind,
                   schedule=Schedule(unit=unit, periods=(Period(0, float(limit)),), start=start, id=profile_id),
                   connector=connector, transaction_id=transaction_id)


# -- acceptance ------------------------------------------------------------------------------------------------
def check(p: Profile, installed: Iterable[Profile], station: Station, tx: Tx, now: datetime) -> None:
    """Raise :class:`ProfileError` if the charge point must reject ``p`` (OCPP answer "Rejected")."""
    if p.purpose not in (MAX, EXTERNAL, TX_DEFAULT, TX):
        raise ProfileError(f"unknown purpose {p.purpose}")
    if p.purpose == EXTERNAL and station.version == "1.6":
        raise ProfileError("ChargingStationExternalConstraints is not an OCPP 1.6 purpose")
    if not 0 <= p.connector <= station.connectors:
        raise ProfileError(f"connector {p.connector} does not exist (0..{station.connectors})")
    if p.purpose in STATION_PURPOSES and p.connector != 0:
        raise ProfileError(f"{p.purpose} must be set on connector/EVSE 0")
    if p.purpose == TX:
        if p.connector == 0:
            raise ProfileError("a TxProfile needs a connector/EVSE > 0")
        if not tx.active:
            raise ProfileError("TxProfile without a running transaction on that connector")
        if station.version != "1.6" and p.transaction_id is None:
            raise ProfileError("TxProfile without transactionId")
        if p.transaction_id is not None and str(p.transaction_id) != str(tx.id):
            raise ProfileError(f"TxProfile for transaction {p.transaction_id}, running: {tx.id}")
    elif p.transaction_id is not None:
        raise ProfileError("transactionId is only allowed in a TxProfile")
    if p.purpose == MAX and p.kind == "Relative" and station.version != "1.6":
        raise ProfileError("a ChargingStationMaxProfile cannot be Relative (K01.FR.38)")
    if not 0 <= p.stack_level <= station.max_stack_level:
        raise ProfileError(f"stackLevel {p.stack_level} outside 0..{station.max_stack_level}")
    if p.kind not in ("Absolute", "Recurring", "Relative"):
        raise ProfileError(f"unknown kind {p.kind}")
    for s in (p.schedule, *p.extra_schedules):
        _check_schedule(p, s, station)
    # a validity that has ended (or is empty) is allowed by both versions: such a profile never applies
    others = [q for q in installed if q.id != p.id]
    if station.version != "1.6":
        for q in others:
            if q.purpose != p.purpose or q.stack_level != p.stack_level or q.connector != p.connector:
                continue
            if p.purpose == TX and str(q.transaction_id) == str(p.transaction_id):  # K01.FR.39
                raise ProfileError(f"profile {q.id} already has stackLevel {p.stack_level} for transaction "
                                   f"{p.transaction_id}")
            if p.purpose != TX and _overlap(q, p):  # K01.FR.06
                raise ProfileError(f"profile {q.id} already has stackLevel {p.stack_level} and purpose "
                                   f"{p.purpose} on EVSE {p.connector} for an overlapping validity")
    replaced = [q for q in others if station.version == "1.6" and _same_slot(q, p)]
    if len(others) - len(replaced) + 1 > station.max_profiles:
        raise ProfileError(f"more than {station.max_profiles} profiles installed")


def _check_schedule(p: Profile, s: Schedule, station: Station) -> None:
    if s.unit not in ("A", "W"):
        raise ProfileError(f"unknown chargingRateUnit {s.unit}")
    if not s.periods:
        raise ProfileError("no schedule periods")
    if len(s.periods) > station.max_periods:
        raise ProfileError(f"{len(s.periods)} periods, at most {station.max_periods}")
    if s.periods[0].start_s != 0:
        raise ProfileError("the first period must start at 0")
    if any(b.start_s <= a.start_s for a, b in zip(s.periods, s.periods[1:])):
        raise ProfileError("period starts must increase")
    if s.duration_s is not None and s.duration_s < 0:
        raise ProfileError("duration is negative")
    hw = station.max_current_a if s.unit == "A" else station.max_power_w
    for q in s.periods:
        if not math.isfinite(q.limit) or q.limit < 0:
            raise ProfileError(f"limit {q.limit} is negative or not a number")
        if q.limit > hw + 1e-6:
            raise ProfileError(f"limit {q.limit:g} {s.unit} above the hardware maximum {hw:g} {s.unit}")
        if q.phases is not None and not 1 <= q.phases <= 3:
            raise ProfileError(f"numberPhases {q.phases} outside 1..3")
        if station.version != "1.6":
            if q.phases is not None and q.phases > station.phases:  # K01.FR.45
                raise ProfileError(f"numberPhases {q.phases}: the station is supplied by {station.phases}")
            if q.phase_to_use is not None:  # K01.FR.19/20: needs numberPhases 1 and AC phase switching
                raise ProfileError("phaseToUse: this station cannot switch phases")
    if station.version != "1.6":  # 1.6 makes startSchedule optional for every kind
        if p.kind == "Relative" and s.start is not None:
            raise ProfileError("a Relative profile has no startSchedule (K01.FR.41)")
        if p.kind in ("Absolute", "Recurring") and s.start is None:
            raise ProfileError(f"an {p.kind} profile needs startSchedule (K01.FR.40)")
    if p.kind == "Recurring" and p.recurrency not in RECURRENCE_S:
        raise ProfileError("a Recurring profile needs recurrencyKind Daily or Weekly")


def _same_slot(a: Profile, b: Profile) -> bool:
    return a.purpose == b.purpose and a.stack_level == b.stack_level and a.connector == b.connector


def _overlap(a: Profile, b: Profile) -> bool:
    lo = max(a.valid_from or datetime.min.replace(tzinfo=UTC),
             b.valid_from or datetime.min.replace(tzinfo=UTC))
    hi = min(a.valid_to or datetime.max.replace(tzinfo=UTC),
             b.valid_to or datetime.max.replace(tzinfo=UTC))
    return lo < hi


def install(installed: Iterable[Profile], p: Profile, version: str = "1.6") -> list[Profile]:
    """The profiles after installing ``p`` (checked first): same id replaces; in 1.6 also same
    stackLevel + purpose on the same connector."""
    return [q for q in installed if q.id != p.id and not (version == "1.6" and _same_slot(q, p))] + [p]


def clear(installed: Iterable[Profile], *, profile_id: int | None = None, connector: int | None = None,
          purpose: str | None = None, stack_level: int | None = None) -> tuple[list[Profile], int]:
    """Remove by id, or else by every criterion given; returns (remaining, number removed)."""
    keep, removed = [], 0
    for q in installed:
        if profile_id is not None:
            hit = q.id == profile_id
        else:
            hit = ((connector is None or q.connector == connector) and (purpose is None or q.purpose == purpose)
                   and (stack_level is None or q.stack_level == stack_level))
        if hit:
            removed += 1
        else:
            keep.append(q)
    return keep, removed


def end_transaction(installed: Iterable[Profile], connector: int) -> list[Profile]:
    """TxProfiles live as long as their transaction."""
    return [q for q in installed if not (q.purpose == TX and q.connector == connector)]


# -- evaluation ------------------------------------------------------------------------------------------------
def _anchor(p: Profile, tx: Tx) -> datetime | None:
    """Where the schedule starts: startSchedule, else (Relative, or 1.6 without startSchedule) the start of
    charging; None = no transaction to start from (then the first period applies)."""
    if p.kind != "Relative" and p.schedule.start is not None:
        return p.schedule.start
    return tx.start if tx.active and tx.start is not None else None


def _schedule_origin(p: Profile, t: datetime, tx: Tx) -> datetime | None:
    """Start of the schedule (recurrence) in force at t, or None if the schedule has not started."""
    base = _anchor(p, tx)
    if base is None:
        return t
    if t < base:
        return None
    if p.kind == "Recurring":
        period = RECURRENCE_S[p.recurrency or "Daily"]
        k = int((t - base).total_seconds() // period)
        return base + timedelta(seconds=k * period)
    return base


def period_at(p: Profile, t: datetime, tx: Tx = NO_TX) -> Period | None:
    """The schedule period of ``p`` in force at ``t``, or None if ``p`` does not apply then."""
    if p.valid_from is not None and t < p.valid_from:
        return None
    if p.valid_to is not None and t >= p.valid_to:
        return None
    if p.purpose == TX and (not tx.active or (p.transaction_id is not None and str(p.transaction_id) != str(tx.id))):
        return None
    origin = _schedule_origin(p, t, tx)
    if origin is None:
        return None
    elapsed = (t - origin).total_seconds()
    if elapsed < 0:
        return None
    s = p.schedule
    if s.duration_s is not None and elapsed >= s.duration_s:
        return None
    current = None
    for q in s.periods:
        if q.start_s <= elapsed:
            current = q
        else:
            break
    return current


def convert(limit: float, unit_from: str, unit_to: str, voltage_v: float, phases: float) -> float:
    if unit_from == unit_to:
        return limit
    if unit_from == "A":
        return limit * voltage_v * phases
    return limit / (voltage_v * phases)


def _prevailing(profiles: Iterable[Profile], t: datetime, tx: Tx) -> tuple[Profile, Period] | None:
    best = None
    for p in profiles:
        q = period_at(p, t, tx)
        if q is not None and (best is None or p.stack_level > best[0].stack_level):
            best = (p, q)
    return best


def limit_at(installed: Iterable[Profile], t: datetime, station: Station, *, connector: int = 1, tx: Tx = NO_TX,
             unit: str = "W", phases_in_use: int | None = None) -> float:
    """The composite limit at ``t`` for ``connector`` (0 = the whole station) in ``unit``."""
    n_use = phases_in_use or station.phases
    profiles = list(installed)

    def value(found: tuple[Profile, Period] | None) -> float:
        if found is None:
            return math.inf
        p, q = found
        n = min(q.phases or 3, n_use)
        return convert(q.limit, p.schedule.unit, unit, station.voltage_v, n)

    lim = convert(station.max_current_a, "A", unit, station.voltage_v, n_use)
    for purpose in STATION_PURPOSES:
        lim = min(lim, value(_prevailing([p for p in profiles if p.purpose == purpose], t, tx)))
    if connector == 0:
        return lim
    found = _prevailing([p for p in profiles if p.purpose == TX and p.connector == connector], t, tx)
    if found is None:
        found = _prevailing([p for p in profiles if p.purpose == TX_DEFAULT and p.connector == connector], t, tx)
    if found is None:
        found = _prevailing([p for p in profiles if p.purpose == TX_DEFAULT and p.connector == 0], t, tx)
    return min(lim, value(found))


def _breakpoints(p: Profile, t0: datetime, t1: datetime, tx: Tx) -> set[datetime]:
    out: set[datetime] = set()
    for t in (p.valid_from, p.valid_to):
        if t is not None and t0 < t < t1:
            out.add(t)
    s = p.schedule
    offsets = [q.start_s for q in s.periods] + ([s.duration_s] if s.duration_s is not None else [])
    base = _anchor(p, tx)
    if base is None:
        origins = []
    elif p.kind == "Recurring":
        period = RECURRENCE_S[p.recurrency or "Daily"]
        k0 = max(0, int((t0 - base).total_seconds() // period))
        k1 = int((t1 - base).total_seconds() // period) + 1
        origins = [base + timedelta(seconds=k * period) for k in range(k0, k1 + 1)]
    else:
        origins = [base]
    for o in origins:
        for off in offsets:
            t = o + timedelta(seconds=off)
            if t0 < t < t1:
                out.add(t)
    return out


def composite(installed: Iterable[Profile], start: datetime, duration_s: int, station: Station, *,
              connector: int = 1, tx: Tx = NO_TX, unit: str = "W",
              phases_in_use: int | None = None) -> list[Period]:
    """The composite schedule over [start, start + duration_s): periods relative to ``start``, equal
    neighbours merged. Limits are in ``unit``; a period's phases are the phases in use."""
    profiles = list(installed)
    end = start + timedelta(seconds=duration_s)
    points = {start}
    for p in profiles:
        points |= _breakpoints(p, start, end, tx)
    n_use = phases_in_use or station.phases
    out: list[Period] = []
    for t in sorted(points):
        lim = limit_at(profiles, t, station, connector=connector, tx=tx, unit=unit, phases_in_use=n_use)
        if out and math.isclose(out[-1].limit, lim, rel_tol=1e-12, abs_tol=1e-9):
            continue
        out.append(Period(int(round((t - start).total_seconds())), lim, n_use))
    return out


def next_change(installed: Iterable[Profile], t: datetime, horizon_s: float, tx: Tx = NO_TX) -> list[float]:
    """Offsets in (0, horizon_s) at which some profile's period may change (sub-step boundaries)."""
    end = t + timedelta(seconds=horizon_s)
    pts: set[datetime] = set()
    for p in installed:
        pts |= _breakpoints(p, t, end, tx)
    return sorted((x - t).total_seconds() for x in pts)


__all__ = [
    "EXTERNAL",
    "MAX",
    "NO_TX",
    "TX",
    "TX_DEFAULT",
    "Period",
    "Profile",
    "ProfileError",
    "Schedule",
    "Station",
    "Tx",
    "check",
    "clear",
    "composite",
    "constant_limit",
    "convert",
    "end_transaction",
    "floor1",
    "format_time",
    "from_v16",
    "from_v201",
    "install",
    "limit_at",
    "next_change",
    "parse_time",
    "period_at",
    "to_v16",
    "to_v201",
]
