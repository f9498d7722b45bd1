"""A commercial site (Bolzano-like: 5 wallboxes, 22 EVs on a working day) in a hand-written mosaik world:
EV fleet simulator -> wallboxes (DeviceSim) -> equal-share controller, once with sim:// wallboxes and once
with virtual OCPP 1.6J / 2.0.1 charge points behind our CSMS driver. The session KPIs must agree.

Tolerance: event counts, waiting times and the plug-in/unplug times are identical; energies agree within
0.1 Wh per run and powers within 1 mW. The only difference between the paths is the resolution of the meter
values on the wire (3 decimals: at most 0.5 mW per reading, i.e. < 0.05 Wh over the 5 x 96 readings of a run);
limits are equal because the controller already rounds them to the 0.1 resolution of charging profiles.
"""

from __future__ import annotations

import json

import mosaik
import pytest

from simulators.ev_fleet import ENV_OUTPUTS, read_sessions, session_kpis

STEP = 600
START = "2024-03-04T05:00:00+01:00"  # a Monday; the EVs of the day arrive after 05:00
HOURS = 16


def run_site(address: str, tmp_path) -> tuple[dict, list[dict], list[dict]]:
    world = mosaik.World({"Devices": {"python": "devices.simulator:DeviceSim"},
                          "Fleet": {"python": "simulators.ev_fleet:EVFleetSim"},
                          "Ctl": {"python": "controllers.ev_baselines:EVBaselineSim"}},
                         skip_greetings=True, configure_logging=False)
    tag = address.split(":")[0]
    events = tmp_path / f"events-{tag}.jsonl"
    sessions = tmp_path / f"sessions-{tag}.jsonl"
    devices = world.start("Devices", step_size=STEP, events_path=str(events))
    fleet = world.start("Fleet", step_size=STEP, start=START, seed=11, sessions_path=str(sessions))
    ctl = world.start("Ctl", step_size=STEP)
    site = fleet.Site(kind="commercial", connectors=5, evs_per_day=22, unplug_when_done=True, name="bolzano")
    boxes = [devices.wallbox(address=address, config={"meter_interval_s": 900}, device_id=f"WB{i}", timeout_s=5.0)
             for i in range(5)]
    share = ctl.Site(kind="equal_share", n=5, site_limit_w=30_000.0)
    for bay, box, slot in zip(site.children, boxes, share.children):
        world.connect(bay, box, *ENV_OUTPUTS)
        world.connect(box, bay, "p_w", time_shifted=True, initial_data={"p_w": 0.0})
        world.connect(box, slot, "connected", "status", time_shifted=True,
                      initial_data={"connected": 0.0, "status": 0.0})
        world.connect(slot, box, "p_max_w")
    world.run(until=HOURS * 3600, print_progress=False)
    got = read_sessions(sessions)[0]
    ev_lines = [json.loads(x) for x in events.read_text().splitlines()] if events.exists() else []
    return session_kpis(sessions), got, ev_lines


def test_sim_and_ocpp_give_the_same_session_kpis(tmp_path):
    ref, ref_sessions, ref_events = run_site("sim://", tmp_path)
    assert ref["arrivals"] == 22 and ref["served"] == 22 and ref["n_waited"] > 0  # the queue is exercised
    assert ref["peak_charging_w"] <= 30_000.0 + 1e-6  # the equal-share limit holds
    assert ref_events == []
    for address in ("ocpp16://", "ocpp201://"):
        kpis, sessions, events = run_site(address, tmp_path)
        assert events == [], events  # no device error, no refused setpoint
        for name in ("arrivals", "served", "services_completed", "n_waited", "waiting_mean_s", "waiting_max_s"):
            assert kpis[name] == ref[name], (address, name)
        for name in ("energy_delivered_wh", "energy_wanted_wh", "unmet_energy_wh"):
            assert kpis[name] == pytest.approx(ref[name], abs=0.1), (address, name)
        assert kpis["peak_charging_w"] == pytest.approx(ref["peak_charging_w"], abs=1e-3)
        assert len(sessions) == len(ref_sessions)
        for a, b in zip(sessions, ref_sessions):
            assert (a["ev_id"], a["bay"], a["t_plug_s"], a["t_unplug_s"]) == (b["ev_id"], b["bay"], b["t_plug_s"],
                                                                             b["t_unplug_s"])
            assert a["e_delivered_wh"] == pytest.approx(b["e_delivered_wh"], abs=0.05)
