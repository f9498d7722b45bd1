"""Serve one virtual meter: DLMS/COSEM on the TCP wrapper and HDLC (TCP or a serial line), in wall-clock time.

``s4g device serve meter [--port 4059] [--hdlc-port 4060] [--serial /dev/ttyX --baud 9600] [--host 127.0.0.1]
[--config FILE] [--step 1] [--p-w W] [--q-var VAR] [--v-pu PU]``. The connection point the meter reads is
constant from the command line (the bench feeds it; a co-simulation feeds it from the power flow). The meter's
clock starts at the current wall time (a stand-alone build context) unless the config file sets ``clock_start``.
Ctrl-C or SIGTERM stops it cleanly. Port 0 picks a free port; the addresses are printed once every listener is up.
"""

from __future__ import annotations

import argparse
import asyncio

from devices import registry
from devices.meter.model import MeterConfig
from devices.meter.server import serve_serial
from devices.meter.virtual import VirtualMeter
from devices.meter.wrapper import DEFAULT_PORT
from devices.serving import load_config_file, run_served, stop_on_signals
from devices.virtual import run_wall_clock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"DLMS/COSEM TCP wrapper port (default {DEFAULT_PORT}; 0 = any)")
    parser.add_argument("--hdlc-port", type=int, default=None, help="also serve HDLC on this TCP port (0 = any)")
    parser.add_argument("--serial", help="also serve HDLC on this serial port (e.g. /dev/ttyUSB0)")
    parser.add_argument("--baud", type=int, default=9600, help="serial line speed (default 9600, 8N1)")
    parser.add_argument("--config", help="YAML or JSON file with the meter configuration (MeterConfig fields)")
    parser.add_argument("--step", type=float, default=1.0, help="model step in wall-clock seconds (default 1)")
    parser.add_argument("--p-w", type=float, default=1500.0, help="active power at the point, W (+ = import)")
    parser.add_argument("--q-var", type=float, default=200.0, help="reactive power at the point, var")
    parser.add_argument("--v-pu", type=float, default=1.0, help="voltage at the point, pu")
    parser.add_argument("--device-id", default="meter", help="device id (the default serial derives from it)")


def load_config(path: str | None) -> MeterConfig:
    config = load_config_file(path, MeterConfig)
    assert isinstance(config, MeterConfig)
    return config


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    family = registry.family("meter")
    config = load_config(args.config)
    device = VirtualMeter(family, config, device_id=args.device_id)
    with stop_on_signals(asyncio.get_running_loop()) as stop:
        serial_task = None
        try:
            address = await device.start(args.host, args.port)
            print(f"meter {config.manufacturer} {config.model_name} (serial {device.serial}), "
                  f"{config.phases}-phase, step {args.step:g} s", flush=True)
            print(f"DLMS/COSEM TCP wrapper: {address}", flush=True)
            if args.hdlc_port is not None:
                print(f"DLMS/COSEM HDLC (TCP):  {await device.start_hdlc(args.host, args.hdlc_port)}", flush=True)
            if args.serial:
                serial_task = asyncio.create_task(serve_serial(device.server, args.serial, args.baud, stop))
                print(f"DLMS/COSEM HDLC serial: dlms+hdlc://{args.serial}?physical="
                      f"{config.hdlc_physical_address}&baud={args.baud}", flush=True)
            if ready is not None:
                ready.set()
            env = {"point_p_w": args.p_w, "point_q_var": args.q_var, "point_v_pu": args.v_pu}
            clock = asyncio.create_task(run_wall_clock(device, args.step, env, stop))
            waiting = [clock] + ([serial_task] if serial_task else [])
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            stop.set()
            await asyncio.gather(*waiting, return_exceptions=True)
            for task in done:
                exc = task.exception()
                if exc is not None:
                    raise exc  # a serial port that cannot be opened: the message, exit code 2
        finally:
            await device.stop()
            print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    return run_served(serve, args)
