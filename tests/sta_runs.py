"""A short pilot run with telemetry on the Data Broker, shared by the SensorThings, warehouse and GUI tests."""

from __future__ import annotations

import contextlib
import getpass
import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cosim.run import run
from cosim.scenario import load
from hil_bench.testing import pilot_data, write_scenario

HOUSES = ["fronius_4006773", "fronius_4018215"]
_RUNS: dict[str, Path] = {}


def pilot_run(tmp_root: Path, duration: str = "3h") -> Path:
    """The Fur/Skive pilot, two PV+battery houses and one PV roof, telemetry every 15 min; cached per session."""
    if duration in _RUNS:
        return _RUNS[duration]
    data = pilot_data(start="2019-06-15T10:00:00+02:00", duration=duration, fronius_address="sim://")
    data["devices"] = [d for d in data["devices"] if d["id"] in HOUSES or d["id"] == "pv_4005492"]
    data["controllers"] = [{"id": "sc", "kind": "self_consumption", "devices": HOUSES}]
    data["telemetry"] = {"period": "15min"}
    data.pop("variants", None)
    run_dir = tmp_root / f"pilot-{duration}"
    result = run(load(write_scenario(data, tmp_root / f"pilot-{duration}.yaml")), run_dir, progress=False,
                 kpis=True, report=False)
    assert result.status == "complete", result.error
    _RUNS[duration] = run_dir
    return run_dir


# ------------------------------------------------------------------------------------------ PostgreSQL, Mosquitto
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextlib.contextmanager
def pg_database(prefix: str = "s4g_test") -> Iterator[str]:
    """A fresh database on the local PostgreSQL (trust auth), dropped afterwards; skips when no server answers."""
    import pytest

    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    from cosim.dwh.postgres import server_answers

    admin_url = os.environ.get("S4G_DWH_ADMIN_URL", PG_URL)
    why = server_answers(admin_url)
    if why is not None:
        pytest.skip(f"no PostgreSQL server answers at {admin_url}: {why}")
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """A mosquitto of the test's own on a free port, with persistence (sessions and queued messages survive a
    stop/start on the same port)."""

    def __init__(self, d: Path, port: int | None = None) -> None:
        if shutil.which("mosquitto") is None:
            import pytest

            pytest.skip("mosquitto is not installed (apt-get install -y mosquitto)")
        self.dir = d
        d.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        conf = ["allow_anonymous true", "persistence true", f"persistence_location {d}/", "max_queued_messages 0",
                "log_dest stderr", "log_type error", "log_type warning", "log_type notice", "log_type information",
                f"listener {self.port} 127.0.0.1"]
        if os.geteuid() == 0:
            conf.insert(0, f"user {getpass.getuser()}")
        (d / "mosquitto.conf").write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.dir / "mosquitto.conf")], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL)
        wait_for_line(self.proc.stderr, " running", 15, what="mosquitto")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its sessions and queued messages, then exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def wait_for_line(stream: Any, marker: str, timeout: float, what: str = "process") -> str:
    """Read a pipe until a line holding ``marker`` arrives (select on the raw fd: an event, not a sleep); the rest
    of the pipe is drained on a thread so the process never blocks on a full pipe."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout
    text = ""
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            text += chunk.decode(errors="replace")
            if marker in text:
                threading.Thread(target=_drain, args=(fd,), daemon=True).start()
                return text
    raise RuntimeError(f"{what} did not say {marker!r}:\n{text}")


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 65536):
            pass
    except OSError:
        pass
