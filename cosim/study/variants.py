"""From a study to variants: the base document, the patch of each variant, and the bundle workers run from.

A variant is the base scenario document with a few keys written (the study's ``set`` and one value per axis).
Its id is a hash of those values, so the same variant has the same id in every run of the study: that is what
``--resume`` matches on. Workers share no file system with the client: every data file the scenarios
reference (grid file, CSV profiles, ...) goes into one :class:`Bundle` (bytes keyed by content hash), scattered
to the workers once; each task then carries only its patched scenario text, whose paths point into the bundle.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

from pydantic import BaseModel, ValidationError

from cosim.scenario import Scenario
from devices import yaml_file
from cosim.study import keypath
from cosim.study.base import BaseDocument
from cosim.study.spec import ECONOMICS_PREFIX, VARIANT_KEY, LoadedStudy, canonical

BUNDLE_DIR = "files"


@dataclass(frozen=True)
class Variant:
    id: str
    axes: dict[str, Any]  # axis name -> axis value (what the table shows)
    origin: str = "plan"  # plan | search

    @staticmethod
    def make(axes: dict[str, Any], origin: str = "plan") -> Variant:
        return Variant(variant_id(axes), dict(axes), origin)


def variant_id(axes: dict[str, Any]) -> str:
    return "v" + hashlib.sha256(canonical(axes).encode()).hexdigest()[:10]


def document(ls: LoadedStudy, base: BaseDocument, variant: Variant) -> dict[str, Any]:
    """The scenario document of ``variant``: base (or the axis' scenario variant), ``set``, axis values, ``until``."""
    study = ls.study
    doc = base.patched_copy()
    for axis in study.axes:
        if VARIANT_KEY in axis.keys:
            doc = base.with_variant(variant.axes[axis.name])
    for path, value in study.set.items():
        keypath.assign(doc, path, value)
    for axis in study.axes:
        for path, value in axis.assignments(variant.axes[axis.name]):
            if path != VARIANT_KEY and not path.startswith(ECONOMICS_PREFIX):
                keypath.assign(doc, path, value)
    if study.until is not None:
        doc["duration"] = study.until
    doc["name"] = f"{doc.get('name', 'scenario')}-{variant.id}"
    return doc


# ---------------------------------------------------------------- files the scenario references


def path_locations(model: BaseModel, loc: tuple[str | int, ...] = ()) -> list[tuple[tuple[str | int, ...], Path]]:
    """Every Path field of a validated scenario with its location (field names are the document's keys)."""
    out = []
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        key = info.alias or name
        if isinstance(value, Path):
            out.append((loc + (key,), value))
        elif isinstance(value, BaseModel):
            out += path_locations(value, loc + (key,))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    out += path_locations(item, loc + (key, i))
    return out


def set_at(doc: Any, loc: tuple[str | int, ...], value: Any) -> None:
    for part in loc[:-1]:
        doc = doc[part]
    doc[loc[-1]] = value


@dataclass
class Bundle:
    """Data files by bundle name (``files/<sha12>-<name>``), shipped once to every worker."""

    files: dict[str, bytes] = field(default_factory=dict)
    _by_source: dict[Path, str] = field(default_factory=dict)

    def add(self, source: Path) -> str:
        source = source.resolve()
        if source not in self._by_source:
            data = source.read_bytes()
            name = f"{BUNDLE_DIR}/{hashlib.sha256(data).hexdigest()[:12]}-{source.name}"
            self.files[name] = data
            self._by_source[source] = name
        return self._by_source[source]

    @property
    def token(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(name.encode())
        return h.hexdigest()[:16]

    @property
    def nbytes(self) -> int:
        return sum(len(b) for b in self.files.values())


def _rewrite_paths(doc: dict[str, Any], base_dir: Path, rewrite: Callable[[Path], str]) -> str:
    doc = copy.deepcopy(doc)
    try:
        model = Scenario.model_validate(doc)
    except ValidationError:  # the worker (or the check) reports the same error for this variant
        return yaml_file.dump(doc, sort_keys=False)
    for loc, value in path_locations(model):
        source = value if value.is_absolute() else (base_dir / value)
        set_at(doc, loc, rewrite(source) if source.is_file() else str(source))  # missing: validation names it
    return yaml_file.dump(doc, sort_keys=False)


def portable_text(doc: dict[str, Any], base_dir: Path, bundle: Bundle) -> str:
    """The YAML text of ``doc`` with every referenced file added to ``bundle`` and its path pointing there."""
    return _rewrite_paths(doc, base_dir, bundle.add)


def check(doc: dict[str, Any], base_dir: Path) -> None:
    """Validate ``doc`` as ``s4g run`` would (ScenarioError naming the scenario key paths)."""
    from cosim.scenario import load

    text = _rewrite_paths(doc, base_dir, lambda p: str(p.resolve()))
    with tempfile.TemporaryDirectory(prefix="s4g-study-check-") as tmp:
        path = Path(tmp) / "variant.yaml"
        path.write_text(text, encoding="utf-8")
        load(path)


_UNPACKED: dict[str, Path] = {}


def unpack(token: str, files: dict[str, bytes]) -> Path:
    """The folder holding the bundle on this process (unpacked once per worker process and bundle)."""
    folder = _UNPACKED.get(token)
    if folder is not None and folder.is_dir():
        return folder
    folder = Path(tempfile.mkdtemp(prefix=f"s4g-study-{token}-"))
    for name, data in files.items():
        target = (folder / name).resolve()
        if folder.resolve() not in target.parents:  # a bundle name never leaves its folder
            raise ValueError(f"bundle entry {name!r} points outside the bundle")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(target.suffix + f".{os.getpid()}.part")
        tmp.write_bytes(data)
        tmp.replace(target)
    _UNPACKED[token] = folder
    return folder


def economic_overrides(ls: LoadedStudy, variant: Variant) -> dict[str, Any]:
    """The economic assumptions the variant's ``economics.*`` axes set."""
    out = {}
    for axis in ls.study.axes:
        for path, value in axis.assignments(variant.axes[axis.name]):
            if path.startswith(ECONOMICS_PREFIX):
                out[path[len(ECONOMICS_PREFIX):]] = value
    return out


__all__ = ["BaseDocument", "Bundle", "Variant", "document", "economic_overrides", "path_locations", "portable_text",
           "set_at", "unpack", "variant_id"]
