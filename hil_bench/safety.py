"""Safety rules of the bench, as plain functions and small state machines (no I/O, unit-testable).

* :func:`check_limits`: the operator's limits of a device (``bench.limits``), checked before anything is
  written; a setpoint outside is refused with :class:`~devices.base.SetpointRejected`, never clipped. They cover
  the PV inverters' grid-support setpoints too: the output cap ``p_limit_w`` against ``p_min_w``, the power factor
  (``pf_min``), disconnecting (``allow_disconnect``) and the curves' voltages (``curve_v_min_pu``/``_max_pu``).
* :class:`ControllerWatch`: notices a controller that stopped sending setpoints to a device.
* :class:`DeviceHealth`: the device watchdog's states: ``armed`` (normal), ``faulted`` (stopped answering;
  the boundary holds the controller's setpoints and keeps trying to write the safe setpoint), ``safe`` (the
  safe setpoint is confirmed by the device), ``estop`` (emergency stop: nothing but the safe setpoint).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from collections.abc import Mapping

from devices.base import SetpointRejected
from hil_bench.config import DeviceLimits

State = Literal["armed", "faulted", "safe", "estop"]


def check_limits(limits: DeviceLimits, values: Mapping[str, float], *, t_s: float, soc: float | None,
                 battery_setpoint: str | None, last_written: Mapping[str, tuple[float, float]]) -> None:
    """Raise SetpointRejected naming the first bench limit ``values`` break (see config.DeviceLimits)."""
    for name, value in values.items():
        value = float(value)
        if math.isnan(value):
            raise SetpointRejected(f"{name}=NaN refused by the bench")
        _check_inverter_function(limits, name, value)
        if name == "p_limit_w":
            continue  # an output cap, checked above; the ramp applies to drawn powers
        if name.endswith("_w"):
            if limits.p_max_w is not None and value > limits.p_max_w:
                raise SetpointRejected(f"{name}={value:g} above the bench limit p_max_w={limits.p_max_w:g}")
            if limits.p_min_w is not None and value < limits.p_min_w:
                raise SetpointRejected(f"{name}={value:g} below the bench limit p_min_w={limits.p_min_w:g}")
            if limits.ramp_w_per_s is not None and name in last_written:
                t_last, v_last = last_written[name]
                dt = max(t_s - t_last, 1.0)  # within one step: allow one second's ramp
                if abs(value - v_last) > limits.ramp_w_per_s * dt:
                    raise SetpointRejected(
                        f"{name}: {v_last:g} -> {value:g} in {dt:g} s exceeds the bench ramp limit "
                        f"{limits.ramp_w_per_s:g} W/s")
        if name == battery_setpoint and soc is not None and math.isfinite(soc):
            if value > 0 and limits.soc_max is not None and soc >= limits.soc_max:
                raise SetpointRejected(f"{name}={value:g} (charge) refused: soc {soc:.3f} >= soc_max "
                                       f"{limits.soc_max:g}")
            if value < 0 and limits.soc_min is not None and soc <= limits.soc_min:
                raise SetpointRejected(f"{name}={value:g} (discharge) refused: soc {soc:.3f} <= soc_min "
                                       f"{limits.soc_min:g}")


def _check_inverter_function(limits: DeviceLimits, name: str, value: float) -> None:
    """Bench limits of the PV inverters' grid-support setpoints (devices/pv/functions.py)."""
    if name == "p_limit_w" and limits.p_min_w is not None and -value < limits.p_min_w:
        raise SetpointRejected(f"p_limit_w={value:g} allows more output than the bench limit p_min_w="
                               f"{limits.p_min_w:g}")
    elif name == "tan_phi" and limits.pf_min is not None:
        pf = 1.0 / math.sqrt(1.0 + value * value)
        if pf < limits.pf_min - 1e-12:
            raise SetpointRejected(f"tan_phi={value:g} is a power factor of {pf:.3f}, below the bench limit "
                                   f"pf_min={limits.pf_min:g}")
    elif name == "conn" and value == 0 and not limits.allow_disconnect:
        raise SetpointRejected("conn=0 (disconnect) refused: the bench does not allow it (allow_disconnect)")
    elif name.startswith(("vv_v", "vw_v")) and name.endswith("_pu"):
        if limits.curve_v_min_pu is not None and value < limits.curve_v_min_pu:
            raise SetpointRejected(f"{name}={value:g} below the bench limit curve_v_min_pu={limits.curve_v_min_pu:g}")
        if limits.curve_v_max_pu is not None and value > limits.curve_v_max_pu:
            raise SetpointRejected(f"{name}={value:g} above the bench limit curve_v_max_pu={limits.curve_v_max_pu:g}")


@dataclass
class ControllerWatch:
    """A controller is silent for a device when no setpoint came for ``timeout_cycles`` steps after one did."""

    step_s: int
    timeout_cycles: int = 2
    last_t: float | None = None
    tripped: bool = False

    def seen(self, t_s: float) -> bool:
        """A setpoint arrived at ``t_s``; True if this ends a silence (the controller is back)."""
        back = self.tripped
        self.last_t, self.tripped = t_s, False
        return back

    def check(self, t_s: float) -> bool:
        """True exactly once when the silence reaches the timeout at ``t_s``."""
        if self.tripped or self.last_t is None:
            return False
        if t_s - self.last_t >= self.timeout_cycles * self.step_s:
            self.tripped = True
            return True
        return False


@dataclass
class DeviceHealth:
    """The device watchdog of one device."""

    state: State = "armed"
    since_t: float = 0.0
    faults: int = 0
    history: list[tuple[float, State, str]] = field(default_factory=list)

    def go(self, state: State, t_s: float, why: str) -> bool:
        """Change state (an emergency stop is final); True if it changed."""
        if state == self.state or self.state == "estop":
            return False
        if state == "faulted":
            self.faults += 1
        self.state, self.since_t = state, t_s
        self.history.append((t_s, state, why))
        return True

    @property
    def passes_controller(self) -> bool:
        """Controller setpoints reach the device only when armed."""
        return self.state == "armed"
