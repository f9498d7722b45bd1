"""The device-family contract: one declaration tells the framework everything about a kind of device.

A family package exposes one :class:`Family` (by convention named ``FAMILY``) and registers it under the entry-point
group ``s4g.device_families`` (see :mod:`devices.registry`). From the declaration alone the co-simulation wires the
device into a world (its :class:`Input` s from the world's source vocabulary, its power into the grid if it
``injects``), validation checks a scenario against it (schemes, inputs, setpoints), and the device host steps it:
the physics bank steps many identical devices as arrays (``sim://``), a virtual device serves one bank member over
the real protocol, and a protocol driver reaches either that virtual device or real hardware.
docs/architecture.md ("Write a device family") walks through a complete example.
"""

from __future__ import annotations

import abc
import datetime as dt
import re
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any, ClassVar
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from pydantic import BaseModel

from devices.base import Capabilities

_SOURCE = re.compile(r"^[a-z]+\.[a-z][a-z0-9_]*$")
#: what a family that meters its connection point measures (``Family.meters_point``): the point's net power (load
#: arrow) and the registers of the energy drawn from / fed into the grid there (Wh, cumulative)
METERED = ("p_w", "q_var", "e_import_wh", "e_export_wh")


@dataclass(frozen=True)
class Input:
    """An environment input a family needs and the world source it comes from.

    ``name`` is the attribute on the device entity (the key in the ``env`` a bank's ``step`` receives);
    ``source`` a name from the world's source vocabulary (``site.pv_w_per_kwp``, ``point.v_pu``,
    ``fleet.ev_plugged``, ...: docs/architecture.md lists them). A required input without a source in the
    scenario is a validation error; an optional one takes ``default`` then.
    """

    name: str
    source: str
    required: bool = True
    default: float = 0.0

    def __post_init__(self) -> None:
        if not _SOURCE.match(self.source):
            raise ValueError(f"input {self.name!r}: source {self.source!r} is not of the form 'scope.attr' "
                             "(e.g. 'site.pv_w_per_kwp', 'point.v_pu')")

    @property
    def scope(self) -> str:
        """The part before the dot: ``site``, ``point`` or ``fleet``."""
        return self.source.partition(".")[0]

    @property
    def attr(self) -> str:
        """The part after the dot: the attribute the source offers."""
        return self.source.partition(".")[2]


@dataclass(frozen=True)
class ConnectionPoint:
    """Where a device is connected: the grid bus, its phase (1..3, None = three-phase) and nominal voltage."""

    bus: str | None = None
    phase: int | None = None
    vn_kv: float | None = None


@dataclass(frozen=True)
class DeviceContext:
    """What a device's model and virtual device learn from the world that builds them (the build context).

    ``start`` is the scenario start (timezone-aware: simulated t = 0), ``step_s`` the co-simulation step,
    ``device_id`` the scenario's id of the device, ``point`` its connection point. Stand-alone (``s4g device
    serve``, tests) :meth:`standalone` gives one whose start is now.
    """

    start: dt.datetime
    step_s: int
    device_id: str
    point: ConnectionPoint = ConnectionPoint()

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("DeviceContext.start must be timezone-aware")

    @classmethod
    def standalone(cls, device_id: str = "device", step_s: int = 1) -> DeviceContext:
        return cls(dt.datetime.now(dt.UTC), step_s, device_id)

    def at(self, t_s: float) -> dt.datetime:
        """The calendar time of simulated second ``t_s``."""
        return self.start + dt.timedelta(seconds=float(t_s))


class ModelBank(abc.ABC):
    """Physics of N devices of one family, stepped together (no I/O, no clock of its own).

    ``setpoints`` holds the current setpoint arrays by name; writers assign into them. ``step`` advances
    the physics over ``[t_s, t_s + dt_s)`` using exogenous inputs ``env`` (arrays by input name), after which
    ``measure`` returns the measurement arrays (powers as means over the step, states at its end).
    ``contexts`` holds each member's :class:`DeviceContext` (stand-alone ones when the caller gives none).
    """

    setpoint_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, configs: Sequence[BaseModel], contexts: Sequence[DeviceContext] | None = None) -> None:
        self.configs = configs
        if contexts is None:
            contexts = [DeviceContext.standalone(f"device_{i}") for i in range(len(configs))]
        if len(contexts) != len(configs):
            raise ValueError(f"{len(configs)} configs but {len(contexts)} contexts")
        self.contexts: Sequence[DeviceContext] = contexts
        self.setpoints: dict[str, np.ndarray] = {name: np.zeros(len(configs)) for name in self.setpoint_names}

    @property
    def n(self) -> int:
        return len(self.configs)

    @abc.abstractmethod
    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None: ...

    @abc.abstractmethod
    def measure(self) -> dict[str, np.ndarray]: ...


