"""LiBal rig protocol costs on loopback: driver read/write latency, our RTU client against pymodbus's, the CAN
codec, and what a libal:// device costs per DeviceSim step next to sim://.

Run: python -m benchmarks.libal_protocol [--quick]
"""

from __future__ import annotations

import asyncio
import sys
import time

from benchmarks.common import Stat, median_spread, print_rows, row
from devices import registry
from devices.base import Address, Setpoint
from devices.libal import can_codec, rtu
from devices.libal.driver import LibalDriver
from devices.libal.rtu_io import RtuClient, TcpRtuTransport
from devices.libal.virtual import LibalVirtualDevice
from devices.simulator import DeviceSim

CONFIG = {
    "battery": {"capacity_wh": 100_000, "p_charge_max_w": 50_000, "p_discharge_max_w": 50_000,
                "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95, "soc_init": 0.5},
    "s_max_va": 60_000, "i_charge_max_a": 100, "i_discharge_max_a": 120,
}


async def _time_async(fn, n: int, warmup: int = 5) -> Stat:
    for _ in range(warmup):
        await fn()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return median_spread(samples)


async def _driver_figures(n: int) -> dict[str, Stat]:
    from pymodbus import FramerType
    from pymodbus.client import AsyncModbusTcpClient

    family = registry.family("libal")
    cfg = family.parse_config(CONFIG)
    device = LibalVirtualDevice(family, cfg)
    address = await device.start()
    driver = LibalDriver(Address.parse(address), family.capabilities(cfg))
    await driver.connect()
    out: dict[str, Stat] = {}
    try:
        out["read"] = await _time_async(driver.read, n)
        flip = [20_000.0]

        async def write_switching():  # every write reverses the direction: CAN handshake + RTU write
            flip[0] = -flip[0]
            await driver.write(Setpoint({"p_w": flip[0]}))
        out["write_switch"] = await _time_async(write_switching, n)

        async def write_same():
            await driver.write(Setpoint({"p_w": 15_000.0}))
        out["write"] = await _time_async(write_same, n)

        transport = TcpRtuTransport("127.0.0.1", device.rtu_server.port or 0)
        await transport.open(2.0)
        ours = RtuClient(transport, 1, 2.0)
        out["rtu_ours"] = await _time_async(lambda: ours.read_holding(0, rtu.REGISTER_COUNT), n)
        await transport.close()
        client = AsyncModbusTcpClient("127.0.0.1", port=device.rtu_server.port or 0, framer=FramerType.RTU,
                                      timeout=2, retries=0)
        await client.connect()
        out["rtu_pymodbus"] = await _time_async(
            lambda: client.read_holding_registers(0, count=rtu.REGISTER_COUNT, device_id=1), n)
        client.close()
    finally:
        await driver.close()
        await device.stop()
    return out


def _codec(n: int) -> Stat:
    state = can_codec.BmsState(568.0, 100.0, 120.0, 464.0, 0.5, 1.0, 527.2, -35.8, 21.5, 0, True, True, 5e4, 1, 1, 10)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        view = can_codec.BmsView()
        for fid, data in can_codec.encode_bms_state(state):
            view.update(fid, data, 0.0)
        view.snapshot(0.0, 3.0)
        samples.append((time.perf_counter() - t0) * 1e6)
    return median_spread(samples)


def _devicesim(address: str, steps: int) -> Stat:
    sim = DeviceSim()
    sim.init("Devices", time_resolution=1.0, step_size=60)
    sim.create(1, "libal", address=address, config=CONFIG, device_id="d")
    sim.setup_done()
    attrs = list(registry.family("libal").measurements)
    samples = []
    try:
        for k in range(steps):
            p = 20_000.0 if (k // 5) % 2 else -20_000.0  # a direction change every 5 steps
            t0 = time.perf_counter()
            sim.step(k * 60, {"d": {"p_w": {"ctl": p}}}, 10**9)
            sim.get_data({"d": attrs})
            samples.append((time.perf_counter() - t0) * 1e3)
    finally:
        sim.finalize()
    return median_spread(samples[3:])


def run(quick: bool = False) -> list[dict]:
    n = 50 if quick else 300
    figs = asyncio.run(_driver_figures(n))
    codec = _codec(200 if quick else 2000)
    steps = 40 if quick else 300
    sim_step, wire_step = _devicesim("sim://", steps), _devicesim("libal://", steps)
    return [
        row("libal driver read (RTU 40 regs + CAN poll/echo)", figs["read"], None, "ms", goal_max=20.0),
        row("libal driver write, same direction (RTU)", figs["write"], None, "ms", goal_max=20.0),
        row("libal driver write, direction change (CAN mode switch + RTU)", figs["write_switch"], None, "ms",
            goal_max=20.0),
        row("RTU-over-TCP read of 40 regs: ours vs pymodbus client", figs["rtu_ours"], figs["rtu_pymodbus"], "ms",
            goal_ratio=1.0),
        row("BMS batch: cantools encode + decode of 8 frames", codec, None, "µs"),
        row("DeviceSim step per device: libal:// vs sim://", wire_step, sim_step, "ms", goal_max=50.0),
    ]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv), title="LiBal protocol")
