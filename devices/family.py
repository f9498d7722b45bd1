"""A device family: its configuration, its array physics, and what it measures and accepts.

Each family package (``devices/<family>/``) exposes one :class:`Family` named ``FAMILY``. The family is
what the co-simulation needs to know about a kind of device independently of how it is reached: the
physics bank steps many identical devices as arrays (``sim://``), a virtual device serves one bank member
over the real protocol, and a protocol driver reaches either that virtual device or real hardware.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Mapping

import numpy as np
from pydantic import BaseModel

from devices.base import Capabilities


class ModelBank(abc.ABC):
    """Physics of N devices of one family, stepped together (no I/O, no clock of its own).

    ``setpoints`` holds the current setpoint arrays by name; writers assign into them. ``step`` advances
    the physics over ``[t_s, t_s + dt_s)`` using exogenous inputs ``env`` (arrays by name), after which
    ``measure`` returns the measurement arrays (powers as means over the step, states at its end).
    """

    setpoint_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, configs: list[BaseModel]) -> None:
        self.configs = configs
        self.setpoints: dict[str, np.ndarray] = {name: np.zeros(len(configs)) for name in self.setpoint_names}

    @property
    def n(self) -> int:
        return len(self.configs)

    @abc.abstractmethod
    def step(self, t_s: int, dt_s: int, env: Mapping[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def measure(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True)
class Family:
    """Everything the framework knows about one kind of device."""

    name: str
    config: type[BaseModel]
    bank: type[ModelBank]
    measurements: tuple[str, ...]
    capabilities: Callable[[BaseModel], Capabilities]
    env_inputs: tuple[str, ...] = ()
    #: value of an env input the scenario leaves unconnected (missing here: 0.0)
    env_defaults: Mapping[str, float] = field(default_factory=dict)
    #: setpoint that puts the device into a harmless state (used by watchdogs and emergency stops)
    safe_setpoint: Mapping[str, float] = field(default_factory=dict)
    #: protocol scheme -> "module:Class" of the driver that speaks it (imported on first use)
    drivers: Mapping[str, str] = field(default_factory=dict)
    #: protocol scheme -> "module:Class" of the virtual device serving this family over that protocol
    virtual: Mapping[str, str] = field(default_factory=dict)
    #: the setpoint that sets the battery's power (+ = charge), for storage controllers; None if no battery
    battery_setpoint: str | None = None
    description: str = ""

    @property
    def setpoints(self) -> tuple[str, ...]:
        return self.bank.setpoint_names

    def parse_config(self, raw: Mapping) -> BaseModel:
        return self.config.model_validate(raw)
