"""The reconnecting driver base: error translation, wanted state, back-off and reconnect, on a scripted transport."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.base import (Address, Capabilities, DeviceUnavailable, Limit, Measurement, ProtocolError, Setpoint,
                          SetpointRejected)
from devices.connection import ReconnectingDriver, translate


class Scripted(ReconnectingDriver):
    """A driver whose transport does what the test says: ``open_error`` / ``read_error`` raise once each."""

    schemes = ("scripted",)

    def __init__(self) -> None:
        super().__init__(Address.parse("scripted://dev"), Capabilities(("p_w",), {"p_w": Limit(-1, 1)}),
                         timeout_s=0.1)
        self.open_errors: list[BaseException] = []
        self.read_errors: list[BaseException] = []
        self.opens = self.closes = 0
        self.written: list[float] = []

    async def _open_link(self) -> None:
        self.opens += 1
        if self.open_errors:
            raise self.open_errors.pop(0)

    async def _read_once(self) -> Measurement:
        if self.read_errors:
            raise self.read_errors.pop(0)
        return Measurement(0.0, {"p_w": 1.0})

    async def _write_once(self, setpoint: Setpoint) -> None:
        if setpoint.values["p_w"] == 1:
            raise SetpointRejected("the device says no")
        self.written.append(setpoint.values["p_w"])

    async def _close_link(self) -> None:
        self.closes += 1


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize("exc, typed", [
    (ConnectionResetError("reset"), DeviceUnavailable), (TimeoutError(), DeviceUnavailable),
    (asyncio.IncompleteReadError(b"ab", 7), DeviceUnavailable), (EOFError(), DeviceUnavailable),
    (UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad"), ProtocolError), (json.JSONDecodeError("x", "", 0), ProtocolError),
    (struct.error("short"), ProtocolError), (RecursionError(), ProtocolError), (KeyError("W"), ProtocolError),
])
def test_transport_exceptions_become_typed_errors(exc, typed):
    async def body():
        drv = Scripted()
        await drv.connect()
        drv.read_errors.append(exc)
        with pytest.raises(typed) as info:
            await drv.read()
        assert "scripted://dev" in str(info.value)
        assert drv.failures == 1 and not drv.is_open  # the stream is not trusted any more
        assert (await drv.read())["p_w"] == 1.0  # a link that worked is re-dialled at once
        assert drv.opens == 2
    run(body())


def test_a_programming_error_is_not_disguised_as_a_device_fault():
    async def body():
        drv = Scripted()
        await drv.connect()
        drv.read_errors.append(TypeError("bug"))
        with pytest.raises(TypeError):
            await drv.read()
        assert not drv.is_open
    run(body())
    with pytest.raises(AttributeError):
        translate(AttributeError("bug"), "x")


def test_calls_before_connect_and_after_close_never_dial():
    async def body():
        drv = Scripted()
        with pytest.raises(DeviceUnavailable, match="not connected"):
            await drv.read()
        async with drv:
            assert drv.is_open
        with pytest.raises(DeviceUnavailable, match="not connected"):
            await drv.read()
        assert drv.opens == 1 and drv.closes >= 1
    run(body())


def test_failed_opens_back_off_exponentially_and_connect_tries_at_once():
    async def body():
        drv = Scripted()
        drv.open_errors = [ConnectionRefusedError("refused")] * 3
        with pytest.raises(DeviceUnavailable, match="refused"):
            await drv.connect()
        for _ in range(50):
            with pytest.raises(DeviceUnavailable, match="next attempt in"):
                await drv.read()
        assert drv.opens == 1
        first = drv.backoff.delay_s
        drv.backoff.retry_at = 0.0  # skip the wait instead of sleeping through it
        with pytest.raises(DeviceUnavailable, match="refused"):
            await drv.read()
        assert drv.backoff.delay_s == 2 * first and drv.opens == 2
        with pytest.raises(DeviceUnavailable, match="refused"):
            await drv.connect()  # an explicit connect ignores the back-off
        assert drv.opens == 3
        await drv.connect()
        assert drv.backoff.delay_s == drv.backoff.min_s and (await drv.read())["p_w"] == 1.0
    run(body())


def test_a_refused_setpoint_keeps_the_link_and_limits_are_checked_first():
    async def body():
        async with Scripted() as drv:
            with pytest.raises(SetpointRejected, match="outside"):
                await drv.write(Setpoint({"p_w": 5.0}))
            with pytest.raises(SetpointRejected, match="says no"):
                await drv.write(Setpoint({"p_w": 1.0}))
            assert drv.is_open and drv.opens == 1
            await drv.write(Setpoint({"p_w": 0.5}))
            assert drv.written == [0.5]
    run(body())


def test_calls_are_serialised():
    async def body():
        inside = 0
        peak = 0

        class Slow(Scripted):
            async def _read_once(self) -> Measurement:
                nonlocal inside, peak
                inside += 1
                peak = max(peak, inside)
                await asyncio.sleep(0)
                inside -= 1
                return Measurement(0.0, {"p_w": 0.0})

        async with Slow() as drv:
            await asyncio.gather(*(drv.read() for _ in range(20)))
        assert peak == 1
    run(body())


ERRORS = st.sampled_from([ConnectionResetError(), TimeoutError(), EOFError(), ValueError("x"), struct.error("y"),
                          SetpointRejected("no"), ProtocolError("p"), DeviceUnavailable("u")])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.one_of(st.none(), ERRORS)), max_size=30))
def test_any_sequence_of_faults_raises_only_typed_errors_and_recovers(script):
    async def body():
        drv = Scripted()
        drv.backoff.min_s = drv.backoff.delay_s = 0.0
        await drv.connect()
        for at_open, error in script:
            if error is not None:
                (drv.open_errors if at_open else drv.read_errors).append(error)
                if at_open:
                    await drv._drop()
            try:
                await drv.read()
            except (DeviceUnavailable, ProtocolError, SetpointRejected):
                pass
        drv.open_errors.clear()
        drv.read_errors.clear()
        drv.backoff.retry_at = 0.0
        assert (await drv.read())["p_w"] == 1.0
        await drv.close()
    run(body())
