"""The charge point's outgoing messages, in order, and the OCPP rules for transaction messages.

Transaction messages (1.6 StartTransaction, StopTransaction, MeterValues of a transaction; 2.0.1
TransactionEvent) stay queued until the CSMS has confirmed them, across reconnects, and go out in the order
they were produced. A timeout or a lost connection is no failure: the message is sent again (after the
reconnect). Only a CSMS that answers with a CALLERROR (or an answer that is no answer) "fails to process" it:
then it is retried ``attempts`` times, waiting ``interval × failures`` before each retry (1.6
TransactionMessageAttempts / TransactionMessageRetryInterval, 2.0.1 OCPPCommCtrlr.MessageAttempts /
MessageAttemptInterval for TransactionEvent), and skipped after the last one: the CSMS has refused it, so it
is counted as ``tx_skipped``, never lost silently. Status and heartbeats are not queued while offline (the
status after the next boot supersedes them) and are dropped at their first failure.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Iterator

Payload = dict[str, Any]


@dataclass
class OutMsg:
    action: str
    #: builds the payload when the message is sent (after what precedes it was answered); None = nothing to send
    #: any more (a 1.6 StopTransaction whose StartTransaction the CSMS refused has no transaction to stop)
    build: Callable[[], Payload | None]
    persistent: bool  # a transaction message: kept until confirmed
    on_result: Callable[[Payload], None] | None = None
    failures: int = 0


class Outbox:
    """FIFO of :class:`OutMsg` with the counts that prove nothing is lost:
    ``tx_enqueued == tx_confirmed + tx_skipped + len(pending transaction messages)``."""

    def __init__(self) -> None:
        self._queue: deque[OutMsg] = deque()
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._queue)

    def __iter__(self) -> Iterator[OutMsg]:
        return iter(self._queue)

    def append(self, msg: OutMsg) -> None:
        self._queue.append(msg)
        if msg.persistent:
            self.stats["tx_enqueued"] += 1

    def head(self) -> OutMsg | None:
        return self._queue[0] if self._queue else None

    def _pop(self, msg: OutMsg) -> bool:
        if self._queue and self._queue[0] is msg:
            self._queue.popleft()
            return True
        return False

    def confirmed(self, msg: OutMsg) -> None:
        if self._pop(msg):
            self.stats["tx_confirmed" if msg.persistent else "confirmed"] += 1

    def skipped(self, msg: OutMsg, why: str) -> None:
        """The message leaves unconfirmed: the CSMS refused it ``attempts`` times, or it has nothing to say."""
        if self._pop(msg):
            self.stats[f"tx_skipped_{why}" if msg.persistent else f"dropped_{why}"] += 1
            if msg.persistent:
                self.stats["tx_skipped"] += 1

    def keep_transaction_messages(self) -> None:
        """After a boot: stale statuses and heartbeats go, transaction messages stay."""
        self._queue = deque(m for m in self._queue if m.persistent)

    def pending_transaction_messages(self) -> int:
        return sum(m.persistent for m in self._queue)


__all__ = ["OutMsg", "Outbox", "Payload"]
