"""Study jobs: a study file posted as text, run by :mod:`cosim.study` in the background.

The study's ``scenario.path`` names a base scenario in one of the API's scenario folders (the repository's
``scenarios/`` by default; ``fur_skive.yaml``, ``scenarios/fur_skive.yaml`` and ``../scenarios/fur_skive.yaml``
all work, so the files of ``studies/`` post as they are), or the request carries the scenario's text; its
relative data paths then resolve in the first scenario folder. No path may leave the scenario folders: the API
never reads a file its configuration did not expose.

Variants run in this process one after the other (``workers=0``, the engine's inline pool) or on Dask (the
registry's one LocalCluster of ``workers`` processes, or a scheduler it was given); cancel stops the running
variants within one co-simulation step (rows with status "cancelled"); what finished is in the table either way.
"""

from __future__ import annotations

import math
import shutil
import uuid
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from cosim.scenario import ScenarioError

from .errors import ApiError

MAX_STUDY_CHARS = 200_000
MAX_SCENARIO_CHARS = 1_000_000


class StudyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    study: str = Field(min_length=1, max_length=MAX_STUDY_CHARS, description="the study file (YAML text)")
    scenario: str | None = Field(None, max_length=MAX_SCENARIO_CHARS,
                                 description="the base scenario's YAML text, if it is not one of the server's")


def _inside(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real.is_relative_to(r.resolve()) for r in roots)


def resolve_scenario(ref: str, roots: list[Path]) -> Path:
    """The scenario file ``ref`` names in one of ``roots`` (ApiError 422 otherwise)."""
    parts = PurePosixPath(ref.replace("\\", "/")).parts
    while parts and parts[0] in ("..", "."):
        parts = parts[1:]
    candidates = [parts, parts[1:] if parts[:1] == ("scenarios",) else None]
    for root in roots:
        for c in candidates:
            if not c or ".." in c or PurePosixPath(*c).is_absolute():
                continue
            p = root.joinpath(*c)
            if p.is_file() and _inside(p, [root]):
                return p.resolve()
    names = sorted({p.name for r in roots for p in r.glob("*.yaml")})
    raise ApiError(422, f"scenario.path {ref!r}: no such scenario on this server; available: {names}")


