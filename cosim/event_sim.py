"""The mosaik side of a scenario's events (cosim/events.py): their schedule as outputs, and device trips.

One class, started twice by the world (mosaik finds cycles per simulator, and a trip gate sits between the
device host and the grid while grid presence flows into the device host):

- "Events": ``Point`` entities output ``grid_present`` (1/0) for a site's PCC (to the grid's Load entity and the
  recorder) or for one device (its point's presence and not its own trip: the ``point.grid_present`` source);
  ``Source`` outputs the feeder's ``v_source_pu`` (to the Grid entity). It writes every event's start and end to
  ``events.jsonl`` in the step it happens.
- "EventGates": a ``Gate`` passes a device's ``p_w`` / ``q_var`` to its connection point, 0 while it is tripped
  (the device's AC connection is open); ``tripped`` says so (recorded).

Outputs at step ``t`` describe ``[t, t + step)``: an event active then is in force for the whole step.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TextIO

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta

from cosim.events import Schedule

log = logging.getLogger(__name__)

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Point": {"public": True, "params": ["site", "device"], "attrs": ["grid_present"]},
        "Source": {"public": True, "params": [], "attrs": ["v_source_pu"]},
        "Gate": {"public": True, "params": ["device"], "attrs": ["p_w", "q_var", "tripped"]},
    },
}


class EventSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)  # type: ignore[no-untyped-call]  # mosaik_api_v3: Simulator.__init__ is unannotated
        self.schedule = Schedule([], start=None)  # type: ignore[arg-type]
        self.step_size = 60
        self.entities: dict[str, tuple[str, dict[str, Any]]] = {}
        self.values: dict[str, dict[str, float]] = {}
        self._log: TextIO | None = None

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, schedule: Schedule | None = None,
             events_path: str | None = None, **_: Any) -> Meta:
        if schedule is None:
            raise ValueError("EventSim needs the scenario's event schedule (init param 'schedule')")
        self.schedule, self.step_size = schedule, int(step_size)
        if events_path:
            Path(events_path).parent.mkdir(parents=True, exist_ok=True)
            self._log = open(events_path, "a", encoding="utf-8")  # noqa: SIM115 - held until finalize()
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            label = params.get("device") or params.get("site") or model.lower()
            eid = f"{model.lower()}:{label}"
            if eid in self.entities:
                raise ValueError(f"{eid!r} created twice")
            self.entities[eid] = (model, params)
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict[str, Any], max_advance: int) -> int:
        sch = self.schedule
        if self._log is not None:
            for edge, w in sch.transitions(time):
                self._write(time, edge, w)
        for eid, (model, params) in self.entities.items():
            if model == "Source":
                self.values[eid] = {"v_source_pu": sch.source_v_pu(time)}
            elif model == "Point":
                present = sch.grid_present(params.get("site"), time)
                device = params.get("device")
                if device is not None and sch.tripped(device, time):
                    present = 0.0
                self.values[eid] = {"grid_present": present}
            else:  # Gate
                tripped = sch.tripped(params["device"], time)
                got = inputs.get(eid, {})
                self.values[eid] = {"tripped": float(tripped),
                                    **{a: 0.0 if tripped else _one(got.get(a)) for a in ("p_w", "q_var")}}
        return time + self.step_size

    def get_data(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return {eid: {a: self.values[eid][a] for a in attrs} for eid, attrs in outputs.items()}

    def finalize(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _write(self, time: int, edge: str, w: Any) -> None:
        spec = w.spec
        detail = f" to {spec.v_pu:g} pu" if spec.v_pu is not None else ""
        verb = "starts" if edge == "start" else "ends"
        event = {"t_s": time, "kind": spec.kind, "edge": edge, "event": w.index, "from_s": w.t0, "until_s": w.t1,
                 **{k: getattr(spec, k) for k in ("site", "device", "role", "v_pu") if getattr(spec, k) is not None},
                 "message": f"{spec.kind} ({spec.target}{detail}) {verb}"}
        log.info("t=%ss %s", time, event["message"])
        self._log.write(json.dumps(event) + "\n")  # type: ignore[union-attr]
        self._log.flush()  # type: ignore[union-attr]


def _one(sources: dict[str, Any] | None) -> float:
    """The single value of a gate input (0 before the device's first output)."""
    if not sources:
        return 0.0
    value = next(iter(sources.values()))
    return 0.0 if value is None else float(value)


def read_events(run_dir: str | Path) -> list[dict[str, Any]]:
    """The scheduled events' starts and ends a run recorded (events.jsonl; device-host events are skipped)."""
    path = Path(run_dir) / "events.jsonl"
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut by a crash
        if isinstance(event, dict) and "edge" in event:
            out.append(event)
    return out
