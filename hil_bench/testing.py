"""Helpers for bench tests, drills and benchmarks: pilot scenarios and stand-alone device processes.

``serve_fronius`` starts ``s4g device serve fronius`` as a separate process -- a device the bench did not start,
addressed by host:port like hardware -- and stops it (SIGTERM, then SIGKILL) when the block ends. With
``follow_clock=True`` the device keeps the bench's time instead of its own wall clock (``--clock-port``; give its
``clock_address`` to ``bench.device_clocks`` and use ``bench.clock: steps``).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
PILOT = REPO / "scenarios" / "fur_skive.yaml"


def pilot_data(*, start: str | None = None, duration: str = "30min", fronius_address: str = "sunspec+tcp://",
               libal_address: str | None = None, bench: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Fur/Skive pilot as a dict (paths made absolute), shortened, Fronius devices at ``fronius_address``
    (and the LiBal battery, if the pilot has one, at ``libal_address`` when given)."""
    data = yaml.safe_load(PILOT.read_text(encoding="utf-8"))
    data["grid"]["path"] = str((PILOT.parent / data["grid"]["path"]).resolve())
    data["duration"] = duration
    if start is not None:
        data["start"] = start
    for dev in data["devices"]:
        if dev["family"] == "fronius":
            dev["address"] = fronius_address
        elif dev["family"] == "libal" and libal_address is not None:
            dev["address"] = libal_address
    data = {k: v for k, v in data.items() if not k.startswith("x-")}
    if bench is not None:
        data["bench"] = bench
    return data


def write_scenario(data: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


class ServedDevice:
    """A running ``s4g device serve`` process and the driver address it printed."""

    def __init__(self, proc: subprocess.Popen, address: str, lines: list[str],
                 clock_address: str | None = None) -> None:
        self.proc = proc
        self.address = address
        self.lines = lines
        self.clock_address = clock_address  # tcp://HOST:PORT of its clock link, when it follows the bench's clock

    def kill(self) -> None:
        """Kill it hard (no clean shutdown), as a power cut or a crash would."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def serve_fronius(config: dict[str, Any], tmp: Path, *, device_id: str = "fronius", step: float = 1.0,
                  pv_w_per_kwp: float = 0.0, site_load_w: float = 0.0,
                  timeout_s: float = 60.0, follow_clock: bool = False) -> Iterator[ServedDevice]:
    """``s4g device serve fronius`` on free loopback ports, with the given FroniusConfig fields."""
    cfg = tmp / f"{device_id}.yaml"
    cfg.write_text(yaml.safe_dump(config), encoding="utf-8")
    cmd = [sys.executable, "-m", "s4g", "device", "serve", "fronius", "--port", "0", "--http-port", "0",
           "--config", str(cfg), "--step", repr(step), "--pv-w-per-kwp", repr(pv_w_per_kwp),
           "--site-load-w", repr(site_load_w), "--device-id", device_id]
    cmd += ["--clock-port", "0"] if follow_clock else []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    lines: list[str] = []
    found = threading.Event()
    address: list[str] = []
    clock: list[str] = []

    def _reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            c = re.search(r"Clock link:\s*(\S+)", line)
            if c:
                clock.append(c.group(1))
            m = re.search(r"SunSpec Modbus TCP:\s*(\S+)", line)
            if m and not address:
                address.append(m.group(1))
                found.set()
        found.set()

    threading.Thread(target=_reader, daemon=True).start()
    try:
        if not found.wait(timeout_s) or not address:
            raise RuntimeError("s4g device serve fronius did not start: " + " | ".join(lines[-10:]))
        if follow_clock and not clock:
            raise RuntimeError("s4g device serve fronius printed no clock link: " + " | ".join(lines[-10:]))
        yield ServedDevice(proc, address[0], lines, clock[0] if clock else None)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
