"""Scenario files: the YAML format, its validation, and error messages a user can act on.

Every error names the file, the line, the key path (``devices[3].config.battery.capacity_wh``), what was
expected and the value found. Unknown keys are errors. Relative paths are resolved against the scenario
file's folder. The family-specific ``config`` of a device and the ``params`` of a controller are validated
by the family's and the controller kind's own models, and their errors carry the full key path too.
A device is checked against its family's declaration (devices.family): the scheme of its address must be one
the family speaks, every required input needs a source (cosim.sources), and its bus or its site's grid load must
exist in the grid (names read once per grid file, simulators.grid_names). Top-level sections owned by packages
above cosim (``bench:``, by hil_bench) register under the entry-point group ``s4g.scenario_sections``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from collections.abc import Callable
from urllib.parse import parse_qsl

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      ValidationInfo, create_model, field_validator, model_validator)

from cosim import controller_kinds, events, sources
from cosim.events import EventSpec
from cosim.messaging.config import MessagingSpec
from devices import registry as device_registry
from devices import yaml_file
from devices.base import Address
from cosim.durations import positive_whole_seconds
from cosim.paths import check_name
from cosim.security.spec import SecuritySpec

SECTION_GROUP = "s4g.scenario_sections"

# one duration grammar for every input (cosim/durations.py); the old name stays for callers
parse_duration = positive_whole_seconds

Seconds = Annotated[int, BeforeValidator(parse_duration)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Names that become file and directory names (run directory, io/<device>.parquet): one path component each.
Name = Annotated[str, AfterValidator(check_name)]
# simulated time is stored as pandas timestamps (end 2262) and sent as absolute SenML times (begin 1978)
EARLIEST_START = dt.datetime(1980, 1, 1, tzinfo=dt.UTC)
LATEST_END = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)
_CLOCK = r"^(([01]\d|2[0-3]):[0-5]\d|24:00)$"


class GridSpec(Strict):
    source: Literal["simbench", "pandapower", "dsf-se"]
    path: Path | None = Field(None, description="grid file (pandapower JSON or S4G DSF-SE JSON)")
    code: str | None = Field(None, description="SimBench code, e.g. 1-LV-semiurb4--0-sw")
    mode: Literal["balanced", "unbalanced"] = "balanced"
    solver: Literal["fast", "pandapower"] = "fast"
    static_loads: Literal["profiles", "zero", "file"] = Field(
        "profiles", description="grid-file loads no site drives: the grid's own profiles (SimBench; other sources "
                                "draw 0 W with a warning), zero (0 W, silent) or file (the file's fixed values)")
    line_ampacity_a: dict[str, float] = Field(default_factory=dict,
                                              description="rated current per DSF-SE line code (the format has none)")

    @model_validator(mode="after")
    def _source_args(self) -> GridSpec:
        if self.source == "simbench" and not self.code:
            raise ValueError("source 'simbench' needs 'code' (e.g. 1-LV-semiurb4--0-sw)")
        if self.source != "simbench" and self.path is None:
            raise ValueError(f"source {self.source!r} needs 'path' to the grid file")
        return self


class LoadProfileRef(Strict):
    source: Literal["s4g-residential", "s4g-commercial", "simbench", "csv"] = "s4g-residential"
    column: str | None = None
    element: str | None = Field(None, description="SimBench load name")
    path: Path | None = None
    scale: float = 1.0
    power_factor: float = Field(1.0, gt=0, le=1)


class PvProfileRef(Strict):
    source: Literal["s4g-pv", "simbench", "csv"] = "s4g-pv"
    column: str | None = "fur_denmark"
    element: str | None = None
    path: Path | None = None
    scale: float = 1.0


class TouPeriod(Strict):
    start: str = Field(alias="from", pattern=_CLOCK)
    end: str = Field(alias="to", pattern=_CLOCK)
    import_eur_per_kwh: float
    export_eur_per_kwh: float = 0.0

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False)


class PriceSpec(Strict):
    kind: Literal["fixed", "tou", "csv"] = "fixed"
    import_eur_per_kwh: float | None = None
    export_eur_per_kwh: float | None = None
    periods: list[TouPeriod] | None = None
    path: Path | None = None

    @model_validator(mode="after")
    def _kind_args(self) -> PriceSpec:
        needed = {"fixed": "import_eur_per_kwh", "tou": "periods", "csv": "path"}[self.kind]
        if getattr(self, needed) is None:
            raise ValueError(f"price kind {self.kind!r} needs {needed!r}")
        return self


class Profiles(Strict):
    pv: PvProfileRef | None = Field(None, description="PV profile for every PV device unless its site overrides it")
    price: PriceSpec | None = None


class SiteSpec(Strict):
    id: Name
    grid_load: str | None = Field(None, description="a load of the grid file that this site drives")
    bus: str | None = Field(None, description="or: the bus to connect to (a new connection point)")
    phase: Literal[1, 2, 3] | None = Field(None, description="single-phase connection (1=a, 2=b, 3=c); none = 3-phase")
    load: LoadProfileRef | None = None
    dc_load: LoadProfileRef | None = Field(None, description="DC loads behind the site's devices, W (source "
                                           "site.dc_load_p_w; not drawn at the PCC)")
    pv_profile: PvProfileRef | None = None
    contract_import_w: float | None = Field(None, gt=0)
    contract_export_w: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _connection(self) -> SiteSpec:
        if (self.grid_load is None) == (self.bus is None):
            raise ValueError("give exactly one of 'grid_load' (a load of the grid file) or 'bus'")
        if self.grid_load is not None and self.phase is not None:
            raise ValueError("'phase' goes with 'bus'; a grid_load has its phase in the grid file")
        return self


class DeviceSpec(Strict):
    id: Name
    family: str
    site: str | None = None
    bus: str | None = Field(None, description="for devices without a site (e.g. a grid battery)")
    phase: Literal[1, 2, 3] | None = None
    address: str = "sim://"
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_s: float = Field(2.0, gt=0)

    @field_validator("family")
    @classmethod
    def _known_family(cls, v: str) -> str:
        if v not in device_registry.families():
            raise ValueError(f"expected one of {', '.join(sorted(device_registry.families()))}")
        return v

    @field_validator("address")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        addr = Address.parse(v)
        if addr.scheme not in device_registry.drivers():
            raise ValueError(f"expected an address with a scheme among {', '.join(device_registry.known_schemes())}")
        return v

    @model_validator(mode="after")
    def _placement(self) -> DeviceSpec:
        if (self.site is None) == (self.bus is None):
            raise ValueError("give exactly one of 'site' or 'bus'")
        return self


class ControllerSpec(Strict):
    id: Name
    kind: str
    devices: list[str] | Literal["*"] = "*"
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in controller_kinds.names():
            raise ValueError(f"expected one of {', '.join(controller_kinds.names())}")
        return v


class EvTypeSpec(Strict):
    """One kind of EV in a fleet (simulators/ev_fleet.py draws each arrival from these by ``share``)."""

    name: str = "ev"
    capacity_wh: float = Field(gt=0)
    p_max_w: float = Field(gt=0, description="on-board charger")
    phases: Literal[1, 2, 3] = 3
    wh_per_km: float = Field(gt=0)
    share: float = Field(1.0, gt=0)


class EvGroupSpec(Strict):
    """Commercial user group: arrival time (h, local) and dwell (h), normal distributions."""

    name: str = "group"
    share: float = Field(gt=0)
    arrival_h: float = Field(ge=0, lt=24)
    arrival_sd_h: float = Field(ge=0)
    dwell_h: float = Field(gt=0)
    dwell_sd_h: float = Field(ge=0)


def _as_dicts(items: list[BaseModel] | None) -> list[dict[str, Any]] | None:
    return None if items is None else [i.model_dump() for i in items]  # the fleet simulator takes plain dicts


class EvFleetSpec(Strict):
    """EVs arriving at a group of wallboxes (simulators/ev_fleet.py); one bay per wallbox, in order."""

    id: Name
    kind: Literal["commercial", "residential"] = "commercial"
    wallboxes: list[str] = Field(min_length=1, description="ids of the devices the bays serve (families fed by an "
                                 "EV fleet, e.g. wallbox), one connector each")
    evs_per_day: float = Field(22.0, ge=0, description="commercial: EVs per working day")
    unplug_when_done: bool = False
    working_days: list[int] = Field([0, 1, 2, 3, 4], description="0 = Monday")
    plug_probability: float = Field(0.9, ge=0, le=1, description="residential: chance an EV plugs in a day")
    distance_km_mean: float = Field(35.0, gt=0)
    ev_types: Annotated[list[EvTypeSpec] | None, AfterValidator(_as_dicts)] = None
    groups: Annotated[list[EvGroupSpec] | None, AfterValidator(_as_dicts)] = None
    session_model: str | None = Field(None, description="commercial: draw sessions from a model fitted to published "
                                      "statistics (simulators/ev_sessions.py, e.g. 'workplace'); replaces groups")

    @field_validator("session_model")
    @classmethod
    def _known_model(cls, v: str | None) -> str | None:
        from simulators.ev_sessions import MODELS

        if v is not None and v not in MODELS:
            raise ValueError(f"expected one of {', '.join(sorted(MODELS))}")
        return v


class TelemetrySpec(Strict):
    """Field data every site and device publishes on the Data Broker (recorded as SensorThings observations)."""

    period: Seconds = 900
    site_attrs: list[str] = ["p_w", "v_pu"]
    device_attrs: list[str] = ["p_w", "soc", "pv_p_w", "batt_p_w"]


class OutputSpec(Strict):
    device_attrs: list[str] | Literal["*"] = "*"
    buses: bool = True
    lines: bool = True
    flush_rows: int = Field(1440, gt=0)


class KpiSpec(Strict):
    v_band_pu: tuple[float, float] = (0.9, 1.1)
    v_band_tight_pu: tuple[float, float] = (0.95, 1.05)
    warmup: Seconds | None = Field(None, description="start of the run left out of the peak powers (default: one "
                                                     "step when there are controllers, else none)")
    pilot: Literal["bucharest", "bolzano_residential"] | None = Field(
        None, description="report this pilot's KPIs beside its targets (cosim/pilot_kpis.py)")
    reference_variant: Name | None = Field(
        None, description="the variant a pilot's KPIs are compared with (e.g. the run without S4G): `s4g compare` "
                          "judges a target relative to it")

    @field_validator("v_band_pu", "v_band_tight_pu")
    @classmethod
    def _band(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1]:
            raise ValueError("expected [low, high] in pu with 0 < low < high, e.g. [0.9, 1.1]")
        return v


class ScenarioCore(Strict):
    """The whole scenario file, without the sections other packages register (see :data:`Scenario`)."""

    name: Name
    description: str = ""
    start: dt.datetime
    timezone: str | None = Field(None, description="IANA zone of the site, e.g. Europe/Copenhagen (DST, profiles)")
    duration: Seconds
    step: Seconds = 60
    seed: int = Field(0, ge=0, le=2**64 - 1)
    grid: GridSpec
    profiles: Profiles = Profiles()
    sites: list[SiteSpec] = Field(default_factory=list)
    devices: list[DeviceSpec] = Field(default_factory=list)
    controllers: list[ControllerSpec] = Field(default_factory=list)
    ev_fleets: list[EvFleetSpec] = Field(default_factory=list)
    events: list[EventSpec] = Field(default_factory=list, description="scheduled outages, voltage sags, device "
                                    "trips and communication losses (cosim/events.py)")
    messaging: MessagingSpec | None = Field(None, description="S4G broker roles; absent: every flow is direct")
    telemetry: TelemetrySpec | None = Field(None, description="field data published on the Data Broker")
    outputs: OutputSpec = OutputSpec()
    kpis: KpiSpec = KpiSpec()
    security: SecuritySpec | None = Field(None, description="TLS with client certificates from a PKI directory "
                                                            "on every link that supports it (docs/security.md)")

    @field_validator("start")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("expected a datetime with a timezone, e.g. 2019-06-15T00:00:00+02:00")
        if not EARLIEST_START <= v < LATEST_END:
            raise ValueError(f"expected a start from {EARLIEST_START.year} to {LATEST_END.year - 1}")
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError("expected an IANA time zone name such as Europe/Copenhagen") from None
        return v

    @field_validator("duration")
    @classmethod
    def _ends_in_time(cls, v: int, info: ValidationInfo) -> int:
        start = info.data.get("start")
        if start is not None and start + dt.timedelta(seconds=v) > LATEST_END:
            raise ValueError(f"expected the run to end by {LATEST_END.date()} (start + duration)")
        return v

    @model_validator(mode="after")
    def _step_divides(self) -> ScenarioCore:
        if self.duration % self.step:
            raise ValueError(f"step ({self.step} s) must divide duration ({self.duration} s)")
        return self

    @property
    def steps(self) -> int:
        return self.duration // self.step


def _with_sections(core: type[ScenarioCore]) -> type[ScenarioCore]:
    """The scenario model with one optional top-level key per registered section (name -> pydantic model)."""
    fields: dict[str, Any] = {}
    for ep in sorted(entry_points(group=SECTION_GROUP), key=lambda e: e.name):
        model = ep.load()
        if ep.name in core.model_fields or not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"scenario section {ep.name} = {ep.value!r} ({SECTION_GROUP}) must be a pydantic model "
                            "under a key the scenario does not have")
        doc = (model.__doc__ or "").strip().splitlines()
        fields[ep.name] = (model | None, Field(None, description=doc[0] if doc else ep.name))
    return create_model("Scenario", __base__=core, __module__=__name__, __doc__="The whole scenario file.",
                        **fields)


if TYPE_CHECKING:
    Scenario = ScenarioCore
else:  # the scenario model: the core plus the registered sections (e.g. ``bench``, hil_bench.config.BenchSpec)
    Scenario = _with_sections(ScenarioCore)


# --- loading and error reporting --------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    key_path: str
    message: str
    found: Any = None
    line: int | None = None


class ScenarioError(Exception):
    """A scenario file that cannot be run; ``str()`` is the message for the user."""

    def __init__(self, path: Path | str, problems: list[Problem]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__(self._render())

    def _render(self) -> str:
        lines = [f"{self.path}: {len(self.problems)} problem(s)"]
        for p in self.problems:
            where = f"{self.path}:{p.line}" if p.line else str(self.path)
            found = "" if p.found is _MISSING else f" (found: {_short(p.found)})"
            lines.append(f"  {where}: {p.key_path or '<top>'}: {p.message}{found}")
        return "\n".join(lines)


_MISSING = object()


def _short(value: Any) -> str:
    text = value.isoformat() if isinstance(value, (dt.datetime, dt.date)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def key_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _line_of(node: yaml.Node | None, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest YAML node along ``loc`` (so a wrong value points at its own line)."""
    best = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            nxt = node.value[part]
        else:
            nxt = None
        if nxt is None:
            break
        node = nxt
        best = node.start_mark.line + 1
    return best


