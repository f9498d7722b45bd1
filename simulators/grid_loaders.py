"""Grid loaders: build a :class:`GridModel` from SimBench, pandapower JSON or S4G DSF-SE JSON, and fill the
zero-sequence data that three-phase power flow needs.

The DSF-SE parser is :mod:`simulators.dsf_se`; the model and its error type are :mod:`simulators.grid_model`
(re-exported here, the loaders' public API). File problems raise :class:`GridLoadError`, which names the
file, the key path inside it, what was expected and what was found.
"""

from __future__ import annotations

import os
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


def load_simbench(code: str, *, cache_dir: str | os.PathLike[str] | bool | None = None) -> GridModel:
    """Load a SimBench grid by code.

    The net comes from :mod:`simulators.simbench_data`, which parses the SimBench data set once for the grid and
    the profiles together and caches both (``cache_dir=False`` disables the cache folder).
    """
    from simulators import simbench_data

    try:
        net = simbench_data.net(code, cache_dir=cache_dir)
    except simbench_data.UnknownSimbenchCode as exc:
        raise GridLoadError(f"simbench:{code}", "code", "a valid SimBench code",
                            f"{code!r} ({exc.__cause__ or exc})") from exc
    return model_from_net(net, source="simbench")


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
