"""Serve one virtual Energy Router over IEC 61850 MMS in wall-clock time.

``s4g device serve energy-router [--port 102] [--host 127.0.0.1] [--config FILE] [--step 1] [--pv-w-per-kwp W]
[--dc-load-w W] [--ac-load-w W] [--no-grid] [--device-id ID]``. The PV irradiance, the DC and critical AC loads
and grid presence are constants from the command line (a co-simulation feeds them through the scenario). Port
102 needs privileges on most systems: 0 picks a free port; the driver address is printed once the server
listens. Ctrl-C or SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio

from devices import registry
from devices.energy_router.model import EnergyRouterConfig
from devices.energy_router.virtual import VirtualEnergyRouter
from devices.serving import load_config_file, run_served, stop_on_signals
from devices.virtual import run_wall_clock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=102, help="MMS port (default 102, the IEC 61850 port; 0 = any)")
    parser.add_argument("--config", help="YAML or JSON file with the device configuration (EnergyRouterConfig fields)")
    parser.add_argument("--step", type=float, default=1.0, help="model step in wall-clock seconds (default 1)")
    parser.add_argument("--pv-w-per-kwp", type=float, default=500.0, help="PV yield per kWp, W (default 500)")
    parser.add_argument("--dc-load-w", type=float, default=100.0, help="DC loads on the bus, W (default 100)")
    parser.add_argument("--ac-load-w", type=float, default=200.0, help="critical AC loads, W (default 200)")
    parser.add_argument("--no-grid", action="store_true", help="start with the grid absent (the ER islands)")
    parser.add_argument("--device-id", default="energy-router", help="device id (the default serial derives from it)")


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    family = registry.family("energy_router")
    config = load_config_file(args.config, EnergyRouterConfig)
    assert isinstance(config, EnergyRouterConfig)
    device = VirtualEnergyRouter(family, config, device_id=args.device_id)
    with stop_on_signals(asyncio.get_running_loop()) as stop:
        try:
            address = await device.start(args.host, args.port)
            print(f"Energy Router {config.phases}-phase, serial {device.serial}, step {args.step:g} s", flush=True)
            print(f"IEC 61850 MMS: {address}", flush=True)
            if ready is not None:
                ready.set()
            env = {"pv_w_per_kwp": args.pv_w_per_kwp, "dc_load_w": args.dc_load_w, "ac_load_w": args.ac_load_w,
                   "grid_present": 0.0 if args.no_grid else 1.0}
            await run_wall_clock(device, args.step, env, stop)
        finally:
            await device.stop()
            print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    return run_served(serve, args)
