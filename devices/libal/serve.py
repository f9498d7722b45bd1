"""Serve one virtual LiBal rig: the BMS on a socketcand CAN bus and the PCS on Modbus RTU over TCP, in wall time.

``s4g device serve libal [--host 127.0.0.1] [--rtu-port 5020] [--can-port 29536] [--config FILE] [--unit 1]
[--channel can0] [--step 1] [--soc-init SOC]``. The model steps every ``--step`` wall-clock seconds and the BMS
broadcasts once per second; any socketcand client (python-can, Kayak, cansniffer over socketcand) can join the
bus. Port 0 picks a free port; the driver address is printed once both servers listen. Ctrl-C or SIGTERM stops
it cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from devices import registry, serve_security
from devices.libal.model import LibalConfig
from devices.libal.virtual import LibalVirtualDevice
from devices.serving import (fraction, modbus_unit, port, read_config_file, run_served, step_s, stop_on_signals,
                             validate_config)
from devices.virtual import run_wall_clock

#: a rack like the Skive pilot's scale when no --config is given: 100 kWh LFP, 50 kW PCS, 160s1p at 512 V
DEFAULT_CONFIG = {
    "battery": {"capacity_wh": 100_000, "p_charge_max_w": 50_000, "p_discharge_max_w": 50_000,
                "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95, "soc_init": 0.5},
    "s_max_va": 60_000,
    "i_charge_max_a": 100,
    "i_discharge_max_a": 120,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--rtu-port", type=port, default=5020, help="Modbus RTU-over-TCP port (default 5020; 0 = any)")
    parser.add_argument("--can-port", type=port, default=29536, help="socketcand port (default 29536; 0 = any)")
    parser.add_argument("--config", help="YAML or JSON file with the device configuration (LibalConfig fields)")
    parser.add_argument("--unit", type=modbus_unit, default=1, help="Modbus unit id of the PCS, 1..247 (default 1)")
    parser.add_argument("--channel", default="can0", help="CAN channel name clients open (default can0)")
    parser.add_argument("--step", type=step_s, default=1.0, help="model step in wall-clock seconds (default 1)")
    parser.add_argument("--soc-init", type=fraction, help="initial state of charge 0..1, overrides the config")
    parser.add_argument("--device-id", default="libal", help="device id used in log lines")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host: RTU over TCP and socketcand have no TLS (anyone on that "
                             "network can read and command the battery)")


def load_config(path: str | None, soc_init: float | None) -> LibalConfig:
    raw: dict[str, Any] = read_config_file(path, LibalConfig) if path else json.loads(json.dumps(DEFAULT_CONFIG))
    if soc_init is not None:
        raw = {**raw, "battery": {**raw.get("battery", {}), "soc_init": soc_init}}
    return validate_config(LibalConfig, raw, f"--config {path}" if path else "LibalConfig")


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    family = registry.family("libal")
    config = load_config(args.config, args.soc_init)
    device = LibalVirtualDevice(family, config, device_id=args.device_id, unit=args.unit, channel=args.channel)
    with stop_on_signals(asyncio.get_running_loop()) as stop:
        await _serve_until(stop, args, config, device, ready)


async def _serve_until(stop: asyncio.Event, args: argparse.Namespace, config: LibalConfig,
                       device: LibalVirtualDevice, ready: asyncio.Event | None) -> None:
    try:
        serve_security.check_bind(args.host, encrypted=False, insecure=args.insecure,
                                  what="Modbus RTU over TCP and socketcand (no TLS)")
        address = await device.start(args.host, args.rtu_port, can_port=args.can_port)
        b = config.battery
        print(f"LiBal rack {b.capacity_wh / 1000:g} kWh, "
              f"PCS {b.p_charge_max_w / 1000:g}/{b.p_discharge_max_w / 1000:g} kW, "
              f"{config.cells_series}s{config.strings_parallel}p, step {args.step:g} s", flush=True)
        print(f"PCS Modbus RTU over TCP: {args.host}:{device.rtu_server.port} unit {args.unit}", flush=True)
        print(f"BMS CAN (socketcand):    {args.host}:{device.can_server.port} channel {args.channel}", flush=True)
        print(f"driver address: {address}", flush=True)
        if ready is not None:
            ready.set()
        await run_wall_clock(device, args.step, {}, stop)
    finally:
        await device.stop()
        print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    return run_served(serve, args)
