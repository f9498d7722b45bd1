"""The bench's traffic on the SMX broker role: what flows between the devices and the controllers, every step.

Per device and step (one SenML pack per message, so a broker carries a few messages per step, not one per
quantity):

* ``s4g/{site}/smx/{device}/meas/all``   the measurement the device host read (or the model's, for sim://)
* ``s4g/{site}/smx/{device}/set/all``    the setpoints the controllers sent to it
* ``s4g/{site}/smx/{device}/set/signals`` the simulated quantities the grid simulation feeds the device
  (its env inputs, e.g. PV irradiance, site load, terminal voltage): what a bench emulator (a programmable
  source, a load bank) would follow for real hardware

Publishing happens on a background thread, off the timing-critical path; the live monitor subscribes like any
SMX client. The broker is the scenario's ``bench.monitor.broker`` (embedded amqtt by default).
"""

from __future__ import annotations

import collections
import logging
import math
import re
import threading
from datetime import datetime
from collections.abc import Mapping

from cosim.messaging import MessageBus, Record, Subscription, topics
from cosim.messaging.errors import MessagingError

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:\-]")
_SUFFIX_UNITS = (("_wh", "Wh"), ("_w", "W"), ("_var", "var"), ("_va", "VA"), ("_v", "V"), ("_a", "A"),
                 ("_hz", "Hz"), ("_pu", "pu"), ("_c", "Cel"), ("_pct", "%"), ("_s", "s"))
SENDER = "hil-bench"
MONITOR_FILTER = "s4g/+/smx/#"


def token(text: str) -> str:
    """A topic segment from a site or device id (characters outside the layout's tokens become ``_``)."""
    out = _UNSAFE.sub("_", text)
    return out if out[:1].isalnum() else f"x{out}"


def unit_of(name: str) -> str | None:
    if name in ("soc", "soh"):
        return "/"
    for suffix, unit in _SUFFIX_UNITS:
        if name.endswith(suffix):
            return unit
    return None


def records(values: Mapping[str, float]) -> list[Record]:
    """SenML records of the finite values (SenML has no NaN: an unknown value is simply absent)."""
    return [Record(name, value=float(v), unit=unit_of(name)) for name, v in values.items()
            if v is not None and math.isfinite(float(v))]


class FlowBus:
    """Publishes the bench's traffic on the SMX role from a background thread."""

    def __init__(self, broker: str, *, start: datetime, seed: int) -> None:
        self.bus = MessageBus({"roles": {"smx": broker}, "default": "direct"}, seed=seed, start=start)
        self._queue: collections.deque[tuple[str, str, int, list[Record]]] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.published_t: int = -1
        self.errors = 0
        self._thread: threading.Thread | None = None

    def open(self) -> FlowBus:
        self.bus.open()
        self.bus.register(SENDER, "controller")
        self._thread = threading.Thread(target=self._run, name="s4g-bench-flow", daemon=True)
        self._thread.start()
        return self

    def subscribe(self, subscriber: str = "monitor") -> Subscription:
        return self.bus.subscribe("smx", MONITOR_FILTER, subscriber)

    def put(self, t_s: int, site: str, device: str, kind: str, values: Mapping[str, float]) -> None:
        """Queue ``values`` for ``s4g/{site}/smx/{device}/{meas|set}/{all|signals}`` (kind: meas, set, signals)."""
        recs = records(values)
        if not recs:
            return
        if kind == "meas":
            topic = topics.smx_meas_topic(token(site), token(device), "all")
        else:
            topic = topics.smx_set_topic(token(site), token(device), "all" if kind == "set" else "signals")
        sender = SENDER if kind != "meas" else token(device)
        with self._cond:
            self._queue.append((topic, sender, t_s, recs))
            self._cond.notify()

    def mark(self, t_s: int) -> None:
        """Everything of step ``t_s`` is queued."""
        with self._cond:
            self._queue.append(("", "", t_s, []))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                topic, sender, t_s, recs = self._queue.popleft()
            if not topic:
                self.published_t = t_s
                continue
            try:
                self.bus.publish("smx", topic, recs, t_s=t_s, sender=sender)
            except MessagingError as exc:
                self.errors += 1
                log.warning("bench flow: cannot publish %s: %s", topic, exc)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.bus.close()
