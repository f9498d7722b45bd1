"""Zero-sequence data for unbalanced power flow: the conventions every loader applies, in one place.

Transformers. pandapower's runpp_3ph models a two-winding transformer's zero sequence as a T: the leakage
impedance Zsc split into an HV part ``si0_hv_partial * Zsc`` and an LV part, with the zero-sequence magnetising
impedance ``Zm0 = mag0_percent / 100 * |Zsc|`` (R/X ``mag0_rx``) from the middle node to earth. For a Dyn
transformer the delta winding earths the HV end of the T, so the LV side sees

    Z0 = Z_lv + (Z_hv || Zm0)

With ``mag0_percent = 100`` and ``mag0_rx = 0`` (pandapower's suggestion, our old default) that is about
0.35 R + j 0.6 X instead of Zsc. In a Dyn transformer the delta winding carries the zero-sequence ampere-turns
of the LV winding, so no zero-sequence flux has to pass the core's magnetising path: Z0 = Z1 = Zsc. We take
Zm0 = 1e6 Zsc (:data:`TRANSFORMER_MAG0_PERCENT`), which gives Z0 = Zsc to within 1e-6 relative (the same value
makes YNd see Z0 = Zsc from the HV side, and YNyn a series Zsc between two earthed neutrals).

Four-wire LV cables (:func:`four_wire`). A line's zero-sequence impedance says where the return current of an
unbalanced load flows. A line code without neutral or earth coupling (Z0 = Z1, as in the Fur file) means the
phases are uncoupled: the return path has no impedance. In a four-core cable whose neutral is earthed at the
transformer only, the return current ``3 I0`` flows in the neutral; with Zp, Zn the self impedances of a phase
and the neutral core and Zm the mutual impedance between cores, the phase-to-neutral voltage drop gives

    Z1 = Zp - Zm,        Z0 = Zp - 4 Zm + 3 Zn = Z1 + 3 (Zn - Zm)

so a neutral of the phase cores' cross-section (Zn = Zp) gives Z0 = 4 Z1 exactly, whatever the coupling.
"""

from __future__ import annotations

import numpy as np
import pandapower as pp
import pandas as pd

# Zero-sequence magnetising impedance in % of the short-circuit impedance: 1e6 x, so that Z0 = Z1 (see above).
TRANSFORMER_MAG0_PERCENT = 1e8


def ensure_three_phase_data(net: pp.pandapowerNet) -> list[str]:
    """Fill zero-sequence data that runpp_3ph needs but balanced data sets (SimBench) lack; returns what was assumed.

    Only missing values are filled. Assumptions: 4-core LV cables with an equal neutral give Z0 ~ 4 Z1 and C0 ~ C1;
    transformers without a vector group are Dyn (the usual MV/LV distribution transformer) with Z0 = Z1 (see
    :data:`TRANSFORMER_MAG0_PERCENT`); an
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
    fill("trafo", "mag0_percent", TRANSFORMER_MAG0_PERCENT, "assumed Zm0 = 1e6 Zsc, so that Z0 = Z1")
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


def four_wire(net: pp.pandapowerNet, z0_over_z1: float = 4.0, max_kv: float = 1.0) -> list[str]:
    """Model every line of ``max_kv`` or less as a four-core cable: Z0 = ``z0_over_z1`` * Z1 (R and X alike).

    4.0 is a neutral of the phase cores' cross-section carrying all the return current (module docstring); a
    reduced neutral gives more (Z0 = Z1 + 3 (Zn - Zm)). Overrides the lines' zero-sequence data; the line
    capacitance is kept. Returns what was assumed, for ``GridModel.assumptions``.
    """
    if not np.isfinite(z0_over_z1) or z0_over_z1 < 1.0:
        raise ValueError(f"z0_over_z1 must be a number >= 1 (a return path adds impedance), got {z0_over_z1!r}")
    line = net.line
    if len(line) == 0:
        return []
    kv = net.bus.vn_kv
    lv = (kv.loc[line.from_bus].to_numpy() <= max_kv) & (kv.loc[line.to_bus].to_numpy() <= max_kv)
    if not lv.any():
        return []
    for zero, positive in (("r0_ohm_per_km", "r_ohm_per_km"), ("x0_ohm_per_km", "x_ohm_per_km")):
        given = line[zero] if zero in line.columns else pd.Series(np.nan, index=line.index)
        line[zero] = np.where(lv, line[positive] * z0_over_z1, given)
    return [f"line.r0/x0: four-wire LV cable, Z0 = {z0_over_z1:g} Z1, for {int(lv.sum())} line(s) of <= {max_kv:g} kV"]
