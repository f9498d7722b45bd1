"""``replay://RUN_DIR/device``: a device played back from the I/O log of an earlier bench run.

The hybrid boundary in the other direction: what a real device did on the bench becomes a device of an offline
run (or of another bench run). Address forms::

    replay://runs/fur_skive-bench/fronius_4006773            RUN_DIR relative to the working directory
    replay://localhost/abs/path/to/run/fronius_4006773       an absolute RUN_DIR (as in file://localhost/...)

Query options: ``log=PATH`` appends the write comparison as JSON lines; ``tol=X`` is the absolute tolerance of
that comparison (default 1e-6).

* ``read`` returns, for the k-th step of the replaying run, the measurement read at ``t = k * step_s`` of the
  recording (``step_s`` from the recording's meta.json, so the replaying scenario must use the same start and
  step); a step where the recorded device did not answer raises DeviceUnavailable again, as does a read past
  the end of the recording.
* ``write`` accepts every setpoint (after the usual capability check), logs it and compares it with what the
  controller sent the recorded device at the same step: ``comparison`` lists every difference, ``matched`` /
  ``differed`` / ``unrecorded`` count them (a summary is logged at close).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any
from collections.abc import Mapping
from urllib.parse import parse_qs

from devices.base import Address, Capabilities, DeviceUnavailable, Driver, Measurement, ProtocolError, Setpoint
from hil_bench.records import read_io

log = logging.getLogger(__name__)

READ_STATUSES = ("ok", "held")


def parse_replay(address: Address) -> tuple[Path, str]:
    """(RUN_DIR, device) of a replay address (the host is the first path segment, case kept)."""
    rest = address.raw.split("://", 1)[1].split("?", 1)[0].rstrip("/")
    if rest.startswith("localhost/"):
        rest = "/" + rest[len("localhost/"):]
    run_dir, _, device = rest.rpartition("/")
    if not run_dir or not device:
        raise ValueError(f"{address.raw!r}: expected replay://RUN_DIR/DEVICE "
                         "(or replay://localhost/ABS/RUN_DIR/DEVICE)")
    return Path(run_dir), device


class ReplayDriver(Driver):
    schemes = ("replay",)
    query_keys = ("log", "tol")

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self.run_dir, self.device = parse_replay(address)
        query = {k: v[-1] for k, v in parse_qs(address.query).items()}
        self.log_path = Path(query["log"]) if "log" in query else None
        self.tolerance = float(query.get("tol", 1e-6))
        self.step_s = 0
        self.reads: dict[int, dict[str, float]] = {}
        self.writes: dict[int, dict[str, float]] = {}
        self.end_t = -1
        self.k = 0  # steps read so far
        self.recorded_identity: Mapping[str, Any] = {}
        self.comparison: list[dict[str, Any]] = []
        self.matched = self.differed = self.unrecorded = 0
        self._open = False

    async def connect(self) -> None:
        if self._open:
            return
        try:
            meta = json.loads((self.run_dir / "meta.json").read_text(encoding="utf-8"))
            table = read_io(self.run_dir, self.device).to_pydict()
        except (OSError, ValueError) as exc:
            raise DeviceUnavailable(f"{self.address.raw}: cannot open the recording: {exc}") from exc
        self.step_s = int(meta["step_s"])
        for t, op, status, source, name, value in zip(table["t_s"], table["op"], table["status"], table["source"],
                                                      table["name"], table["value"]):
            if op == "read" and status in READ_STATUSES and name:
                self.reads.setdefault(int(t), {})[name] = float(value)
            elif op == "write" and source == "controller" and name:
                self.writes.setdefault(int(t), {})[name] = float(value)
            self.end_t = max(self.end_t, int(t))
        bench = self.run_dir / "bench.json"
        if bench.is_file():
            info = json.loads(bench.read_text(encoding="utf-8")).get("devices", {}).get(self.device, {})
            self.recorded_identity = info.get("identity") or {}
        self._open = True

    def _require_open(self) -> None:
        if not self._open:
            raise DeviceUnavailable(f"{self.address.raw}: not connected")

    async def read(self) -> Measurement:
        self._require_open()
        t = self.k * self.step_s
        self.k += 1
        values = self.reads.get(t)
        if values is None:
            why = "past the end of the recording" if t > self.end_t else "the recorded device did not answer"
            raise DeviceUnavailable(f"{self.address.raw}: no recorded measurement at t={t} s ({why})")
        missing = [m for m in self.capabilities.measurements if m not in values]
        if len(missing) == len(self.capabilities.measurements):
            raise ProtocolError(f"{self.address.raw}: the recording has none of {missing[:3]}...: another family?")
        return Measurement(float(t), values)

    async def _write(self, setpoint: Setpoint) -> None:
        self._require_open()
        t = self.k * self.step_s
        recorded = self.writes.get(t)
        for name, value in setpoint.values.items():
            was = None if recorded is None else recorded.get(name)
            if was is None:
                self.unrecorded += 1
                entry = {"t_s": t, "name": name, "recorded": None, "replayed": float(value), "match": False}
            else:
                ok = math.isclose(float(value), was, abs_tol=self.tolerance, rel_tol=0.0)
                self.matched += ok
                self.differed += not ok
                entry = {"t_s": t, "name": name, "recorded": was, "replayed": float(value), "match": ok}
            if not entry["match"]:
                self.comparison.append(entry)
                log.warning("%s t=%s s: %s=%g written, %s recorded", self.address.raw, t, name, value,
                            "nothing" if was is None else f"{was:g}")
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")

    async def close(self) -> None:
        if self._open:
            log.info("%s: %d writes matched the recording, %d differed, %d not recorded", self.address.raw,
                     self.matched, self.differed, self.unrecorded)
        self._open = False

    async def identity(self) -> Mapping[str, Any]:
        return {"address": self.address.raw, "protocol": "replay", "run_dir": str(self.run_dir),
                "device": self.device, "recorded": dict(self.recorded_identity)}
