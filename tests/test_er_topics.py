"""The Energy Router's telemetry on its site's SMX broker under the S4G topic names (Family.topics).

A controller written against the S4G ER connector's topics (``.../EnergyRouterInverter/MMXN1.Watt.instMag.f``,
one SenML record per value, in the device's convention) finds them below ``s4g/{site}/smx/{device}/native/``.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import pytest

from cosim.messaging import topics
from cosim.messaging.errors import TopicError
from cosim.rundir import read_table
from cosim.scenario import load
from cosim.world import WorldBuilder

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"

SCENARIO = f"""
name: er_topics
start: 2019-06-15T11:00:00+02:00
duration: 10min
step: 60s
grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
profiles: {{pv: {{source: s4g-pv, column: fur_denmark}}}}
messaging: {{default: direct, roles: {{smx: embedded}}}}
sites:
  - {{id: h1, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
devices:
  - {{id: er, family: energy_router, site: h1, config: {{pv_kwp: 3}}}}
"""


def test_native_topic_layout():
    t = topics.smx_native_topic("h1", "er", "EnergyRouterInverter/MMXN1.Watt.instMag.f")
    assert t == "s4g/h1/smx/er/native/EnergyRouterInverter/MMXN1.Watt.instMag.f"
    info = topics.parse_topic(t)
    assert (info.role, info.device, info.kind, info.quantity) == ("smx", "er", "native",
                                                                  "EnergyRouterInverter/MMXN1.Watt.instMag.f")
    assert info.base_name == "h1/er/"
    for bad in ("s4g/h1/smx/er/native", "s4g/h1/smx/er/native/a b", "s4g/h1/data/er/native/x/y"):
        with pytest.raises(TopicError):
            topics.parse_topic(bad)


def test_er_telemetry_appears_under_the_s4g_topic_names(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    builder = WorldBuilder(load(path), tmp_path / "run").build()
    try:
        sub = builder.bus.subscribe("smx:h1", "s4g/h1/smx/er/native/#", "s4g-controller")
        builder.world.run(until=600, print_progress=False)
        messages = sub.deliver(600)
    finally:
        builder.close()
    last = {}
    for m in messages:
        (rec,) = m.records
        assert rec.name == "h1/er/" + m.topic.split("/native/", 1)[1]  # one record, named as the topic
        last[m.topic.split("/native/", 1)[1]] = (m.t_s, rec.value if rec.value is not None else float(rec.string))
    assert {"EnergyRouterInverter/MMXN1.Watt.instMag.f", "EnergyRouterInverter/ZBAT1.VolChgRte.instMag.f",
            "EnergyRouterPV/MMDC1.Watt.instMag.f", "EnergyRouterInverter/DRCC1.DERStr.stVal"} <= set(last)
    dev = read_table(tmp_path / "run", "devices")
    i = list(dev.t_s).index(last["EnergyRouterPV/MMDC1.Watt.instMag.f"][0])
    # the device's convention: PV + = produced (ours: producing is -), SoC in %
    pv = last["EnergyRouterPV/MMDC1.Watt.instMag.f"][1]
    assert pv > 0 and pv == pytest.approx(-dev.get("er", "pv_p_w")[i])
    j = list(dev.t_s).index(last["EnergyRouterInverter/ZBAT1.VolChgRte.instMag.f"][0])
    assert last["EnergyRouterInverter/ZBAT1.VolChgRte.instMag.f"][1] == pytest.approx(100 * dev.get("er", "soc")[j])
    assert all(math.isfinite(v) for _, v in last.values())
