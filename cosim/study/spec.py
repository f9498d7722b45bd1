"""Study files: a base scenario, axes over its parameters, a sampling plan or a search, the KPIs to keep.

Validated like scenario files (:mod:`cosim.scenario`): every problem names the file, the line, the key path, what
was expected and what was found, and unknown keys are errors. Key paths are checked against the base scenario
here, so a typo in a device id fails before the first variant runs. See docs/studies.md for the format.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cosim.durations import positive_whole_seconds
from cosim.paths import check_name
from cosim.scenario import _MISSING, Problem, ScenarioError, _line_of, _pydantic_problems, key_path
from cosim.study import keypath
from devices import yaml_file

Name = Annotated[str, AfterValidator(check_name)]
#: the axis key that picks one of the base scenario file's own ``variants`` (e.g. a controller strategy)
VARIANT_KEY = "variant"
#: axis keys ``economics.<assumption>`` change an economic assumption, not the scenario (no extra simulation)
ECONOMICS_PREFIX = "economics."
Scalar = float | int | str | bool | None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ScenarioRef(Strict):
    path: Path = Field(description="the base scenario file (relative to the study file)")
    variant: str | None = Field(None, description="one of the scenario file's variants as the base")


class RangeSpec(Strict):
    low: float
    high: float
    num: int | None = Field(None, ge=2, le=10_000, description="points of a full grid (linspace, both ends)")
    integer: bool = False

    @model_validator(mode="after")
    def _order(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"expected low < high (found low={self.low}, high={self.high})")
        return self


class AxisSpec(Strict):
    """One parameter swept by the study."""

    name: Name = Field(description="column name in the table (e.g. capacity_kwh)")
    key: str | list[str] | None = Field(None, description="key path(s) into the scenario, or 'variant' for its "
                                        "variants")
    values: list[Any] | None = Field(None, min_length=1, max_length=100_000)
    range: RangeSpec | None = None
    cases: dict[str, dict[str, Any]] | None = Field(None, description="named cases, each a mapping of key paths "
                                                    "to values (null removes a list element)")
    scale: float | list[float] = Field(1.0, description="value written = axis value x scale (e.g. 1000: kWh "
                                       "axis, Wh key); a list gives one factor per key")

    @field_validator("key")
    @classmethod
    def _paths(cls, v: str | list[str] | None) -> str | list[str] | None:
        for path in [] if v is None else [v] if isinstance(v, str) else v:
            if path != VARIANT_KEY:
                keypath.parse(path)
        return v

    @field_validator("cases")
    @classmethod
    def _case_paths(cls, v: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        for case in (v or {}).values():
            for path in case:
                keypath.parse(path)
        return v

    @model_validator(mode="after")
    def _domain(self) -> AxisSpec:
        if self.cases is not None:
            if self.key is not None or self.values is not None or self.range is not None:
                raise ValueError("an axis with 'cases' takes no 'key', 'values' or 'range'")
            return self
        if self.key is None:
            raise ValueError("give 'key' (with 'values' or 'range') or 'cases'")
        if (self.values is None) == (self.range is None):
            raise ValueError("give exactly one of 'values' or 'range'")
        if isinstance(self.scale, list) and len(self.scale) != len(self.keys):
            raise ValueError(f"'scale' lists {len(self.scale)} factors for {len(self.keys)} keys")
        return self

    @property
    def keys(self) -> list[str]:
        return [] if self.key is None else [self.key] if isinstance(self.key, str) else list(self.key)

    @property
    def domain_values(self) -> list[Any] | None:
        return list(self.cases) if self.cases is not None else self.values

    def assignments(self, value: Any) -> list[tuple[str, Any]]:
        """(key path, value written) for the axis value ``value``."""
        if self.cases is not None:
            return list(self.cases[value].items())
        scales = self.scale if isinstance(self.scale, list) else [self.scale] * len(self.keys)
        return [(k, _scaled(value, f)) for k, f in zip(self.keys, scales)]


def _scaled(value: Any, factor: float) -> Any:
    if factor != 1.0 and isinstance(value, (int, float)) and not isinstance(value, bool):
        out = value * factor
        return int(out) if isinstance(value, int) and float(out).is_integer() else out
    return value


class PlanSpec(Strict):
    kind: Literal["grid", "lhs", "random"] = "grid"
    samples: int | None = Field(None, ge=1, le=100_000, description="points of lhs / random")
    seed: int = Field(0, ge=0, le=2**63 - 1)

    @model_validator(mode="after")
    def _samples(self) -> PlanSpec:
        if self.kind != "grid" and self.samples is None:
            raise ValueError(f"plan {self.kind!r} needs 'samples'")
        return self


class TargetSpec(Strict):
    """A pass/fail condition on one KPI: the pilot targets, and what a search must keep."""

    name: Name
    kpi: str
    min: float | None = None
    max: float | None = None
    label: str = ""

    @model_validator(mode="after")
    def _bound(self) -> TargetSpec:
        if self.min is None and self.max is None:
            raise ValueError("give 'min', 'max' or both")
        return self

    def met(self, value: Any) -> bool | None:
        if value is None or isinstance(value, str):
            return None
        v = float(value)
        return (self.min is None or v >= self.min) and (self.max is None or v <= self.max)


class SearchSpec(Strict):
    """Bisection on one numeric axis, for every combination of the other axes: the smallest (``find: min``) or
    largest (``find: max``) value that meets every target in ``meets``, to within ``tolerance``. Assumes the
    targets hold on one side of a threshold (monotone), as a battery size or a PV size does."""

    axis: str
    find: Literal["min", "max"] = "min"
    low: float
    high: float
    tolerance: float = Field(gt=0)
    meets: list[str] = Field(min_length=1, description="names of targets that must hold")

    @model_validator(mode="after")
    def _order(self) -> SearchSpec:
        if not self.low < self.high:
            raise ValueError("expected low < high")
        return self


class ObjectiveSpec(Strict):
    kpi: str
    sense: Literal["min", "max"] = "min"


Selector = Literal["all", "none"] | list[dict[str, Any]]


class OutputsSpec(Strict):
    runs: Selector = Field("none", description="variants whose time series are kept: all, none or axis matches")
    tables: list[str] = Field(["buses", "devices", "sites"], description="tables kept for those variants")


class ReportSpec(Strict):
    heatmaps: Selector = Field("none", description="variants shown as voltage heat maps (node x time)")
    max_heatmaps: int = Field(6, ge=0, le=50)


class LifetimeSpec(Strict):
    """Battery ageing of chosen devices from their SoC series (devices/battery/ageing.py)."""

    devices: list[str] = Field(min_length=1)
    chemistry: Literal["xu2018_lmo", "nmc", "lfp"] = "xu2018_lmo"
    temperature_c: float = 25.0
    years: int = Field(20, ge=1, le=50)
    eol_soh: float = Field(0.8, gt=0, lt=1)


class EconomicsSpec(Strict):
    """Total cost of ownership per stakeholder in the way of the S4G economic engine (cosim/study/economics.py)."""

    dso_storage: list[str] = Field(default_factory=list, description="device ids (globs) owned by the DSO")
    household_storage: list[str] = Field(default_factory=list, description="device ids (globs) in households")
    years: int = Field(20, ge=1, le=50)
    discount_rate: float = Field(0.07, ge=0, lt=1)
    battery_eur_per_kwh: float = Field(817.0, ge=0)
    battery_price_trend: float = Field(-0.0716, gt=-1, lt=1, description="yearly change of the battery price")
    battery_lifetime_years: float | None = Field(None, gt=0, description="default: from lifetime, else 15")
    permit_eur_per_kwh: float = Field(290.6, ge=0)
    energy_eur_per_kwh: float | None = Field(None, ge=0, description="default: the scenario's import price")
    loss_share_dso: float = Field(0.5, ge=0, le=1)
    opex_share: float = Field(0.02, ge=0, lt=1)
    strengthening: Literal["dsf-ee", "none"] = Field("dsf-ee", description="paid when a variant breaks a target")
    reference: dict[str, Any] | None = Field(None, description="axis values of the variant NPV and payback "
                                             "compare against (e.g. the one without storage)")


ECONOMIC_ASSUMPTIONS = ("years", "discount_rate", "battery_eur_per_kwh", "battery_price_trend",
                        "battery_lifetime_years", "permit_eur_per_kwh", "energy_eur_per_kwh", "loss_share_dso",
                        "opex_share")


class Study(Strict):
    name: Name
    description: str = ""
    scenario: ScenarioRef
    until: Annotated[int, AfterValidator(lambda v: v)] | None = Field(None, description="simulated period, e.g. 7d")
    set: dict[str, Any] = Field(default_factory=dict, description="key path -> value for every variant")
    axes: list[AxisSpec] = Field(default_factory=list, max_length=32)
    plan: PlanSpec = PlanSpec()
    search: SearchSpec | None = None
    kpis: list[str] = Field(["grid.v_minutes_outside_10pct", "total.v_min_pu", "total.v_max_pu"], min_length=1)
    targets: list[TargetSpec] = Field(default_factory=list)
    objectives: list[ObjectiveSpec] = Field(default_factory=list, max_length=2)
    outputs: OutputsSpec = OutputsSpec()
    report: ReportSpec = ReportSpec()
    lifetime: LifetimeSpec | None = None
    economics: EconomicsSpec | None = None
    max_variants: int = Field(10_000, ge=1, le=1_000_000)

    @field_validator("until", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> Any:
        return None if v is None else positive_whole_seconds(v)

    @field_validator("set")
    @classmethod
    def _set_paths(cls, v: dict[str, Any]) -> dict[str, Any]:
        for path in v:
            keypath.parse(path)
        return v

    @model_validator(mode="after")
    def _references(self) -> Study:
        names = [a.name for a in self.axes]
        if len(set(names)) != len(names):
            raise ValueError(f"axis names must be unique (found {names})")
        targets = {t.name for t in self.targets}
        if self.search is not None:
            axis = next((a for a in self.axes if a.name == self.search.axis), None)
            if axis is None:
                raise ValueError(f"search.axis {self.search.axis!r} is not an axis name ({', '.join(names) or 'none'})")
            missing = [m for m in self.search.meets if m not in targets]
            if missing:
                raise ValueError(f"search.meets names unknown targets {missing}; targets: {sorted(targets)}")
        return self

    @property
    def until_s(self) -> int | None:
        return self.until

    def axis(self, name: str) -> AxisSpec:
        return next(a for a in self.axes if a.name == name)

    @property
    def kept_kpis(self) -> list[str]:
        """KPIs in the table: those asked for, plus those the targets and objectives read."""
        out = list(self.kpis)
        for k in [t.kpi for t in self.targets] + [o.kpi for o in self.objectives]:
            if k not in out:
                out.append(k)
        return out


@dataclass(frozen=True)
class LoadedStudy:
    study: Study
    path: Path
    text: str
    scenario_path: Path  # absolute

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()

    def fingerprint(self) -> str:
        """What must not change for ``--resume`` to reuse results: the study text and the base scenario's bytes."""
        h = hashlib.sha256(self.text.encode())
        h.update(self.scenario_path.read_bytes())
        return h.hexdigest()

    def error(self, loc: tuple[str | int, ...], message: str, found: Any = _MISSING) -> ScenarioError:
        return ScenarioError(self.path, [Problem(key_path(loc), message, found,
                                                 _line_of(yaml_file.parse(self.text).root, loc))])


