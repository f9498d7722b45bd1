"""Commands to the Energy Router on the S4G topics of its site's SMX broker (Family.commands): a controller
written against ``.../EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f`` and ``.../DRCC1.DERStr.ctlNum`` drives the
ER unchanged; a value outside the ER's limits is refused and counted, not clipped; only control components may
publish there; a non-number is a dead letter. Same results in-process (embedded broker) and on Mosquitto."""

from __future__ import annotations

import socket
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from cosim.messaging.errors import PublishNotAllowed
from cosim.messaging.senml import Record
from cosim.rundir import read_table
from cosim.scenario import load
from cosim.world import WorldBuilder
from devices.energy_router import s4g_topics

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"
PREFIX = "s4g/h1/smx/er/cmd/"

SCENARIO = """
name: er_commands
start: 2019-06-15T11:00:00+02:00
duration: 12min
step: 60s
grid: {{source: dsf-se, path: {fur}, mode: unbalanced}}
profiles: {{pv: {{source: s4g-pv, column: fur_denmark}}}}
messaging: {{default: direct, roles: {{smx: {broker}}}, namespace: {namespace}}}
sites:
  - {{id: h1, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
devices:
  - {{id: er, family: energy_router, site: h1, config: {{pv_kwp: 3}}}}
"""


def _mosquitto_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=1):
            return True
    except OSError:
        return False


def _run(tmp_path: Path, broker: str) -> tuple[dict, dict]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SCENARIO.format(fur=FUR, broker=broker, namespace=f"t{uuid.uuid4().hex[:8]}")))
    builder = WorldBuilder(load(path), tmp_path / "run").build()
    bus = builder.bus
    try:
        bus.register("lessag", "controller")
        bus.register("er-gateway", "device")
        suffix, value = s4g_topics.to_topic_value("batt_p_w", 1200.0, setpoint=True)
        assert suffix == "EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f"
        # retained, as a controller's last command: the command subscription opens when the run starts
        bus.publish("smx:h1", PREFIX + suffix, [Record(suffix, value=value, unit="W")], t_s=120, sender="lessag",
                    retain=True)
        bus.publish("smx:h1", PREFIX + "EnergyRouterInverter/DRCC1.DERStr.ctlNum", [Record("m", value=4.0)],
                    t_s=300, sender="lessag", retain=True)  # mode 4: PV off
        bus.publish("smx:h1", PREFIX + "EnergyRouterInverter/DRCC1.OutWSet.setMag.f", [Record("p", value=1e6)],
                    t_s=420, sender="lessag", retain=True)  # beyond the inverter: refused, not clipped
        bus.publish_raw("smx:h1", PREFIX + "EnergyRouterInverter/DRCC1.CtlMod.setVal", b"[{\"n\":\"x\",\"vs\":\"on\"}]",
                        t_s=420, sender="lessag", retain=True)  # not a number: a dead letter
        bus.publish("smx:h1", PREFIX + "EnergyRouterInverter/ZBTC1.NoSuch.setMag.f", [Record("x", value=1.0)],
                    t_s=480, sender="lessag", retain=True)  # no such command on the ER: a dead letter too
        key = "smx:h1" if "smx:h1" in bus.stats() else "smx"
        refused_before = bus.stats()[key]["refused"]
        with pytest.raises(PublishNotAllowed):  # a device may not command the ER
            bus.publish("smx:h1", PREFIX + suffix, [Record(suffix, value=-2000.0)], t_s=60, sender="er-gateway")
        stats_refused = bus.stats()[key]["refused"] - refused_before
        builder.world.run(until=720, print_progress=False)
        stats = bus.stats()[key]
    finally:
        builder.close()
    dev = read_table(tmp_path / "run", "devices")
    out = {name: np.asarray(dev.get("er", name), dtype=float) for name in
           ("batt_p_w", "mode", "pv_p_w", "rejected", "commands", "p_w")}
    out["t_s"] = np.asarray(dev.t_s)
    return out, {"refused": stats_refused, **stats}


def _check(out: dict, stats: dict) -> None:
    t = list(out["t_s"])
    at = lambda name, t_s: out[name][t.index(t_s)]  # noqa: E731
    # the value on the topic at t = 120 is taken in that step and applies from the next (one cycle of latency)
    assert at("batt_p_w", 120) != pytest.approx(1200.0)
    assert at("batt_p_w", 240) == pytest.approx(1200.0, abs=1.0)
    assert at("pv_p_w", 300) < -100.0 and at("mode", 300) == 3
    assert at("mode", 420) == 4 and at("pv_p_w", 420) == pytest.approx(0.0)
    assert at("rejected", 360) == 0 and at("rejected", 540) >= 1  # OutWSet 1e6: refused and counted
    assert abs(at("p_w", 540)) < 3300.0  # never clipped to the limit and applied
    assert at("commands", 660) == 3  # BatChaPwr, DERStr, OutWSet taken; the word "on" was not a command
    assert stats["refused"] == 1 and stats["dead_letters"] == 2  # the word "on" and the unknown command


def test_commands_on_the_s4g_topics_in_process(tmp_path):
    out, stats = _run(tmp_path, "embedded")
    _check(out, stats)


@pytest.mark.skipif(not _mosquitto_up(), reason="needs Mosquitto on 127.0.0.1:1883")
def test_commands_on_the_s4g_topics_through_mosquitto_give_the_same_results(tmp_path):
    out, stats = _run(tmp_path / "mq", "mosquitto://127.0.0.1:1883")
    _check(out, stats)
    ref, _ = _run(tmp_path / "mem", "embedded")
    for name in out:
        np.testing.assert_array_equal(out[name], ref[name])
