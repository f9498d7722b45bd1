"""Serve one virtual charge point stand-alone against any CSMS, in wall-clock time.

``s4g device serve wallbox --csms ws://HOST:PORT/ --id CP_1 [--ocpp 1.6|2.0.1] [--ev k=v,...]
[--plug-at S] [--unplug-at S] [--daily HH:MM-HH:MM] [--commands] [--config FILE] [--step 1] [--duration S]``

The charge point connects to ``<csms>/<id>`` and reconnects with backoff. The EV is plugged in by a schedule
(``--plug-at`` / ``--unplug-at`` seconds after the start, or every day in a local-time window with
``--daily 18:45-07:20``), at the start when only ``--ev`` is given, or by commands on stdin
(``--commands``: ``plug [k=v,...]``, ``unplug``, ``fault``, ``clear``, ``status``, ``quit``). EV keys:
capacity_wh, p_max_w, phases, soc (arrival SoC 0..1), wanted_wh. Status changes are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING

from devices import registry
from devices.serving import (daily_window, duration_s, identity, load_config_file, non_negative, run_served, step_s,
                             websocket_url)
from devices.wallbox.model import EVSpec, WallboxConfig, status_name
from devices.wallbox.virtual import VirtualWallbox, VirtualWallbox16, VirtualWallbox201

if TYPE_CHECKING:
    from devices.wallbox.security import StationSecurity

EV_KEYS = {"capacity_wh": "capacity_wh", "p_max_w": "p_max_w", "phases": "phases", "soc": "soc_arrival",
           "wanted_wh": "energy_wanted_wh"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csms", required=True, type=websocket_url,
                        help="CSMS websocket URL, e.g. ws://127.0.0.1:9000/ocpp/")
    parser.add_argument("--id", default="CP_1", type=identity,
                        help="charge point identity (last path segment; default CP_1)")
    parser.add_argument("--ocpp", choices=["1.6", "2.0.1"], default="1.6", help="OCPP version (default 1.6)")
    parser.add_argument("--ev", help="EV: capacity_wh=60000,p_max_w=11000,phases=3,soc=0.3,wanted_wh=20000")
    parser.add_argument("--plug-at", type=non_negative, help="plug the EV in this many seconds after the start")
    parser.add_argument("--unplug-at", type=non_negative, help="unplug it this many seconds after the start")
    parser.add_argument("--daily", type=daily_window,
                        help="plug in every day in this local-time window, e.g. 18:45-07:20")
    parser.add_argument("--commands", action="store_true", help="read plug/unplug/fault/clear/status/quit on stdin")
    parser.add_argument("--config", help="YAML or JSON file with WallboxConfig fields")
    parser.add_argument("--step", type=step_s, default=1.0, help="model step in seconds (default 1)")
    parser.add_argument("--duration", type=duration_s, help="stop after this many seconds (default: run until Ctrl-C)")
    parser.add_argument("--security-profile", type=int, choices=(0, 1, 2, 3), default=0,
                        help="OCPP security profile (1 basic auth, 2 TLS + basic auth, 3 TLS + client certificate)")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the basic-auth "
                                                                "password (profiles 1 and 2)")
    parser.add_argument("--tls-pki", metavar="DIR", help="PKI directory: the CSMS's CA, and for profile 3 the "
                                                          "certificate named --id")


def station_security(args: argparse.Namespace) -> StationSecurity:
    import os

    from devices.wallbox.security import StationSecurity

    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and password is None:
        raise ValueError(f"--password-env {args.password_env}: the environment variable is not set")
    return StationSecurity.from_pki(args.security_profile, args.tls_pki, args.id, password)


#: what each EV key must be (the same bounds as WallboxConfig's EV defaults)
EV_RANGES = {"capacity_wh": (0.0, False, "> 0"), "p_max_w": (0.0, False, "> 0"), "soc": (0.0, True, "0..1"),
             "wanted_wh": (0.0, True, ">= 0"), "phases": (1.0, True, "1, 2 or 3")}


def parse_ev(text: str | None, ev_id: float = 1.0) -> EVSpec:
    values: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, _, value = part.partition("=")
        key = key.strip()
        if key not in EV_KEYS:
            raise ValueError(f"unknown EV key {key!r}; known: {', '.join(EV_KEYS)}")
        try:
            x = float(value)
        except ValueError:
            x = math.nan
        low, closed, expected = EV_RANGES[key]
        ok = math.isfinite(x) and (x >= low if closed else x > low)
        if key == "soc":
            ok = ok and x <= 1
        elif key == "phases":
            ok = ok and x in (1.0, 2.0, 3.0)
        if not ok:
            raise ValueError(f"EV key {key} must be {expected} (found {value.strip()!r})")
        values[EV_KEYS[key]] = x
    if "phases" in values:
        values["phases"] = int(values["phases"])
    return EVSpec(ev_id=ev_id, **values)  # type: ignore[arg-type]


def load_config(path: str | None) -> WallboxConfig:
    return load_config_file(path, WallboxConfig)


def _in_window(window: tuple[tuple[int, int], tuple[int, int]], now: datetime) -> bool:
    start, end = window
    hm = (now.hour, now.minute)
    return start <= hm < end if start <= end else (hm >= start or hm < end)


class Plugging:
    """Decides whether the EV is plugged in, from the schedule and the commands."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.ev = parse_ev(args.ev)
        self.manual: bool | None = None
        self.sessions = 1
        self._was = False

    def plugged(self, t_s: float) -> bool:
        a = self.args
        if self.manual is not None:
            return self.manual
        if a.daily:
            return _in_window(a.daily, datetime.now().astimezone())
        if a.plug_at is not None or a.unplug_at is not None:
            after = a.plug_at is None or t_s >= a.plug_at
            before = a.unplug_at is None or t_s < a.unplug_at
            return after and before
        return a.ev is not None

    def env(self, t_s: float) -> dict[str, float]:
        now = self.plugged(t_s)
        if now and not self._was:
            self.sessions += 1
        self._was = now
        ev = EVSpec(**{**self.ev.__dict__, "ev_id": float(self.sessions)})
        return ev.env(plugged=now)


