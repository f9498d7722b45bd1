"""The backend interface: what every transport of the message bus implements (see ``backends/__init__``)."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

from ..errors import BrokerUnavailable

# (wire topic, payload, retain flag) -- called by the backend for every message it receives
OnMessage = Callable[[str, bytes, bool], None]
# (message id, reason) -- called when a broker refuses a publication (MQTT 5 only)
OnRefused = Callable[[int, str], None]
# the messages a backend read at once, handed over in one call (one lock and one wakeup on the bus)
OnBatch = Callable[[list[tuple[str, bytes, bool]]], None]


class Backend(ABC):
    """Carries the payloads of one role key. ``synchronous`` backends deliver inside ``send``."""

    synchronous: bool = False
    label: str = "?"

    @abstractmethod
    def open(self, on_message: OnMessage, on_refused: OnRefused) -> None:
        """Connect and subscribe; return only when publications of this process will come back."""

    def open_batched(self, on_batch: OnBatch, on_refused: OnRefused) -> None:
        """``open``, with received messages handed over in batches (one message each unless overridden)."""
        self.open(lambda topic, payload, retain: on_batch([(topic, payload, retain)]), on_refused)

    def flush(self) -> None:  # noqa: B027  # an optional hook: most backends write in send
        """Put on the wire what ``send`` may have queued (the bus calls it before waiting for deliveries)."""

    @abstractmethod
    def send(self, wire_topic: str, payload: bytes, qos: int) -> int | None:
        """Publish; return the MQTT message id when the broker may refuse it later, else None."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect and stop any thread this backend started (idempotent)."""

    def _await_subscription(self, ready: threading.Event, timeout: float, failure: Callable[[], str | None]) -> None:
        """Wait until the network thread saw CONNACK and SUBACK or a failure (``ready``); on a timeout or a
        failure, close and raise ``BrokerUnavailable``."""
        if not ready.wait(timeout):
            self.close()
            raise BrokerUnavailable(f"{self.label}: no CONNACK/SUBACK within {timeout} s")
        problem = failure()
        if problem is not None:
            self.close()
            raise BrokerUnavailable(f"{self.label}: {problem}")