def _yaml_mapping(text: str, what: str) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ApiError(422, f"{what} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(422, f"{what}: expected a YAML mapping, found {type(doc).__name__}")
    return doc


def _uploaded_scenario(text: str, roots: list[Path], target: Path) -> Path:
    """Write an uploaded scenario with its data paths made absolute in the first root; every path it names (in
    the base document and in each of its variants) must lie inside the roots, checked before any file is read."""
    from pydantic import ValidationError

    from cosim.scenario import Scenario
    from cosim.study.variants import path_locations, set_at

    doc = _yaml_mapping(text, "scenario")
    variants = doc.get("variants") or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ApiError(422, "scenario.variants: expected a mapping of variant name -> replaced keys")
    base = {k: v for k, v in doc.items() if k != "variants"}
    for name, override in [(None, {}), *variants.items()]:
        merged = {**base, **override}
        try:
            model = Scenario.model_validate(merged)
        except ValidationError as exc:
            where = f"variants.{name}." if name else ""
            first = exc.errors()[0]
            at = ".".join(str(x) for x in first.get("loc", ()))
            raise ApiError(422, f"scenario: {where}{at}: {first.get('msg')} "
                                f"({exc.error_count()} problem(s))") from None
        for loc, value in path_locations(model):
            source = value if value.is_absolute() else roots[0] / value
            if not _inside(source, roots):
                raise ApiError(422, f"scenario: {'.'.join(map(str, loc))}: the file {value.name!r} lies outside "
                                    "the server's scenario folders")
            owner = base if name is None else override
            if name is None or loc[0] in override:
                set_at(owner, loc, str(source.resolve()))
    if variants:
        base["variants"] = variants
    target.write_text(yaml.safe_dump(base, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return target


def scenario_info(name: str, roots: list[Path]) -> dict[str, Any]:
    """What a study template needs of a base scenario: its variants, devices, period and step (no validation)."""
    from devices import yaml_file

    if "/" in name or "\\" in name or name.startswith("."):
        raise ApiError(422, f"scenario {name!r}: a file name of the scenario folders, e.g. fur_skive.yaml")
    path = resolve_scenario(name, roots)
    try:
        data = yaml_file.read(path).data
    except Exception as exc:  # the file is the server's; say what is wrong without its path
        raise ApiError(422, f"scenario {name!r} cannot be read: {type(exc).__name__}") from None
    devices = [{"id": d.get("id"), "family": d.get("family")} for d in data.get("devices") or []
               if isinstance(d, dict)]
    return {"name": name, "scenario": data.get("name"), "description": data.get("description"),
            "duration": data.get("duration"), "step": data.get("step"),
            "variants": list(data.get("variants") or {}), "devices": devices}


class StudyJob:
    def __init__(self, jid: str, folder: Path, runner: Any, name: str, owner: str = "local") -> None:
        self.id, self.folder, self.runner, self.name, self.owner = jid, folder, runner, name, owner

    def eta_s(self) -> float | None:
        eta: float | None = self.runner.status_dict()["eta_s"]
        return eta

    @property
    def out(self) -> Path:
        return Path(self.runner.out)

    @property
    def running(self) -> bool:
        return self.runner.status.state in ("planned", "running")

    def status(self) -> dict[str, Any]:
        s = self.runner.status_dict()
        finished = s["done"] + s["failed"] + s["cached"]
        s["progress"] = 100.0 if s["state"] == "complete" else (
            round(100.0 * finished / s["total"], 1) if s["total"] else 0.0)
        return {"id": self.id, "name": self.name, **_finite(s)}

    def wait(self, timeout: float | None = None) -> bool:
        """True once the study's thread has ended (tests, shutdown)."""
        thread = self.runner._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def rows(self) -> list[dict[str, Any]]:
        """The table so far (the engine writes table.parquet at the end; rows() works while it runs)."""
        return [_finite(r) for r in self.runner.rows()]


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy scalars
        try:
            return _finite(x.item())
        except (TypeError, ValueError):
            return str(x)
    return x


def submit(req: StudyRequest, roots: list[Path], folder: Path, *, workers: int, max_variants: int,
           scheduler: str | None = None) -> StudyJob:
    """Check the study (422 with the engine's own message on any problem) and start it in the background."""
    from cosim.study import StudyRunner, load

    doc = _yaml_mapping(req.study, "study")
    scen = doc.get("scenario")
    if not isinstance(scen, dict) or not isinstance(scen.get("path"), str):
        raise ApiError(422, "study: expected 'scenario: {path: NAME.yaml}' naming the base scenario")
    jid = uuid.uuid4().hex[:12]
    job_dir = folder / jid
    job_dir.mkdir(parents=True)
    try:
        if req.scenario is not None:
            scen["path"] = str(_uploaded_scenario(req.scenario, roots, job_dir / "scenario.yaml"))
        else:
            scen["path"] = str(resolve_scenario(scen["path"], roots))
        study_path = job_dir / "study.yaml"
        study_path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
        try:
            loaded = load(study_path)
            runner = StudyRunner(loaded, job_dir / "out", workers=workers, scheduler=scheduler)
            variants = runner.plan()
            planned = len(variants) + sum(b.max_probes for b in runner.searches)
            if planned > max_variants:
                raise ApiError(422, f"the study plans {planned} runs; this server takes at most {max_variants}")
            if variants:
                runner.check(variants[:1])
        except ScenarioError as exc:
            message = str(exc)
            for local in [job_dir, *(r.resolve() for r in roots)]:  # no server path in a reply
                message = message.replace(str(local) + "/", "").replace(str(local), "")
            raise ApiError(422, message) from None
    except Exception:
        shutil.rmtree(job_dir, ignore_errors=True)
        raise
    job = StudyJob(jid, job_dir, runner, loaded.study.name)
    runner.start()
    return job