Remap = Callable[[tuple[str | int, ...]], tuple[str | int, ...]]


def _same_loc(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return loc


def _pydantic_problems(exc: ValidationError, prefix: tuple[str | int, ...], root: yaml.Node | None,
                       remap: Remap = _same_loc) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = remap(prefix + tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        found = _MISSING if err["type"] == "missing" else err.get("input", _MISSING)
        if err["type"] == "extra_forbidden" or isinstance(found, dict):
            found = _MISSING if isinstance(found, dict) else found
        problems.append(Problem(key_path(loc), msg, found, _line_of(root, loc)))
    return problems


def _resolve_paths[M: BaseModel](model: M, base: Path) -> M:
    """Make every relative Path field absolute against the scenario folder (recursively)."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, Path) and not value.is_absolute():
            updates[name] = (base / value).resolve()
        elif isinstance(value, BaseModel):
            updates[name] = _resolve_paths(value, base)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            updates[name] = [_resolve_paths(v, base) for v in value]
    return model.model_copy(update=updates) if updates else model


def _semantic_problems(sc: Scenario, root: yaml.Node | None, remap: Remap = _same_loc) -> list[Problem]:
    problems: list[Problem] = []

    def add(loc: tuple[str | int, ...], message: str, found: Any = _MISSING) -> None:
        loc = remap(loc)
        problems.append(Problem(key_path(loc), message, found, _line_of(root, loc)))

    for section in ("sites", "devices", "controllers"):
        seen: set[str] = set()
        for i, item in enumerate(getattr(sc, section)):
            if item.id in seen:
                add((section, i, "id"), f"duplicate id in {section}", item.id)
            seen.add(item.id)
    site_ids = {s.id for s in sc.sites}
    device_ids = {d.id for d in sc.devices}
    for i, dev in enumerate(sc.devices):
        if dev.site is not None and dev.site not in site_ids:
            add(("devices", i, "site"), "expected the id of a site in 'sites'", dev.site)
        fam = device_registry.family(dev.family)
        try:
            fam.parse_config(dev.config)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, ("devices", i, "config"), root, remap)
        addr = Address.parse(dev.address)
        speaks = device_registry.schemes_of(fam)
        if addr.scheme not in speaks:
            add(("devices", i, "address"), f"family {dev.family!r} does not speak {addr.scheme!r}; expected an "
                f"address with one of: {', '.join(speaks)}", dev.address)
        elif addr.is_virtual_request and addr.scheme not in fam.virtual:
            add(("devices", i, "address"), f"family {dev.family!r} has no virtual device for {addr.scheme!r}; "
                f"give host:port of a real device or one of: {', '.join(['sim', *fam.virtual])}", dev.address)
    for i, ctl in enumerate(sc.controllers):
        if ctl.devices != "*":
            for j, dev_id in enumerate(ctl.devices):
                if dev_id not in device_ids:
                    add(("controllers", i, "devices", j), "expected the id of a device in 'devices'", dev_id)
        kind = controller_kinds.controller(ctl.kind)
        try:
            kind.params.model_validate(ctl.params)
        except ValidationError as exc:
            problems += _pydantic_problems(exc, ("controllers", i, "params"), root, remap)
    devices_by_id = {d.id: d for d in sc.devices}
    in_fleet: set[str] = set()
    for i, fleet in enumerate(sc.ev_fleets):
        for j, wb in enumerate(fleet.wallboxes):
            member = devices_by_id.get(wb)
            if member is None or not sources.reads_fleet(device_registry.family(member.family)):
                fed = [n for n, f in device_registry.families().items() if sources.reads_fleet(f)]
                add(("ev_fleets", i, "wallboxes", j), "expected the id of a device whose family is fed by an EV "
                    f"fleet (families: {', '.join(fed) or 'none'})", wb)
            elif wb in in_fleet:
                add(("ev_fleets", i, "wallboxes", j), "this device already belongs to another fleet", wb)
            in_fleet.add(wb)
    sources.problems(sc, device_registry.family, add)
    events.problems(sc, add)
    _reference_problems(sc, add)
    if sc.grid.path is not None and not sc.grid.path.is_file():
        add(("grid", "path"), "grid file not found", str(sc.grid.path))
    else:
        _grid_problems(sc, add)
    for i, site in enumerate(sc.sites):
        for key in ("load", "dc_load", "pv_profile"):
            ref = getattr(site, key)
            if ref is not None and ref.path is not None and not ref.path.is_file():
                add(("sites", i, key, "path"), "profile file not found", str(ref.path))
    return problems


def _reference_problems(sc: Scenario, add: Callable[..., None]) -> None:
    """References a registered section makes to the rest of the scenario (it checks them itself through
    ``scenario_problems(scenario, add)``), and every address read by its own driver."""
    for name in set(Scenario.model_fields) - set(ScenarioCore.model_fields):
        section = getattr(sc, name, None)
        check = getattr(section, "scenario_problems", None)
        if check is not None:
            check(sc, lambda loc, message, *found, _name=name: add((_name, *loc), message, *found))
    for i, dev in enumerate(sc.devices):
        message = _address_problem(dev)
        if message:
            add(("devices", i, "address"), message, dev.address)


def _address_problem(dev: DeviceSpec) -> str | None:
    """Query keys the scheme's driver does not declare (a typo like ``?revrt_s=10``), then the driver's own
    parse of an address with a host (unit ids, option values) -- found at validate, not ten seconds into a run."""
    addr = Address.parse(dev.address)
    try:
        driver = device_registry.driver_class(addr)
    except ImportError as exc:  # e.g. a third-party driver whose dependency is not installed
        return f"the driver for {addr.scheme}:// cannot be imported: {exc}"
    accepted = driver.query_keys
    unknown = sorted({k for k, _ in parse_qsl(addr.query, keep_blank_values=True)} - set(accepted))
    if unknown:
        return (f"unknown address query key(s) {', '.join(unknown)}; {addr.scheme}:// takes "
                f"{', '.join(accepted) if accepted else 'none'}")
    if addr.scheme == "sim" or addr.is_virtual_request:
        return None
    fam = device_registry.family(dev.family)
    try:
        caps = fam.capabilities(fam.parse_config(dev.config))
    except ValidationError:
        return None  # reported with the config
    try:
        driver(addr, caps, timeout_s=dev.timeout_s)  # parses only: no connection is opened
    except ValueError as exc:
        return str(exc)
    return None


def _grid_problems(sc: ScenarioCore, add: Callable[..., None]) -> None:
    """Bus and grid-load names against the grid (its names are cached per grid file: cheap after the first)."""
    from simulators.grid_names import grid_names

    g = sc.grid
    try:
        names = grid_names(g.source, path=g.path, code=g.code)
    except Exception as exc:  # the loader names what is wrong with the file or the code
        add(("grid",), "cannot read the grid: " + str(exc).strip("'\""))
        return

    def examples(pool: frozenset[str]) -> str:
        return ", ".join(sorted(pool)[:3]) + (", ..." if len(pool) > 3 else "")

    for i, site in enumerate(sc.sites):
        if site.grid_load is not None and site.grid_load not in names.loads:
            add(("sites", i, "grid_load"), f"expected a load of the grid (e.g. {examples(names.loads)})",
                site.grid_load)
        if site.bus is not None and site.bus not in names.buses:
            add(("sites", i, "bus"), f"expected a bus of the grid (e.g. {examples(names.buses)})", site.bus)
    for i, dev in enumerate(sc.devices):
        if dev.bus is not None and dev.bus not in names.buses:
            add(("devices", i, "bus"), f"expected a bus of the grid (e.g. {examples(names.buses)})", dev.bus)


@dataclass(frozen=True)
class LoadedScenario:
    scenario: Scenario
    path: Path
    text: str
    variant: str | None = None
    variants: tuple[str, ...] = ()

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def line_of(self, loc: tuple[str | int, ...]) -> int | None:
        return _line_of(yaml.compose(self.text), loc)

    def with_variant(self, variant: str | None) -> LoadedScenario:
        return load(self.path, variant=variant)

    def error(self, loc: tuple[str | int, ...], message: str, found: Any = _MISSING) -> ScenarioError:
        """A ScenarioError for a problem found later (e.g. a bus name the grid does not have)."""
        return ScenarioError(self.path, [Problem(key_path(loc), message, found, self.line_of(loc))])


def load(path: str | Path, overrides: dict[str, Any] | None = None, variant: str | None = None) -> LoadedScenario:
    """Read, validate and resolve a scenario file; raise ScenarioError with every problem found.

    ``variant``: one of the file's ``variants`` (each replaces top-level keys, e.g. ``controllers``); its
    name is appended to the scenario name. ``overrides`` (command-line options) apply last.
    """
    path = Path(path)
    try:
        doc = yaml_file.read(path)  # strict and bounded: UTF-8, depth, aliases, duplicate keys, finite numbers
    except OSError as exc:
        raise ScenarioError(path, [Problem("", f"cannot read the file: {exc.strerror or exc}", _MISSING)]) from None
    except yaml_file.YamlInputError as exc:
        raise ScenarioError(path, [Problem(key_path(p.loc), p.message, _MISSING, p.line)
                                   for p in exc.problems]) from None
    text, root, data = doc.text, doc.root, doc.data
    if not isinstance(data, dict):
        raise ScenarioError(path, [Problem("", "expected a mapping of keys (name, start, duration, grid, ...)",
                                           type(data).__name__)])
    # Top-level keys starting with "x-" hold YAML anchors for reuse (as in compose files); they are not settings.
    data = {k: v for k, v in data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    variants = data.pop("variants", None) or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ScenarioError(path, [Problem("variants", "expected a mapping of variant names to mappings of "
                                           "top-level keys to replace", variants, _line_of(root, ("variants",)))])
    bad_names = [Problem(f"variants.{name}", str(exc), name, _line_of(root, ("variants", name)))
                 for name in variants for exc in _name_error(name)]
    if bad_names:
        raise ScenarioError(path, bad_names)
    remap: Remap = _same_loc
    if variant is not None:
        if variant not in variants:
            raise ScenarioError(path, [Problem("variants", f"no variant {variant!r}; the file has: "
                                               f"{', '.join(variants) or 'none'}", line=_line_of(root, ("variants",)))])
        patch = variants[variant]
        data.update(patch)
        data["name"] = f"{data.get('name', 'scenario')}-{variant}"

        # errors in replaced keys point into the variant
        def remap(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
            return ("variants", variant, *loc) if loc and loc[0] in patch else loc

    data.update(overrides or {})
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(path, _pydantic_problems(exc, (), root, remap)) from None
    scenario = _resolve_paths(scenario, path.parent.resolve())
    problems = _semantic_problems(scenario, root, remap)
    ref = scenario.kpis.reference_variant
    if ref is not None and ref not in variants:  # the run a pilot's relative targets are judged against
        problems.append(Problem("kpis.reference_variant", f"no variant {ref!r}; the file has: "
                                f"{', '.join(variants) or 'none'}", ref, _line_of(root, ("kpis", "reference_variant"))))
    if problems:
        raise ScenarioError(path, problems)
    return LoadedScenario(scenario, path, text, variant, tuple(variants))


def _name_error(name: Any) -> list[ValueError]:
    try:
        check_name(name)
    except ValueError as exc:
        return [exc]
    return []


def json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "S4G co-simulation scenario"
    return schema


__all__ = ["LoadedScenario", "Problem", "Scenario", "ScenarioError", "json_schema", "load", "parse_duration"]
