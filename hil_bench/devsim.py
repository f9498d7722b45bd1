"""``BenchDeviceSim``: the device host of a bench run -- ``DeviceSim`` held to the wall clock.

The bench starts it in place of the offline ``DeviceSim`` (same models, attributes and wiring, so the world
builder is unchanged). Each step it: waits until the step is due (:class:`~hil_bench.realtime.Pacer`), applies
the late policy, feeds the simulated quantities (the env inputs: PV irradiance, site load, terminal voltage)
to the hosted virtual devices and publishes them as signals for the real ones, runs the device exchange (the
boundary drivers write at once and read at ``read_at`` of the cycle; in between, with ``clock: steps``, the
bench advances its virtual devices to the step's end), and publishes the measurements and the setpoints on the
SMX broker for the live monitor.

A device that does not answer has no measurement; offline that NaN would stop the power flow. On the bench its
``p_w`` and ``q_var`` enter the power flow as 0 W -- it is taken as being in its safe state, disconnected --
while ``available`` says it is not answering and its other measurements stay NaN.

Families that only observe (a meter) live in a second host stepped after the power flow ("DevicesAfterGrid",
``after_grid=True``), as offline. Both hosts put their devices behind the boundary and feed and publish them; the
step is paced once: the first host to step at a time begins it (waits for the wall clock), and the host stepped
last (the post-grid one when it holds devices) ends it (timing row, the monitor's step mark, observers).
"""

from __future__ import annotations

import math
from typing import Any

from mosaik_api_v3.types import Meta

from devices.simulator import DeviceSim


def _single(sources: dict[str, Any]) -> Any:
    return next(iter(sources.values())) if sources else None


class BenchDeviceSim(DeviceSim):
    # mosaik passes a simulator's own parameters by keyword: the bench's replace the wrapper DeviceSim takes
    def init(self, sid: str, time_resolution: float = 1.0,  # type: ignore[override]
             step_size: int = 60, events_path: str | None = None, bench: Any = None, after_grid: bool = False,
             **params: Any) -> Meta:
        if bench is None:
            raise ValueError("BenchDeviceSim is started by the bench (hil_bench.run), with bench=<BenchRuntime>")
        self.bench = bench
        self.after_grid = after_grid
        if after_grid:
            bench.observer_sim = self
        else:
            bench.device_sim = self
        return super().init(sid, time_resolution=time_resolution, step_size=step_size, events_path=events_path,
                            driver_wrapper=bench.boundary.wrap, **params)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        rt = self.bench
        row = rt.pacer.current
        if row is None or row.t_s != time:  # the first host of this step paces it
            row = rt.pacer.begin(time)
            rt.on_step_start(row)
            rt.boundary.begin_step(row)
        observers = rt.observer_sim
        ends = self.after_grid or observers is None or not observers.devices  # the last host of the step ends it
        self._feed(time, inputs)
        try:
            return super().step(time, inputs, max_advance)
        finally:
            if ends:
                rt.pacer.end(row)
            self._publish_measurements(time, mark=ends)
            if ends:
                rt.on_step_end(row)

    def _advance_clocks(self, time: int, dt: int, env_by_eid: dict[str, dict[str, float]]) -> None:
        """Between the step's writes and its reads: with ``clock: steps`` the bench advances its virtual devices
        to the step's end (hil_bench.clocks); with ``clock: wall`` they keep time themselves."""
        rt = self.bench
        if rt.clocks is not None:
            ids = [eid for eid, dev in self.devices.items() if dev.bank is None]
            rt.io.run(rt.clocks.advance(ids, time, time + dt, env_by_eid))

    def get_data(self, outputs: dict) -> dict:
        data = super().get_data(outputs)
        for eid, values in data.items():
            table = self.tables.get(eid)  # a Table's vectors: element i for members[i]
            for i, dev in enumerate(table.members if table is not None else [self.devices[eid]]):
                if dev.bank is None and not dev.available:
                    for attr in ("p_w", "q_var"):
                        value = values.get(attr)
                        if value is None:
                            continue
                        if table is not None and not math.isfinite(value[i]):
                            value[i] = 0.0
                        elif table is None and not math.isfinite(value):
                            values[attr] = 0.0
        return data

    def _per_device(self, inputs: dict) -> dict:
        """The inputs with a Table's vectors spread to its members (a NaN setpoint is none, as in DeviceSim)."""
        out = {eid: attrs for eid, attrs in inputs.items() if eid not in self.tables}
        for eid, table in self.tables.items():
            for dev, attr, v in table.split(eid, inputs.get(eid, {})):
                out.setdefault(dev.eid, {})[attr] = {eid: v}
        return out

    # -- the bench's traffic ---------------------------------------------------------------------------------
    def _feed(self, time: int, inputs: dict) -> None:
        rt = self.bench
        for eid, attrs in self._per_device(inputs).items():
            dev = self.devices[eid]
            plan = rt.plans[eid]
            env = {a: float(_single(s)) for a, s in attrs.items() if a in dev.family.input_names
                   and _single(s) is not None}
            setpoints = {a: float(_single(s)) for a, s in attrs.items() if a in dev.family.setpoints
                         and _single(s) is not None}
            if plan.kind == "hosted" and env:
                rt.hosting.set_env(eid, env)
            if rt.flow is not None:
                if plan.protocol and env:
                    rt.flow.put(time, plan.site, eid, "signals", env)
                if setpoints:
                    rt.flow.put(time, plan.site, eid, "set", setpoints)

    def _publish_measurements(self, time: int, mark: bool = True) -> None:
        rt = self.bench
        if rt.flow is None:
            return
        for eid, dev in self.devices.items():
            if dev.bank is not None:
                arrays = self.measured.get(dev.family.name, {})
                values = {name: float(arr[dev.index]) for name, arr in arrays.items()}
            elif dev.last is not None and dev.available:
                values = dict(dev.last.values)
            else:
                continue
            rt.flow.put(time, rt.plans[eid].site, eid, "meas", values)
        if mark:
            rt.flow.mark(time)
