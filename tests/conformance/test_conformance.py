"""The suite every driver with a virtual device must pass (one parametrized run per harness)."""

from __future__ import annotations

import asyncio
import time

import pytest

from devices.base import DeviceUnavailable, Measurement, ProtocolError, SetpointRejected
from tests.conformance.conftest import HARNESSES


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


pytestmark = pytest.mark.skipif(not HARNESSES, reason="no device family has registered a harness yet")


async def _started(harness_cls):
    harness = harness_cls()
    await harness.start_device()
    return harness


def test_connect_read_and_close_releases_sockets(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            driver = h.make_driver()
            await driver.connect()
            await h.advance()
            m = await driver.read()
            assert isinstance(m, Measurement)
            for name in h.required_measurements:
                assert name in m.values, f"{name} missing from {sorted(m.values)}"
            assert h.open_connections() >= 1
            await driver.close()
            await driver.close()  # twice is harmless
            for _ in range(100):
                if h.open_connections() == 0:
                    break
                await asyncio.sleep(0.01)
            assert h.open_connections() == 0
        finally:
            await h.stop_device()
    run(body())


def test_write_within_limits_takes_effect(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver() as driver:
                if h.read_only:  # nothing is "within limits": refused, and the device keeps answering
                    with pytest.raises(SetpointRejected):
                        await driver.write(h.valid_setpoint)
                    await h.advance()
                    await driver.read()
                    return
                await driver.write(h.valid_setpoint)
                applied = await h.applied(driver)
                for name, value in h.valid_setpoint.values.items():
                    assert applied[name] == pytest.approx(value, rel=0.02, abs=20), (name, applied)
        finally:
            await h.stop_device()
    run(body())


def test_write_outside_limits_is_refused_before_the_wire_and_on_the_wire(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver() as driver:
                with pytest.raises(SetpointRejected):
                    await driver.write(h.invalid_setpoint)
                assert await h.raw_invalid_write() == h.expected_wire_error
                await h.advance()
                m = await driver.read()  # the device still answers and did not take the setpoint
                for name, value in h.invalid_setpoint.values.items():
                    if name in m.values:
                        assert m.values[name] != pytest.approx(value)
        finally:
            await h.stop_device()
    run(body())


def test_reconnects_after_the_device_restarts(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver(timeout_s=1.0) as driver:
                await h.advance()
                await driver.read()
                await h.stop_device()
                with pytest.raises(DeviceUnavailable):
                    await driver.read()
                await h.start_device()
                deadline = time.monotonic() + 15
                while True:  # the driver reconnects by itself, with backoff, on later calls
                    try:
                        await h.advance()
                        await driver.read()
                        break
                    except DeviceUnavailable:
                        assert time.monotonic() < deadline, "driver never reconnected"
                        await asyncio.sleep(0.2)
        finally:
            await h.stop_device()
    run(body())


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _timed_out(exc: BaseException) -> bool:
    words = ("timeout", "timed out", "within")
    return any(isinstance(e, TimeoutError) or any(w in f"{type(e).__name__} {e}".lower() for w in words)
               for e in _chain(exc))


def test_silent_device_gives_device_unavailable_within_the_timeout(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver(timeout_s=0.5) as driver:
                await h.advance()
                await driver.read()
                await h.set_silent(True)
                with pytest.raises(DeviceUnavailable) as info:
                    await driver.read()
                # the driver gave up because its timeout ran out (not because the peer went away); how long that
                # took is not asserted: wall-clock bounds flake on a busy machine
                assert _timed_out(info.value), _chain(info.value)
                await h.set_silent(False)
        finally:
            await h.stop_device()
    run(body())


def test_malformed_reply_gives_protocol_error(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver(timeout_s=1.0) as driver:
                await h.advance()
                await driver.read()
                await h.corrupt_next_reply()
                with pytest.raises((ProtocolError, DeviceUnavailable)) as info:
                    await driver.read()
                assert isinstance(info.value, ProtocolError), f"expected ProtocolError, got {info.value!r}"
        finally:
            await h.stop_device()
    run(body())


def test_two_concurrent_reads_are_safe(harness_cls):
    async def body():
        h = await _started(harness_cls)
        try:
            async with h.make_driver() as driver:
                await h.advance()
                a, b = await asyncio.gather(driver.read(), driver.read())
                assert dict(a.values).keys() == dict(b.values).keys()
                for name in h.required_measurements:
                    assert a.values[name] == pytest.approx(b.values[name])
        finally:
            await h.stop_device()
    run(body())
