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

import numpy as np
import pandapower as pp
import pandas as pd

from simulators.dsf_se import load_dsf_se
from simulators.grid_model import GridLoadError, GridModel, LoadInfo, model_from_net

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
              ampacity_a: Mapping[str, float] | None = None) -> GridModel:
    """Dispatch on ``source`` ("simbench" | "pandapower" | "dsf-se"); ``ampacity_a`` rates DSF-SE line codes."""
    if source == "simbench":
        if not code:
            raise ValueError("source 'simbench' needs a 'code', e.g. '1-LV-semiurb4--0-sw'")
        return load_simbench(code)
    if source in ("pandapower", "dsf-se"):
        if path is None:
            raise ValueError(f"source {source!r} needs a 'path'")
        return load_pandapower_json(path) if source == "pandapower" else load_dsf_se(path, ampacity_a=ampacity_a)
    raise ValueError(f"unknown grid source {source!r}; expected 'simbench', 'pandapower' or 'dsf-se'")


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


# --------------------------------------------------------------------------------------------- 3-phase data


def ensure_three_phase_data(net: pp.pandapowerNet) -> list[str]:
    """Fill zero-sequence data that runpp_3ph needs but balanced data sets (SimBench) lack; returns what was assumed.

    Only missing values are filled. Assumptions: 4-core LV cables with an equal neutral give Z0 ~ 4 Z1 and C0 ~ C1;
    transformers without a vector group are Dyn (the usual MV/LV distribution transformer) with Z0 = Z1; an
    external grid without short-circuit data is a stiff MV grid (1000 MVA, R/X 0.1, X0/X 1, R0/X0 0.1); loads and
    sgens without a wye/delta connection type are wye (runpp_3ph ignores them otherwise).
    """
    notes: list[str] = []

    def fill(table: str, column: str, values: pd.Series | float, what: str) -> None:
        df = net[table]
        if len(df) == 0:
            return
        if column not in df.columns:
            df[column] = np.nan
        missing = df[column].isna()
        if missing.any():
            df.loc[missing, column] = values[missing] if isinstance(values, pd.Series) else values
            notes.append(f"{table}.{column}: {what} for {int(missing.sum())} element(s)")

    fill("line", "r0_ohm_per_km", net.line.r_ohm_per_km * 4.0, "assumed 4 x r1")
    fill("line", "x0_ohm_per_km", net.line.x_ohm_per_km * 4.0, "assumed 4 x x1")
    fill("line", "c0_nf_per_km", net.line.c_nf_per_km * 1.0, "assumed equal to c1")
    if len(net.trafo):
        if "vector_group" not in net.trafo.columns:
            net.trafo["vector_group"] = None
        missing = net.trafo.vector_group.isna()
        if missing.any():
            net.trafo.loc[missing, "vector_group"] = "Dyn"
            notes.append(f"trafo.vector_group: assumed Dyn for {int(missing.sum())} element(s)")
    fill("trafo", "vk0_percent", net.trafo.vk_percent * 1.0 if len(net.trafo) else 0.0, "assumed vk")
    fill("trafo", "vkr0_percent", net.trafo.vkr_percent * 1.0 if len(net.trafo) else 0.0, "assumed vkr")
    fill("trafo", "mag0_percent", 100.0, "assumed 100")
    fill("trafo", "mag0_rx", 0.0, "assumed 0")
    fill("trafo", "si0_hv_partial", 0.9, "assumed 0.9")
    for table in ("load", "sgen"):
        # runpp_3ph only counts elements whose 'type' is 'wye' or 'delta' (SimBench stores e.g. 'PV' there)
        df = net[table]
        if len(df):
            if "type" not in df.columns:
                df["type"] = None
            odd = ~df["type"].isin(["wye", "delta"])
            if odd.any():
                df.loc[odd, "type"] = "wye"
                notes.append(f"{table}.type: set to 'wye' for {int(odd.sum())} element(s)")
    fill("ext_grid", "s_sc_max_mva", 1000.0, "assumed 1000 MVA")
    fill("ext_grid", "rx_max", 0.1, "assumed 0.1")
    fill("ext_grid", "x0x_max", 1.0, "assumed 1.0")
    fill("ext_grid", "r0x0_max", 0.1, "assumed 0.1")
    return notes
