"""The tolerance within which a run over real protocols gives the sim:// KPIs (one place for every test using it).

Registers quantise what crosses the wire: SunSpec carries powers as int16 with a power-of-ten scale factor (1 W
here) and SoC in 0.01 % steps; the LiBal PCS registers carry whole watts. Each reading may differ from the model
by up to 0.5 W, which over a 2-hour run of a handful of devices bounds energies by a few Wh. Allowed: 10 Wh per
energy KPI, 0.2 % of SoC, 1e-4 pu of voltage.
"""

from __future__ import annotations

import pytest

from cosim.kpi import flatten


def assert_kpis_match_within_quantisation(reference: dict, other: dict) -> int:
    """Compare every float KPI of two runs' ``kpis`` dicts; returns how many were compared."""
    a, b = flatten(reference), flatten(other)
    compared = 0
    for key, value in a.items():
        if key.startswith("run.") or not isinstance(value, float) or not isinstance(b.get(key), float):
            continue
        if key.endswith("_kwh"):
            assert b[key] == pytest.approx(value, abs=0.010), key
        elif key.endswith(("soc_min", "soc_max")):
            assert b[key] == pytest.approx(value, abs=0.002), key
        elif key.endswith("_pu"):
            assert b[key] == pytest.approx(value, abs=1e-4), key
        compared += 1
    return compared
