"""Serve one virtual Fronius hybrid: SunSpec Modbus TCP and the Solar API on one model, in wall-clock time.

``s4g device serve fronius [--port 1502] [--host 127.0.0.1] [--http-port 8080] [--config FILE] [--pv-kwp KWP]
[--step 1] [--pv-w-per-kwp W] [--site-load-w W] [--clock-port PORT]``. The PV irradiance and the site's load are
constants from the command line (the bench feeds them; a co-simulation feeds them through the scenario). Ctrl-C
or SIGTERM stops it cleanly. ``--clock-port`` makes the model follow a clock (and inputs) the bench drives
(devices/clock_link.py) instead of the wall clock: for tests of the bench, whose results must not depend on how
two processes are scheduled. Port 0 picks a free port; the addresses are printed once the servers listen.
``--tls-pki DIR`` serves SunSpec as Modbus/TCP Security (TLS with client certificates; use ``--port 802``); the
Solar API has no TLS here and stays on 127.0.0.1 then (``--insecure`` exposes it on ``--host`` too).
"""

from __future__ import annotations

import argparse
import asyncio

from devices import registry
from devices.fronius.model import FroniusConfig
from devices.fronius.solar_api import SolarApiServer
from devices.fronius.virtual import FroniusSunSpecDevice
from devices import serve_security
from devices.clock_link import ClockServer
from devices.serving import finite, load_config_file, non_negative, number, port, run_served, step_s, stop_on_signals
from devices.virtual import run_wall_clock


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=1502, help="SunSpec Modbus TCP port (default 1502; 0 = any)")
    parser.add_argument("--http-port", type=port, default=8080, help="Solar API HTTP port (default 8080; 0 = any)")
    parser.add_argument("--config", help="YAML or JSON file with the device configuration (FroniusConfig fields)")
    parser.add_argument("--pv-kwp", type=non_negative, help="installed PV power, overrides the config file")
    parser.add_argument("--step", type=step_s, default=1.0, help="model step in wall-clock seconds (default 1)")
    # 1000 W/m² at STC gives 1000 W per kWp; cold, clear edge-of-cloud sun reaches about 1.4x that
    parser.add_argument("--pv-w-per-kwp", type=number(0, 2000), default=500.0,
                        help="PV yield per kWp, W (default 500)")
    parser.add_argument("--site-load-w", type=finite, default=800.0, help="site load without the inverter, W")
    parser.add_argument("--clock-port", type=port, default=None,
                        help="follow the bench's simulated clock (and inputs) on this loopback port instead of the "
                             "wall clock (0 = any; see devices/clock_link.py); --step is then unused")
    parser.add_argument("--device-id", default="fronius", help="device id (the default serial derives from it)")
    serve_security.add_arguments(parser, identity="device", tls_help="(Modbus/TCP Security, port 802)")


def load_config(path: str | None, pv_kwp: float | None) -> FroniusConfig:
    return load_config_file(path, FroniusConfig, {"pv_kwp": pv_kwp} if pv_kwp is not None else None)


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    family = registry.family("fronius")
    config = load_config(args.config, args.pv_kwp)
    device = FroniusSunSpecDevice(family, config, device_id=args.device_id)
    solar_api = SolarApiServer(device.fbank, config, args.device_id)
    with stop_on_signals(asyncio.get_running_loop()) as stop:
        await _serve_until(stop, args, config, device, solar_api, ready)


async def _serve_until(stop: asyncio.Event, args: argparse.Namespace, config: FroniusConfig,
                       device: FroniusSunSpecDevice, solar_api: SolarApiServer, ready: asyncio.Event | None) -> None:
    clock: ClockServer | None = None
    try:
        context = serve_security.server_ssl(args)
        serve_security.check_bind(args.host, encrypted=context is not None, insecure=args.insecure,
                                  what="SunSpec Modbus TCP")
        # the Solar API has no TLS: with TLS for SunSpec it stays on loopback unless --insecure
        http_host = args.host if context is None or args.insecure else "127.0.0.1"
        serve_security.check_bind(http_host, encrypted=False, insecure=args.insecure, what="the Solar API (HTTP)")
        address = await device.start(args.host, args.port, ssl=context)
        http_port = await solar_api.start(http_host, args.http_port)
        env = {"pv_w_per_kwp": args.pv_w_per_kwp, "site_load_w": args.site_load_w}
        if getattr(args, "clock_port", None) is not None:
            clock = ClockServer(device, env)
            print(f"Clock link:         {await clock.start('127.0.0.1', args.clock_port)}", flush=True)
        print(f"Fronius {config.model_name} (serial {device.map.serial}), step {args.step:g} s", flush=True)
        print(f"SunSpec Modbus TCP: {address}{' (TLS, client certificates)' if context else ''}", flush=True)
        print(f"Solar API:          fronius+http://{http_host}:{http_port}", flush=True)
        if ready is not None:
            ready.set()
        if clock is None:
            await run_wall_clock(device, args.step, env, stop)
        else:
            await stop.wait()
    finally:
        if clock is not None:
            await clock.stop()
        await solar_api.stop()
        await device.stop()
        print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    return run_served(serve, args)
