"""The naive grid: the public mosaik-pandapower-2 adapter, with ``runpp_3ph`` for an unbalanced feeder.

mosaik-pandapower-2 (``mosaik_components.pandapower:Simulator``) writes its inputs into the pandapower net and
calls ``pp.runpp`` at every step; outputs are read from the ``res_*`` tables. It models balanced grids only
(power goes to an automatic symmetric load per bus). The Fur feeder has single-phase households, so, as a
newcomer would, we extend the adapter instead of rewriting it: one more child model ``AsymLoad`` (the
``asymmetric_load`` rows of the net, power on the row's phase), ``runpp_3ph`` instead of ``runpp`` in ``step``,
and outputs read from the ``res_*_3ph`` tables. Everything else -- the Grid entity, children per element, the
automatic load and sgen at every bus, the MW units -- is the adapter's own code.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandapower as pp
from pandapower.auxiliary import T012

try:  # the public adapter (pip install mosaik-pandapower-2, or the project's "bench" extra)
    from mosaik_components.pandapower import simulator as _adapter
    ADAPTER = "mosaik-pandapower-2"
except ImportError as exc:  # pragma: no cover - the bench extra brings it
    raise ImportError("the naive composition needs mosaik-pandapower-2: pip install -e '.[bench]'") from exc

PHASES = "abc"


def adapter_version() -> str:
    from importlib import metadata

    try:
        return f"{ADAPTER} {metadata.version(ADAPTER)}"
    except metadata.PackageNotFoundError:  # pragma: no cover
        return ADAPTER


META = copy.deepcopy(_adapter.META)
META["models"]["Bus"]["attrs"] += ["Vm_a[pu]", "Vm_b[pu]", "Vm_c[pu]", "P_in[MW]"]
META["models"]["Grid"]["params"] += ["asym_phases"]
META["models"]["Line"]["attrs"] += ["Pl[MW]"]
META["models"]["AsymLoad"] = {"public": False, "params": [], "any_inputs": False,
                              "attrs": ["P_load[MW]", "Q_load[MVar]", "P[MW]", "Q[MVar]", "Vm[pu]"]}
META["models"]["Trafo"] = {"public": False, "params": [], "any_inputs": False,
                           "attrs": ["loading[%]", "P_hv[MW]", "Pl[MW]"]}
META["models"]["ExternalGrid"]["attrs"] += ["Ploss[MW]"]


class UnbalancedPandapower(_adapter.Simulator):
    """mosaik-pandapower-2's Simulator stepping ``runpp_3ph`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.meta = copy.deepcopy(META)
        self._phase: dict[int, int] = {}

    def create_grid(self, **params: Any) -> dict:
        phases = params.pop("asym_phases", {}) or {}
        grid = super().create_grid(**params)
        net = self._net
        for idx, row in net.asymmetric_load.iterrows():
            self._phase[int(idx)] = int(phases.get(int(idx), phases.get(str(idx), 1)))
            grid["children"].append({"type": "AsymLoad", "eid": f"AsymLoad-{idx}", "rel": [f"Bus-{int(row.bus)}"],
                                     "extra_info": {"name": row["name"], "index": int(idx), "bus": int(row.bus),
                                                    "phase": self._phase[int(idx)]}})
        for idx, row in net.trafo.iterrows():
            grid["children"].append({"type": "Trafo", "eid": f"Trafo-{idx}", "rel": [],
                                     "extra_info": {"name": row["name"], "index": int(idx)}})
        for idx in net.asymmetric_load.index:  # driven rows: scaling 1, nothing until the first input
            net.asymmetric_load.at[idx, "scaling"] = 1.0
            for ph in PHASES:
                net.asymmetric_load.at[idx, f"p_{ph}_mw"] = 0.0
                net.asymmetric_load.at[idx, f"q_{ph}_mvar"] = 0.0
        return grid

    def setup_done(self) -> None:
        super().setup_done()
        # runpp_3ph only counts loads and sgens of type wye/delta: the adapter's automatic ones are wye already
        for table in ("load", "sgen"):
            self._net[table]["type"] = self._net[table]["type"].fillna("wye")

    def step(self, time: int, inputs: dict, max_advance: int) -> int | None:
        net = self._net
        for eid, data in inputs.items():
            model, idx = self.get_model_and_idx(eid)
            if model == "AsymLoad":
                ph = PHASES[self._phase[idx] - 1]
                for attr, values in data.items():
                    col = f"p_{ph}_mw" if attr == "P_load[MW]" else f"q_{ph}_mvar"
                    net.asymmetric_load.at[idx, col] = sum(values.values())
                continue
            spec = _adapter.MODEL_TO_ELEMENT_SPECS[model]
            for attr, values in data.items():  # the adapter's own input handling
                attr_spec = spec.input_attr_specs[attr]
                net[attr_spec.target_elem or spec.elem].at[attr_spec.idx_fn(idx, self), attr_spec.column] = \
                    attr_spec.aggregator(values.values())
        pp.runpp_3ph(net)  # the adapter calls pp.runpp(net) here
        self._v1: dict[Any, float] | None = None
        return time + self._step_size if self._step_size else None

    def _bus_v1(self) -> dict[Any, float]:
        if self._v1 is None:
            rb = self._net.res_bus_3ph
            v = rb[["vm_a_pu", "vm_b_pu", "vm_c_pu"]].to_numpy(float).T
            va = np.deg2rad(rb[["va_a_degree", "va_b_degree", "va_c_degree"]].to_numpy(float).T)
            self._v1 = dict(zip(rb.index, np.abs((T012 @ (v * np.exp(1j * va)))[1])))
        return self._v1

    def get_entity_data(self, eid: str, attrs: list[str]) -> dict[str, Any]:
        model, idx = self.get_model_and_idx(eid)
        net = self._net
        out: dict[str, Any] = {}
        for attr in attrs:
            if model == "Bus":
                if attr == "Vm[pu]":  # positive sequence, as a balanced solver would report
                    out[attr] = float(self._bus_v1()[idx])
                elif attr == "P_in[MW]":  # what was connected to the bus (the adapter's automatic load)
                    out[attr] = float(net.load.at[self.bus_auto_elements.at[idx, "load"], "p_mw"])
                elif attr.startswith("Vm_"):
                    out[attr] = float(net.res_bus_3ph.at[idx, f"vm_{attr[3]}_pu"])
                else:
                    raise ValueError(f"{eid}: no output {attr!r} in unbalanced mode")
            elif model == "AsymLoad":
                ph = PHASES[self._phase[idx] - 1]
                row = net.asymmetric_load.loc[idx]
                if attr == "Vm[pu]":
                    out[attr] = float(net.res_bus_3ph.at[int(row.bus), f"vm_{ph}_pu"])
                else:  # the power this load draws (what was written)
                    out[attr] = float(row[f"p_{ph}_mw"] if attr == "P[MW]" else row[f"q_{ph}_mvar"])
            elif model == "Line":
                r = net.res_line_3ph
                out[attr] = float(r.at[idx, "loading_percent"] if attr == "loading[%]"
                                  else r.at[idx, "pl_a_mw"] + r.at[idx, "pl_b_mw"] + r.at[idx, "pl_c_mw"])
            elif model == "Trafo":
                r = net.res_trafo_3ph
                if attr == "loading[%]":
                    out[attr] = float(r.at[idx, "loading_percent"])
                elif attr == "P_hv[MW]":
                    out[attr] = float(r.at[idx, "p_a_hv_mw"] + r.at[idx, "p_b_hv_mw"] + r.at[idx, "p_c_hv_mw"])
                else:
                    out[attr] = float(r.at[idx, "pl_a_mw"] + r.at[idx, "pl_b_mw"] + r.at[idx, "pl_c_mw"])
            elif model == "ExternalGrid":
                r = net.res_ext_grid_3ph
                if attr == "P[MW]":
                    out[attr] = float(r.at[idx, "p_a_mw"] + r.at[idx, "p_b_mw"] + r.at[idx, "p_c_mw"])
                elif attr == "Q[MVar]":
                    out[attr] = float(r.at[idx, "q_a_mvar"] + r.at[idx, "q_b_mvar"] + r.at[idx, "q_c_mvar"])
                else:  # all line and transformer losses
                    rl, rt = net.res_line_3ph, net.res_trafo_3ph
                    out[attr] = float((rl.pl_a_mw + rl.pl_b_mw + rl.pl_c_mw).sum()
                                      + (rt.pl_a_mw + rt.pl_b_mw + rt.pl_c_mw).sum())
            else:
                raise ValueError(f"{eid}: unknown output {attr!r}")
        return out
