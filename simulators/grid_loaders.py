"""Grid loaders: build a :class:`GridModel` from SimBench, pandapower JSON or S4G DSF-SE JSON, and fill the
zero-sequence data that three-phase power flow needs.

The DSF-SE parser is :mod:`simulators.dsf_se`; the model and its error type are :mod:`simulators.grid_model`
(re-exported here, the loaders' public API). File problems raise :class:`GridLoadError`, which names the
file, the key path inside it, what was expected and what was found.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pandapower as pp

from simulators.dsf_se import load_dsf_se
from simulators.grid_model import GridLoadError, GridModel, LoadInfo, model_from_net
from simulators.three_phase_data import ensure_three_phase_data, four_wire

__all__ = [
    "GridLoadError",
    "GridModel",
    "LoadInfo",
    "ensure_three_phase_data",
    "load_dsf_se",
    "load_grid",
    "load_pandapower_json",
    "load_simbench",
]


# --------------------------------------------------------------------------------------------- entry point


def load_grid(source: str, *, path: str | os.PathLike[str] | None = None, code: str | None = None,
              ampacity_a: Mapping[str, float] | None = None, lv_z0_over_z1: float | None = None) -> GridModel:
    """Dispatch on ``source`` ("simbench" | "pandapower" | "dsf-se"); ``ampacity_a`` rates DSF-SE line codes.

    ``lv_z0_over_z1``: None keeps the grid data's zero sequence; a number models every LV line as a four-wire
    cable with Z0 = that times Z1 (4 for a full-size neutral, :func:`simulators.three_phase_data.four_wire`).
    """
    if source == "simbench":
        if not code:
            raise ValueError("source 'simbench' needs a 'code', e.g. '1-LV-semiurb4--0-sw'")
        model = load_simbench(code)
    elif source in ("pandapower", "dsf-se"):
        if path is None:
            raise ValueError(f"source {source!r} needs a 'path'")
        model = load_pandapower_json(path) if source == "pandapower" else load_dsf_se(path, ampacity_a=ampacity_a)
    else:
        raise ValueError(f"unknown grid source {source!r}; expected 'simbench', 'pandapower' or 'dsf-se'")
    if lv_z0_over_z1 is not None:
        model.assumptions.extend(four_wire(model.net, lv_z0_over_z1))
    return model


# --------------------------------------------------------------------------------------------- SimBench


def _default_cache_dir() -> Path:
    base = os.environ.get("S4G_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "s4g-hil"
    )
    return Path(base) / "simbench"


def load_simbench(code: str, *, cache_dir: str | os.PathLike[str] | bool | None = None) -> GridModel:
    """Load a SimBench grid by code.

    simbench re-parses its whole CSV data set on every call (~6 s); the net (without its yearly profiles, which the
    co-simulation does not use here) is cached as pandapower JSON (~0.5 s to read). ``cache_dir=False`` disables it.
    """
    import simbench

    net: pp.pandapowerNet | None = None
    cache_file: Path | None = None
    if cache_dir is not False:
        folder = _default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)  # type: ignore[arg-type]
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", code)
        cache_file = folder / f"{safe}-sb{simbench.__version__}-pp{pp.__version__}.json"
        if cache_file.is_file():
            try:
                net = pp.from_json(str(cache_file))
            except Exception:  # a corrupt cache entry is rebuilt, never trusted
                net = None
    if net is None:
        try:
            net = simbench.get_simbench_net(code)
        except Exception as exc:
            raise GridLoadError(f"simbench:{code}", "code", "a valid SimBench code", f"{code!r} ({exc})") from exc
        net.profiles = {}
        if cache_file is not None:
            _write_atomic(cache_file, pp.to_json(net))
    return model_from_net(net, source="simbench")


def _write_atomic(target: Path, text: str) -> None:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, target)  # atomic, so parallel runs never read half a file
    except OSError:
        pass  # caching is an optimisation only


# --------------------------------------------------------------------------------------------- pandapower JSON


def load_pandapower_json(path: str | os.PathLike[str]) -> GridModel:
    p = Path(path)
    if not p.is_file():
        raise GridLoadError(p, "", "an existing pandapower JSON file", "no such file")
    try:
        net = pp.from_json(str(p))
    except Exception as exc:
        raise GridLoadError(p, "", "a pandapower JSON network",
                            f"unreadable content ({type(exc).__name__}: {exc})") from exc
    if not isinstance(net, pp.pandapowerNet):
        raise GridLoadError(p, "", "a pandapower network", type(net).__name__)
    if len(net.bus) == 0:
        raise GridLoadError(p, "bus", "at least one bus", "an empty bus table")
    if len(net.ext_grid[net.ext_grid.in_service]) == 0:
        raise GridLoadError(p, "ext_grid", "an in-service external grid (slack)", "none")
    return model_from_net(net, source="pandapower")
