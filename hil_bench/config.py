"""The ``bench:`` section of a scenario (``BenchSpec``): real-time pacing, safety limits, watchdogs, monitor, drills.

    bench:
      rt_factor: 1.0            # wall seconds per simulated second (1 = real time, 0.01 = 100x faster)
      tolerance: 50ms           # a step that starts later than this is "late"
      policy: warn              # what a late step does: warn | skip | stop
      read_at: 0.8              # devices are read this far into each cycle (the rest is for grid + controllers)
      virtual_step_s: 1         # simulated seconds per model step of the virtual devices the bench hosts
      clock: wall               # hosted virtual devices keep time by: wall (like hardware) | steps (tests)
      limits:
        fronius_4006773: {p_min_w: -2000, p_max_w: 2000, soc_min: 0.1, soc_max: 0.95, ramp_w_per_s: 100}
        pv_4018368: {p_min_w: -3000, pf_min: 0.9, allow_disconnect: false, curve_v_min_pu: 1.0}
      monitor: {port: 8765, broker: embedded}
      drills:
        - {at: 20min, device: fronius_4006773, fault: controller_silent}

hil_bench registers ``BenchSpec`` as the scenario section ``bench`` (entry-point group ``s4g.scenario_sections`` in
pyproject.toml), so cosim never imports hil_bench; the scenario schema loads this module, so it imports nothing heavy
(of cosim only the duration grammar, no protocol code).
Durations follow the one grammar of cosim/durations.py: ``50ms``, ``2s``, ``20min`` or plain seconds.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal
from collections.abc import Callable

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from cosim.durations import seconds, whole_seconds

parse_seconds = seconds  # the framework's one duration grammar, under the name callers know

Seconds = Annotated[float, BeforeValidator(seconds)]
SimSeconds = Annotated[int, BeforeValidator(whole_seconds)]


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
    # the grid-support setpoints of PV inverters (devices/pv/functions.py); p_limit_w, an output cap, must allow no
    # more output than p_min_w does (p_limit_w <= -p_min_w) and is otherwise not a drawn power
    pf_min: float | None = Field(None, gt=0, le=1, description="tan_phi refused beyond this |power factor|")
    allow_disconnect: bool = Field(True, description="False: conn = 0 (trip the inverter) is refused")
    curve_v_min_pu: float | None = Field(None, gt=0, description="volt-var / volt-watt points below are refused")
    curve_v_max_pu: float | None = Field(None, gt=0, description="volt-var / volt-watt points above are refused")

    @model_validator(mode="after")
    def _ordered(self) -> DeviceLimits:
        if self.p_min_w is not None and self.p_max_w is not None and self.p_min_w > self.p_max_w:
            raise ValueError("p_min_w must not exceed p_max_w")
        if self.soc_min is not None and self.soc_max is not None and self.soc_min >= self.soc_max:
            raise ValueError("soc_min must be below soc_max")
        if (self.curve_v_min_pu is not None and self.curve_v_max_pu is not None
                and self.curve_v_min_pu >= self.curve_v_max_pu):
            raise ValueError("curve_v_min_pu must be below curve_v_max_pu")
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
    clock: Literal["wall", "steps"] = Field(
        "wall", description="how the virtual devices keep time: 'wall' -- by the wall clock, as hardware does; "
        "'steps' -- the bench advances them to the end of each step after its writes, before its reads (the offline "
        "semantics, independent of scheduling: for tests of the bench; the pacing, timeouts and watchdogs stay on "
        "the wall clock)")
    device_clocks: dict[str, str] = Field(
        default_factory=dict, description="with clock 'steps': served virtual devices (s4g device serve "
        "--clock-port) that follow the bench's clock and inputs, device id -> tcp://HOST:PORT of their clock link")
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

    def scenario_problems(self, scenario: Any, add: Callable[..., None]) -> None:
        """Devices the section names must exist (the scenario loader calls this; locations are within ``bench``)."""
        device_ids = {d.id for d in scenario.devices}
        for dev_id in self.limits:
            if dev_id not in device_ids:
                add(("limits", dev_id), "expected the id of a device in 'devices'", dev_id)
        for i, drill in enumerate(self.drills):
            if drill.device not in device_ids:
                add(("drills", i, "device"), "expected the id of a device in 'devices'", drill.device)
        for dev_id, address in self.device_clocks.items():
            if dev_id not in device_ids:
                add(("device_clocks", dev_id), "expected the id of a device in 'devices'", dev_id)
            elif self.clock != "steps":
                add(("device_clocks", dev_id), "a device follows the bench's clock only with clock: steps", address)

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
