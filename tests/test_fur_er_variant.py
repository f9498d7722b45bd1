"""Fur residential ER variant: a three-phase Energy Router beside the Fronius ESS at consumer_4006773, reached over
IEC 61850 on loopback (a virtual ER served by the co-simulation), runs and its readings reach the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cosim.rundir import read_table
from cosim.run import run
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]
SCENARIO = REPO / "scenarios" / "fur_skive.yaml"
NOON = {"start": "2019-06-15T12:00:00+02:00", "duration": "20min"}


def test_the_er_variant_runs_over_iec61850_and_its_readings_appear(tmp_path):
    loaded = load(SCENARIO, overrides=NOON, variant="er_residential")
    er = next(d for d in loaded.scenario.devices if d.id == "er_4006773")
    assert er.address.startswith("iec61850://") and er.config["phases"] == 3
    res = run(loaded, tmp_path / "run", progress=False, report=False)
    assert res.status == "complete", res.error
    dev, sites = read_table(tmp_path / "run", "devices"), read_table(tmp_path / "run", "sites")
    p, soc, pv = dev.get("er_4006773", "p_w"), dev.get("er_4006773", "soc"), dev.get("er_4006773", "pv_p_w")
    assert len(p) == 20 and np.all(np.isfinite(p)) and np.all(np.isfinite(soc))
    assert np.all(pv < 0)  # 2 kWp on its DC bus at noon
    assert np.ptp(soc) > 0  # the battery moves (self-consumption of the ER's own PV)
    # the ER's power is drawn at the house's PCC beside the Fronius (as read over IEC 61850, 1 W resolution or
    # better), and every other device of the base scenario is still there
    pcc = sites.get("consumer_4006773", "pcc_p_w")
    parts = sites.get("consumer_4006773", "load_p_w") + dev.get("fronius_4006773", "p_w") + p
    np.testing.assert_allclose(pcc, parts, atol=1e-6)
    assert dev.get("libal", "p_w") is not None and dev.get("pv_4186737", "p_w") is not None
