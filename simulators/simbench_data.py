"""SimBench grids and their yearly profiles, parsed once for the grid and the profiles together.

``simbench.get_simbench_net`` parses the whole SimBench CSV data set (6-8 s). The grid loader needs the net,
the profile sources need the absolute load and generator profiles of the same net: both come from one parse,
kept for the process and in a cache folder (``$S4G_CACHE_DIR`` or ``~/.cache/s4g-hil``, under ``simbench/``):
the net without its profiles as a pickle (0.05 s to read; pandapower JSON takes 0.5-2 s) and the profiles of
loads and static generators as one ``.npz`` (~0.1 s). The folder is the user's own cache, trusted as numba's
pickled cache next to it is. A cache entry names the simbench and pandapower versions it was made with; an
unreadable entry is rebuilt, never trusted.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: the profile tables the co-simulation plays: (element table, attribute) in MW / Mvar
PROFILE_KEYS = (("load", "p_mw"), ("load", "q_mvar"), ("sgen", "p_mw"))


class UnknownSimbenchCode(ValueError):
    """simbench cannot build a net for this code."""


@dataclass(frozen=True)
class SimbenchProfiles:
    """Absolute yearly profiles (15-min means, 2016: 35 136 rows) of one SimBench net's loads and generators.

    ``values[(table, attr)]`` has one column per element, in the order of ``names[table]`` / ``index[table]``.
    Arrays are read-only: they are shared by every entity that plays them.
    """

    code: str
    names: dict[str, list[str]]
    index: dict[str, list[int]]
    sgen_p_mw: np.ndarray  # installed power of each static generator (SimBench's sgen p_mw)
    values: dict[tuple[str, str], np.ndarray]

    def column(self, table: str, attr: str, element: str) -> np.ndarray:
        return self.values[(table, attr)][:, self.names[table].index(element)]


def default_cache_dir() -> Path:
    base = os.environ.get("S4G_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "s4g-hil")
    return Path(base) / "simbench"


def _folder(cache_dir: str | os.PathLike[str] | bool | None) -> Path | None:
    if cache_dir is False:
        return None
    return default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]


def _stem(code: str) -> str:
    # the installed versions from their metadata: importing simbench (1 s, with pandapower's plotting and time
    # series packages) is only needed for a parse
    from importlib.metadata import version

    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", code)
    return f"{safe}-sb{version('simbench')}-pp{version('pandapower')}"


# ------------------------------------------------------------------------------------------- the one parse


def _parse(code: str, folder: Path | None) -> tuple[Any, SimbenchProfiles | None]:
    """Parse the SimBench data set once: the net (profiles removed) and its profiles; both go to the cache."""
    import simbench

    try:
        net = simbench.get_simbench_net(code)
    except Exception as exc:  # simbench raises plain ValueError/KeyError with little context
        raise UnknownSimbenchCode(f"{code!r} is not a SimBench code ({exc}); e.g. '1-LV-semiurb4--0-sw', "
                                  "see simbench.collect_all_simbench_codes()") from exc
    profiles: SimbenchProfiles | None
    try:
        absolute = simbench.get_absolute_values(net, profiles_instead_of_study_cases=True)
        profiles = _profiles_from(code, net, absolute)
    except Exception:  # a net without usable profiles still serves the grid; profiles() then says why
        profiles = None
    net.profiles = {}
    if folder is not None:
        stem = _stem(code)
        _write_atomic(folder / f"{stem}.pkl", lambda f: pickle.dump(net, f, protocol=pickle.HIGHEST_PROTOCOL))
        if profiles is not None:
            _write_atomic(folder / f"{stem}-profiles.npz", lambda f: _save_profiles(f, profiles))
    return net, profiles


def _profiles_from(code: str, net: Any, absolute: dict) -> SimbenchProfiles:
    names = {t: [str(n) for n in net[t].name] for t in ("load", "sgen")}
    index = {t: [int(i) for i in net[t].index] for t in ("load", "sgen")}
    values = {}
    for table, attr in PROFILE_KEYS:
        frame = absolute[(table, attr)]
        arr = frame[index[table]].to_numpy(dtype=np.float64) if index[table] else np.zeros((len(frame), 0))
        arr.flags.writeable = False
        values[(table, attr)] = arr
    sgen_p = net.sgen.p_mw.to_numpy(dtype=np.float64).copy()
    return SimbenchProfiles(code, names, index, sgen_p, values)


def _save_profiles(f: Any, p: SimbenchProfiles) -> None:
    arrays: dict[str, Any] = {f"{t}__{a}": v for (t, a), v in p.values.items()}
    for t in ("load", "sgen"):
        arrays[f"{t}__names"] = np.array(p.names[t], dtype=str)
        arrays[f"{t}__index"] = np.array(p.index[t], dtype=np.int64)
    np.savez(f, sgen_p_mw=p.sgen_p_mw, **arrays)


def _load_profiles(code: str, path: Path) -> SimbenchProfiles:
    with np.load(path, allow_pickle=False) as z:
        values = {}
        for table, attr in PROFILE_KEYS:
            arr = np.array(z[f"{table}__{attr}"], dtype=np.float64)
            arr.flags.writeable = False
            values[(table, attr)] = arr
        names = {t: [str(n) for n in z[f"{t}__names"]] for t in ("load", "sgen")}
        index = {t: [int(i) for i in z[f"{t}__index"]] for t in ("load", "sgen")}
        return SimbenchProfiles(code, names, index, np.array(z["sgen_p_mw"], dtype=np.float64), values)


def _write_atomic(target: Path, write: Callable[[Any], None]) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, target)  # atomic, so parallel runs never read half a file
    except OSError:
        pass  # caching is an optimisation only


# ------------------------------------------------------------------------------------------- the two users


@functools.lru_cache(maxsize=4)
def _master(code: str, folder: Path | None) -> tuple[Any, SimbenchProfiles | None]:
    """The net and, when this call parsed, the profiles (None: not parsed here, read them from the cache)."""
    import pandapower as pp

    if folder is not None:
        path = folder / f"{_stem(code)}.pkl"
        if path.is_file():
            try:
                with path.open("rb") as f:
                    net = pickle.load(f)
                if isinstance(net, pp.pandapowerNet):
                    return net, None
            except Exception:  # a corrupt cache entry is rebuilt
                pass
    return _parse(code, folder)


def net(code: str, *, cache_dir: str | os.PathLike[str] | bool | None = None) -> Any:
    """The SimBench net of ``code`` without its profiles, a fresh copy the caller may change."""
    master, _ = _master(code, _folder(cache_dir))
    return copy.deepcopy(master)


@functools.lru_cache(maxsize=4)
def _profiles(code: str, folder: Path | None) -> SimbenchProfiles:
    if folder is not None:
        path = folder / f"{_stem(code)}-profiles.npz"
        if path.is_file():
            try:
                return _load_profiles(code, path)
            except Exception:  # a corrupt cache entry is rebuilt
                pass
    _, parsed = _master(code, folder)
    if parsed is None:  # the net came from the cache but its profiles did not: parse once more (and cache them)
        _master.cache_clear()
        _, parsed = _parse(code, folder)
    if parsed is None:
        raise UnknownSimbenchCode(f"SimBench {code!r} has no usable load and generator profiles")
    return parsed


def profiles(code: str, *, cache_dir: str | os.PathLike[str] | bool | None = None) -> SimbenchProfiles:
    """The absolute load and generator profiles of ``code``'s net (shared, read-only)."""
    return _profiles(code, _folder(cache_dir))


def clear() -> None:
    """Forget what this process parsed or read (tests)."""
    _master.cache_clear()
    _profiles.cache_clear()