@dataclass(frozen=True, kw_only=True)
class Family:
    """Everything the framework knows about one kind of device (all by keyword; ``injects`` must be said)."""

    name: str
    #: pydantic model of the device's ``config:`` in a scenario
    config: type[BaseModel]
    #: the array physics of N devices (``sim://``, and the model inside every virtual device)
    bank: type[ModelBank]
    #: what the device measures (names with units); an injecting family measures ``p_w`` and ``q_var``
    measurements: tuple[str, ...]
    #: the setpoints a configured device accepts and their limits
    #: (takes the family's own ``config`` model; Any because Family is not generic over it)
    capabilities: Callable[[Any], Capabilities]
    #: True: the device's ``p_w`` / ``q_var`` (load arrow) are added at its connection point; False: it only
    #: observes (a meter) and is stepped after the power flow of the same step
    injects: bool
    #: environment inputs and the world sources they come from
    inputs: tuple[Input, ...] = ()
    #: protocol scheme -> "module:Class" of the driver that speaks it (imported on first use)
    drivers: Mapping[str, str] = field(default_factory=dict)
    #: protocol scheme -> "module:Class" of the virtual device serving this family over that protocol
    virtual: Mapping[str, str] = field(default_factory=dict)
    #: setpoint that puts the device into a harmless state (used by watchdogs and emergency stops)
    safe_setpoint: Mapping[str, float] = field(default_factory=dict)
    #: the setpoint that sets the battery's power (+ = charge), for storage controllers; None if no battery
    battery_setpoint: str | None = None
    #: True: the device meters its connection point (measures METERED; does not inject). A device of such a family
    #: placed at a site is the site's meter (its SMM): the SMX reads the PCC through it and the site's energy KPIs
    #: come from its registers
    meters_point: bool = False
    #: measurement -> (topic name, factor): the device's own telemetry topics (e.g. the S4G ER connector's
    #: ``EnergyRouterInverter/MMXN1.Watt.instMag.f``), published on its site's SMX broker under
    #: ``s4g/{site}/smx/{device}/native/`` as one SenML record each, value = factor x ours (its own convention)
    topics: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    #: command topic name -> (setpoint, factor): the device's own command topics (the S4G ER connector's
    #: ``EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f``) below the same ``native/``; a SenML value v on one is the
    #: setpoint v / factor, checked against the device's limits like any other; only control components publish
    commands: Mapping[str, tuple[str, float]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        names = [i.name for i in self.inputs]
        if len(set(names)) != len(names):
            raise ValueError(f"family {self.name!r}: an input name is declared twice: {names}")
        if clash := set(names) & (set(self.measurements) | set(self.bank.setpoint_names)):
            raise ValueError(f"family {self.name!r}: inputs {sorted(clash)} are also measurements or setpoints")
        if self.injects and not {"p_w", "q_var"} <= set(self.measurements):
            raise ValueError(f"family {self.name!r} injects power, so it must measure 'p_w' and 'q_var'")
        if self.meters_point and (self.injects or not set(METERED) <= set(self.measurements)):
            raise ValueError(f"family {self.name!r} meters its point, so it must not inject and must measure "
                             f"{', '.join(METERED)}")
        if unknown_topics := set(self.topics) - set(self.measurements):
            raise ValueError(f"family {self.name!r}: topics for {sorted(unknown_topics)}, which it does not measure")
        if unknown_commands := {sp for sp, _ in self.commands.values()} - set(self.bank.setpoint_names):
            raise ValueError(f"family {self.name!r}: command topics for {sorted(unknown_commands)}, not setpoints")
        if unknown := set(self.virtual) - set(self.drivers):
            raise ValueError(f"family {self.name!r}: virtual devices for {sorted(unknown)} but no driver")
        if "sim" in self.drivers:
            raise ValueError(f"family {self.name!r}: 'sim' is every family's; do not list it under drivers")

    @property
    def setpoints(self) -> tuple[str, ...]:
        return self.bank.setpoint_names

    @cached_property  # looked up per input per step by the device host
    def input_names(self) -> frozenset[str]:
        return frozenset(i.name for i in self.inputs)

    @cached_property
    def input_defaults(self) -> Mapping[str, float]:
        """The value of every input while nothing feeds it."""
        return MappingProxyType({i.name: i.default for i in self.inputs})

    @property
    def schemes(self) -> tuple[str, ...]:
        """Address schemes this family speaks: ``sim`` and each of its drivers' (generic drivers such as
        ``replay`` come on top, see :func:`devices.registry.schemes_of`)."""
        return ("sim", *self.drivers)

    def parse_config(self, raw: Mapping[str, Any]) -> BaseModel:
        return self.config.model_validate(raw)
