"""The names a grid offers (buses and loads), for checking a scenario before anything runs.

Reading a grid means importing pandapower and building the net (seconds); validation only needs its names.
:func:`grid_names` loads the grid once with the same loader a run uses (so the names are the run's names) and
keeps them in a small JSON file in the user cache, keyed by the grid file's content (or the SimBench code) and
the versions of the packages that name things; later validations read that file in milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: bump when the loaders change how they name buses or loads
NAMES_FORMAT = 1


@dataclass(frozen=True)
class GridNames:
    buses: frozenset[str]
    loads: frozenset[str]


def _cache_dir() -> Path:
    base = os.environ.get("S4G_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "s4g-hil"
    )
    return Path(base) / "grid-names"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "-"


def _key(source: str, path: str | os.PathLike[str] | None, code: str | None) -> str:
    h = hashlib.sha256(f"{NAMES_FORMAT}|{source}|{code}|{_version('pandapower')}|{_version('simbench')}|".encode())
    if path is not None:
        h.update(Path(path).read_bytes())
    return h.hexdigest()


def grid_names(source: str, *, path: str | os.PathLike[str] | None = None, code: str | None = None,
               cache: bool = True) -> GridNames:
    """Bus and load names of a grid; raises what the loader raises (GridLoadError, ValueError, OSError)."""
    cache_file = _cache_dir() / f"{_key(source, path, code)}.json" if cache else None
    if cache_file is not None and cache_file.is_file():
        try:
            data = json.loads(cache_file.read_text(encoding="utf-8"))
            return GridNames(frozenset(data["buses"]), frozenset(data["loads"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass  # a damaged entry is rebuilt, never trusted
    from simulators.grid_loaders import load_grid

    model = load_grid(source, path=path, code=code)
    names = GridNames(frozenset(model.bus_names), frozenset(load.name for load in model.loads))
    if cache_file is not None:
        _write_atomic(cache_file, json.dumps({"buses": sorted(names.buses), "loads": sorted(names.loads)}))
    return names


def _write_atomic(target: Path, text: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)  # atomic: parallel validations never read half a file
    except OSError:
        pass  # the cache is an optimisation only
