"""Setpoints from a device family's own command topics on its site's SMX broker (``Family.commands``).

The S4G ER connector took commands as SenML on ``.../EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f`` and the
like; the world subscribes to ``s4g/{site}/smx/{device}/cmd/#`` for each such device and this simulator turns
a value v on a command topic into the setpoint v / factor (the family's convention to ours), handed to the
device in the next step (a time-shifted connection, like any controller's setpoint). The device host checks it
against the device's limits: outside, it is refused, counted (``rejected``) and logged, never clipped. Only
control components may publish there (the world restricts those topics on the bus; on a secured broker the
PKI's ACL does the same). A command that is not one number is a dead letter of the bus (reason given), never
a setpoint; ``commands`` counts what was taken per device.
"""

from __future__ import annotations

import math
from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta

from . import topics
from .bus import MessageBus

MODEL = "NativeCommands"


def meta(setpoints: list[str]) -> Meta:
    return {"api_version": "3.0", "type": "time-based",
            "models": {MODEL: {"public": True, "params": ["site", "device", "commands"],
                               "attrs": sorted({*setpoints, "commands"})}}}


class NativeCommandSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(meta([]))  # type: ignore[no-untyped-call]  # mosaik_api_v3: Simulator.__init__ is unannotated
        self.bus: MessageBus | None = None
        self.step_size = 60
        self.devices: dict[str, dict[str, Any]] = {}  # eid -> site, device, commands, subscription, pending, count

    # mosaik passes a simulator's own parameters by keyword: narrower than the base's **sim_params
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             step_size: int = 60, bus: MessageBus | None = None, setpoints: list[str] | None = None) -> Meta:
        if bus is None:
            raise ValueError("NativeCommandSim needs the in-process MessageBus (init param 'bus')")
        self.sid, self.bus, self.step_size = sid, bus, int(step_size)
        self.meta = meta(list(setpoints or []))
        return self.meta

    # as init, for the model's parameters
    def create(self, num: int, model: str, site: str, device: str,  # type: ignore[override]
               commands: dict[str, Any]) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"{device}-commands"
            self.devices[eid] = {"site": site, "device": device, "pending": {}, "count": 0, "sub": None,
                                 "commands": {str(k): (str(n), float(f)) for k, (n, f) in commands.items()}}
            out.append({"eid": eid, "type": model})
        return out

    def setup_done(self) -> None:
        assert self.bus is not None
        self.bus.open()
        for dev in self.devices.values():
            cmd_filter = topics.smx_cmd_filter(dev["site"], dev["device"])
            dev["prefix"] = cmd_filter[:-1]
            dev["sub"] = self.bus.subscribe(f"smx:{dev['site']}", cmd_filter, subscriber=self.sid)

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        assert self.bus is not None
        for dev in self.devices.values():
            for message in dev["sub"].deliver(time):
                name = message.topic[len(dev["prefix"]):]
                command = dev["commands"].get(name)
                if command is None:
                    self.bus.reject(message, f"{dev['device']} has no command {name!r}", self.sid)
                    continue
                setpoint, factor = command
                values = [r.value for r in message.records]
                if len(values) != 1 or not isinstance(values[0], (int, float)) or isinstance(values[0], bool) \
                        or not math.isfinite(values[0]):
                    self.bus.reject(message, f"a command is one finite number, got {values!r}", self.sid)
                    continue
                dev["pending"][setpoint] = float(values[0]) / factor
                dev["count"] += 1
        return time + self.step_size

    def get_data(self, outputs: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            dev = self.devices[eid]
            pending, dev["pending"] = dev["pending"], {}
            data[eid] = {a: (dev["count"] if a == "commands" else pending.get(a)) for a in attrs}
        return data

    def finalize(self) -> None:
        pass  # the bus is the world's: it closes it
