"""What a controller kind's ``build`` may use of the world being built (the world builder implements it).

Controller kinds (:mod:`cosim.controller_kinds`) live above cosim; they receive this context instead of importing
the world builder, so the dependency runs one way: controllers -> cosim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import DeviceSpec, LoadedScenario, Scenario, SiteSpec


@dataclass
class SiteHandle:
    """One site of the world: its connection point and the profile entities its devices and controllers use."""

    spec: SiteSpec
    pcc: Any  # the grid's Load entity: sums site load and devices, outputs the point's p_w, q_var and voltages
    load: Any | None = None  # profile entity (p_w, q_var)
    pv: Any | None = None  # PV profile entity (w_per_kwp) for the site's devices
    dc_load: Any | None = None  # DC-load profile entity (p_w): loads on a device's DC bus, not at the PCC
    devices: list[str] = field(default_factory=list)
    meter: Any | None = None  # the site's meter (SMM): a device at the site whose family ``meters_point``

    @property
    def pcc_reading(self) -> Any:
        """What the SMX reads the PCC's ``p_w`` / ``q_var`` from: the site's meter if it has one (over its protocol
        in protocol mode), else the grid's connection point."""
        return self.meter if self.meter is not None else self.pcc


@runtime_checkable
class BuildContext(Protocol):
    """The world under construction, as a controller kind sees it."""

    loaded: LoadedScenario  # ``loaded.error(loc, message)`` makes a ScenarioError at a key path
    scenario: Scenario
    world: Any  # the mosaik World, for plain connections
    out_dir: Path
    step_s: int
    devices: dict[str, Any]  # device id -> device entity
    sites: dict[str, SiteHandle]
    grid: Any  # the Grid entity
    grid_children: dict[str, list[Any]]  # "Bus" / "Line" / "Trafo" / "Load" -> entities

    def sim(self, name: str, python: str | None = None, **params: Any) -> Any:
        """Start (once) and return the model factory of a simulator; ``python`` registers a new one."""

    def connect(self, src: Any, dst: Any, *attr_pairs: str | tuple[str, str], role: str | None = None,
                topic: str | None = None, sender_kind: str = "controller", period_s: int = 0,
                time_shifted: bool = False, initial_data: dict[str, Any] | None = None) -> None:
        """``world.connect``, over a broker role when the scenario puts that role on one."""

    def record(self, entity: Any, attr: str, table: str, column: str | list[str]) -> None:
        """Record ``entity.attr`` into a table of the run directory."""

    def record_group(self, entity: Any, attrs: list[str], table: str, ids: list[str]) -> None:
        """Record a group entity's vector attributes as ``<ids[i]>.<attr>``, in the file order of one entity per
        id."""

    def add_entity(self, entity: Any) -> Any:
        """Make an entity the kind created known to the recorder wiring."""

    def select_devices(self, ids: list[str] | str, *, needs_battery: bool = False) -> list[DeviceSpec]:
        """The device specs a controller names ("*" = all), optionally only those with a battery setpoint."""

    def site_of(self, device_id: str) -> SiteHandle | None:
        """The site a device belongs to (None for a device on its own bus)."""

    def point_of(self, device_id: str) -> Any:
        """The grid Load entity at a device's connection point (its site's PCC or its own bus)."""

    def rng(self, name: str) -> np.random.Generator:
        """A generator derived from the scenario seed and a stable name."""

    def series(self, entities: list[Any]) -> Any:
        """A profile Series entity: these profile entities' values as vectors (element i: entities[i])."""

    def vectors(self, roles: list[str], device_ids: list[str]) -> tuple[Any, Any] | None:
        """For a kind that controls many devices the same way: (grid Points over the devices' connection points,
        device Table over the devices), element i for device_ids[i] -- when every role is a plain connection, no
        device has a meter as its PCC reading and all sit in one host; else None (wire per device)."""