async def _commands(dev: VirtualWallbox, plugging: Plugging, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        cmd, _, rest = line.strip().partition(" ")
        if cmd == "plug":
            if rest:
                try:
                    plugging.ev = parse_ev(rest)
                except ValueError as exc:  # a typo on stdin is reported; the commands keep being read
                    print(f"plug: {exc}", flush=True)
                    continue
            plugging.manual = True
        elif cmd == "unplug":
            plugging.manual = False
        elif cmd in ("fault", "clear"):
            dev.bank.set_fault(0, cmd == "fault")
        elif cmd == "status":
            _print_status(dev)
        elif cmd == "quit":
            stop.set()
        elif cmd:
            print(f"unknown command {cmd!r}: plug [k=v,...] | unplug | fault | clear | status | quit", flush=True)


def _print_status(dev: VirtualWallbox) -> None:
    m = {k: float(v[0]) for k, v in dev.bank.measure().items()}
    conn = "connected" if dev.cp is not None and dev.cp.connected else "offline"
    print(f"{dev.device_id} [{conn}] {status_name(m['status'])}: {m['p_w']:.0f} W, limit {m['p_max_w']:.0f} W, "
          f"session {m['e_session_wh']:.1f} Wh, register {m['e_wh']:.1f} Wh", flush=True)


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    family = registry.family("wallbox")
    cls = VirtualWallbox16 if args.ocpp == "1.6" else VirtualWallbox201
    dev = cls(family, load_config(args.config), device_id=args.id, wall_clock=True)
    plugging = Plugging(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    tasks: list[asyncio.Task[None]] = []
    try:
        await dev.start_client(args.csms, security=station_security(args))
        print(f"charge point {args.id} (OCPP {args.ocpp}) -> {args.csms.rstrip('/')}/{args.id}", flush=True)
        if args.commands:
            tasks.append(asyncio.create_task(_commands(dev, plugging, stop)))
        if ready is not None:
            ready.set()
        t0 = time.monotonic()
        k, last = 0, None
        while not stop.is_set():
            t = k * args.step
            if args.duration is not None and t >= args.duration:
                break
            await dev.advance(t, args.step, plugging.env(t))  # sub-second steps are fine
            code = int(dev.bank.status[0])
            if code != last:
                _print_status(dev)
                last = code
            k += 1
            try:
                await asyncio.wait_for(stop.wait(), max(t0 + k * args.step - time.monotonic(), 0.0))
            except TimeoutError:
                pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        for task in tasks:
            task.cancel()
        await dev.stop()
        print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        parse_ev(args.ev)
    except (TypeError, ValueError) as exc:
        print(f"--ev: {exc}", file=sys.stderr)
        return 2
    try:
        station_security(args)  # a bad security setting is a message, not a traceback
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_served(serve, args)
