"""The ``bench:`` section of a scenario (``BenchSpec``): real-time pacing, safety limits, watchdogs, monitor, drills.

    bench:
      rt_factor: 1.0            # wall seconds per simulated second (1 = real time, 0.01 = 100x faster)
      tolerance: 50ms           # a step that starts later than this is "late"
      policy: warn              # what a late step does: warn | skip | stop
      read_at: 0.8              # devices are read this far into each cycle (the rest is for grid + controllers)
      virtual_step_s: 1         # simulated seconds per model step of the virtual devices the bench hosts
      limits:
        fronius_4006773: {p_min_w: -2000, p_max_w: 2000, soc_min: 0.1, soc_max: 0.95, ramp_w_per_s: 100}
      monitor: {port: 8765, broker: embedded}
      drills:
        - {at: 20min, device: fronius_4006773, fault: controller_silent}

Only this module is imported by the scenario schema, so it imports nothing heavy (no cosim, no protocol code).
Durations here are given like elsewhere in a scenario: ``50ms``, ``2s``, ``20min`` or plain seconds.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|min|m|h|d)?\s*$")
_UNITS = {None: 1.0, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_seconds(value: Any) -> float:
    """``0.05``, ``"50ms"``, ``"2s"``, ``"20min"`` -> seconds (finite, >= 0)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 50ms, 2s or 20min")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value.lower())):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError("expected a duration such as 50ms, 2s or 20min")
    if not 0 <= seconds < float("inf"):
        raise ValueError("expected a finite duration >= 0")
    return seconds


def _whole_seconds(value: Any) -> int:
    seconds = parse_seconds(value)
    if seconds != int(seconds):
        raise ValueError("expected whole simulated seconds")
    return int(seconds)


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
SimSeconds = Annotated[int, BeforeValidator(_whole_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceLimits(_Strict):
    """Operator limits of one device, checked before anything is written to it (tighter than its capabilities).

    Power limits apply to every setpoint whose name ends in ``_w``; the SoC window to the family's battery
    setpoint (+ = charge): no charging at or above ``soc_max``, no discharging at or below ``soc_min``
    (judged on the last measured ``soc``). ``ramp_w_per_s`` bounds the change of a power setpoint per
    simulated second since the last value written. A setpoint outside is refused, never clipped.
    """

    p_min_w: float | None = None
    p_max_w: float | None = None
    soc_min: float | None = Field(None, ge=0, le=1)
    soc_max: float | None = Field(None, ge=0, le=1)
    ramp_w_per_s: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "DeviceLimits":
        if self.p_min_w is not None and self.p_max_w is not None and self.p_min_w > self.p_max_w:
            raise ValueError("p_min_w must not exceed p_max_w")
        if self.soc_min is not None and self.soc_max is not None and self.soc_min >= self.soc_max:
            raise ValueError("soc_min must be below soc_max")
        return self


class MonitorSpec(_Strict):
    """The live web page (Technical GUI) and the broker its data flows through."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535, description="0 = any free port (printed at start)")
    broker: str = Field("embedded", description="broker of the SMX role: embedded, direct or mosquitto://host:port")
    users: str | None = Field(None, description="users file (cosim.security.webauth.add_user): login with roles; "
                                                "absent: no login, the local operator (loopback benches)")


class Drill(_Strict):
    """A fault the bench injects on purpose, to rehearse the watchdogs (Safety drills).

    ``controller_silent``: from ``at`` the controller's setpoints for ``device`` are dropped before the
    boundary, as if the controller had stopped sending. ``device_silent``: a device the bench hosts stops
    answering (its connections stay open). ``duration`` ends the fault (default: until the end).
    """

    at: SimSeconds
    device: str
    fault: Literal["controller_silent", "device_silent"]
    duration: SimSeconds | None = None

    def active(self, t_s: int) -> bool:
        return self.at <= t_s and (self.duration is None or t_s < self.at + self.duration)


class BenchSpec(_Strict):
    """How a scenario runs on the HIL bench (``s4g bench run``); offline runs ignore it."""

    rt_factor: float = Field(1.0, gt=0, description="wall seconds per simulated second (1 = real time)")
    tolerance: Seconds = Field(0.05, description="a step starting later than this (wall time) is late")
    policy: Literal["warn", "skip", "stop"] = Field(
        "warn", description="late step: warn and catch up | skip its device exchange | stop safely")
    warmup_steps: int | None = Field(None, ge=0, description="first steps whose lateness (first-time costs) "
                                     "triggers no policy and stays out of the statistics (still recorded); "
                                     "default: two steps, and at least the first second of wall time")
    read_at: float = Field(0.8, gt=0, lt=1, description="fraction of each cycle after which devices are read")
    virtual_step_s: int = Field(1, ge=1, description="simulated seconds per model step of hosted virtual devices")
    io_timeout: Seconds | None = Field(None, description="driver timeout (default: half a cycle, at most the "
                                                         "device's timeout_s)")
    io_concurrency: int = Field(1, ge=1, description="device operations on the wire at the same time; the rest "
                                "queue. 1 suits loopback and fast LANs (each round trip stays short); raise it for "
                                "slow links (serial lines, high latency), where waiting dominates")
    controller_timeout_cycles: int = Field(2, ge=1, description="cycles without a setpoint before the safe state")
    device_revert: bool = Field(True, description="arm the device's own fallback where its protocol has one "
                                                  "(SunSpec InOutWRte_RvrtTms = two cycles)")
    arm_safe: bool = Field(True, description="write every device's safe setpoint before the first step")
    limits: dict[str, DeviceLimits] = Field(default_factory=dict, description="operator limits by device id")
    monitor: MonitorSpec = MonitorSpec()
    drills: list[Drill] = Field(default_factory=list)

    def cycle_s(self, step_s: int) -> float:
        """Wall seconds of one co-simulation step."""
        return step_s * self.rt_factor

    def warmup(self, step_s: int) -> int:
        if self.warmup_steps is not None:
            return self.warmup_steps
        return max(2, math.ceil(1.0 / self.cycle_s(step_s)))

    def driver_timeout_s(self, step_s: int, device_timeout_s: float) -> float:
        if self.io_timeout is not None and self.io_timeout > 0:
            return self.io_timeout
        return min(device_timeout_s, max(0.05, 0.5 * self.cycle_s(step_s)))


__all__ = ["BenchSpec", "DeviceLimits", "Drill", "MonitorSpec", "parse_seconds"]
