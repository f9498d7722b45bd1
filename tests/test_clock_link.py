"""The clock link of a served virtual device (devices/clock_link.py): a real socket on loopback, the model advanced
exactly to the time asked, bad requests refused with an error reply and a typed exception, never a crash."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import DeviceUnavailable, ProtocolError
from devices.clock_link import ClockClient, ClockRequestError, ClockServer, parse_request
from devices.fronius.model import FroniusConfig
from devices.fronius.virtual import FroniusSunSpecDevice

INPUTS = frozenset({"pv_w_per_kwp", "site_load_w", "v_pu"})


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_the_typed_error(data):
    try:
        target, step, env = parse_request(data, INPUTS, 0)
    except ClockRequestError:
        return
    assert target >= 0 and step >= 1 and set(env) <= INPUTS


@given(st.integers(0, 10**6), st.integers(1, 3600), st.dictionaries(st.sampled_from(sorted(INPUTS)),
                                                                    st.floats(-1e6, 1e6)))
def test_requests_round_trip(target, step, env):
    line = json.dumps({"advance_to": target, "step_s": step, "env": env}).encode()
    assert parse_request(line, INPUTS, 0) == (target, step, env)


@pytest.mark.parametrize("request_, why", [
    ({"advance_to": 30}, "never goes back"),
    ({"advance_to": 120.5}, "integer"),
    ({"advance_to": 120, "step_s": 0}, ">= 1"),
    ({"advance_to": 120, "env": {"irradiance": 3.0}}, "not an input"),
    ({"advance_to": 120, "env": {"site_load_w": "800"}}, "finite number"),
    ({"t": 120}, "expected"),
])
def test_bad_requests_are_refused(request_, why):
    with pytest.raises(ClockRequestError, match=why):
        parse_request(json.dumps(request_).encode(), INPUTS, 60)


def test_served_model_follows_the_clock_it_is_given():
    async def scenario():
        device = FroniusSunSpecDevice(registry.family("fronius"), FroniusConfig(), device_id="f")
        server = ClockServer(device, {"site_load_w": 0.0})
        client = ClockClient(await server.start(), timeout_s=10)
        try:
            assert await client.advance_to(60, 5, {"site_load_w": 500.0}) == 60
            assert device.t_s == 60 and server.env["site_load_w"] == 500.0
            assert await client.advance_to(60, 5, {}) == 60  # already there: nothing to do
            with pytest.raises(ProtocolError, match="never goes back"):
                await client.advance_to(0, 5, {})
            assert device.t_s == 60  # a refused request changes nothing, and the link stays usable
            assert await client.advance_to(180, 60, {}) == 180
        finally:
            await client.close()
            await server.stop()
        with pytest.raises(DeviceUnavailable, match="clock link"):
            await client.advance_to(240, 5, {})  # nobody listens any more

    asyncio.run(scenario())