def load(path: str | Path) -> LoadedStudy:
    """Read and validate a study file, and check its key paths against the base scenario (ScenarioError)."""
    path = Path(path)
    try:
        doc = yaml_file.read(path)
    except OSError as exc:
        raise ScenarioError(path, [Problem("", f"cannot read the file: {exc.strerror or exc}", _MISSING)]) from None
    except yaml_file.YamlInputError as exc:
        raise ScenarioError(path, [Problem(key_path(p.loc), p.message, _MISSING, p.line)
                                   for p in exc.problems]) from None
    if not isinstance(doc.data, dict):
        raise ScenarioError(path, [Problem("", "expected a mapping of keys (name, scenario, axes, kpis, ...)",
                                           type(doc.data).__name__)])
    data = {k: v for k, v in doc.data.items() if not (isinstance(k, str) and k.startswith("x-"))}
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(path, _pydantic_problems(exc, (), doc.root)) from None
    scenario_path = (path.parent / study.scenario.path).resolve()
    loaded = LoadedStudy(study, path, doc.text, scenario_path)
    problems = _scenario_problems(loaded, doc.root)
    if problems:
        raise ScenarioError(path, problems)
    return loaded


def _scenario_problems(ls: LoadedStudy, root: Any) -> list[Problem]:
    """Key paths and variant names checked against the base scenario document."""
    from cosim.study.base import BaseDocument

    def problem(loc: tuple[str | int, ...], message: str, found: Any = _MISSING) -> Problem:
        return Problem(key_path(loc), message, found, _line_of(root, loc))

    study = ls.study
    if not ls.scenario_path.is_file():
        return [problem(("scenario", "path"), "scenario file not found", str(ls.scenario_path))]
    try:
        base = BaseDocument.read(ls.scenario_path, study.scenario.variant)
    except ScenarioError as exc:
        return [problem(("scenario",), f"the base scenario is invalid: {exc}")]
    except KeyError as exc:
        return [problem(("scenario", "variant"), str(exc.args[0]), study.scenario.variant)]
    problems = []
    for path in study.set:
        try:
            keypath.targets(base.patched_copy(), path)
        except keypath.KeyPathError as exc:
            problems.append(problem(("set", path), str(exc)))
    for i, axis in enumerate(study.axes):
        for j, path in enumerate(axis.keys):
            loc = ("axes", i, "key") + ((j,) if isinstance(axis.key, list) else ())
            if path.startswith(ECONOMICS_PREFIX):
                field = path[len(ECONOMICS_PREFIX):]
                if study.economics is None or field not in ECONOMIC_ASSUMPTIONS:
                    problems.append(problem(loc, "an economics.* axis needs an 'economics' section and one of "
                                            f"{', '.join(ECONOMIC_ASSUMPTIONS)}", path))
                continue
            if path == VARIANT_KEY:
                if axis.values is None:
                    problems.append(problem(("axes", i), "a 'variant' axis takes 'values' (variant names)"))
                else:
                    for k, v in enumerate(axis.values):
                        if v not in base.variant_names:
                            problems.append(problem(("axes", i, "values", k), "expected one of the scenario's "
                                                    f"variants: {', '.join(base.variant_names) or 'none'}", v))
                continue
            try:
                keypath.targets(base.patched_copy(), path)
            except keypath.KeyPathError as exc:
                problems.append(problem(loc, str(exc), path))
    for i, axis in enumerate(study.axes):
        for name, case in (axis.cases or {}).items():
            for path in case:
                try:
                    keypath.targets(base.patched_copy(), path)
                except keypath.KeyPathError as exc:
                    problems.append(problem(("axes", i, "cases", name, path), str(exc)))
    if study.search is not None:
        axis = study.axis(study.search.axis)
        if axis.range is None and not all(isinstance(v, (int, float)) for v in axis.values or []):
            problems.append(problem(("search", "axis"), "a search axis must be numeric (a range)", axis.name))
    return problems


def json_schema() -> dict[str, Any]:
    schema = Study.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "S4G study"
    return schema


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


__all__ = ["VARIANT_KEY", "AxisSpec", "LoadedStudy", "Study", "json_schema", "load"]
