"""Reconnect back-off shared by the protocol drivers: no busy loop against a device that is down."""

from __future__ import annotations

import time

from devices.base import DeviceUnavailable

BACKOFF_MIN_S, BACKOFF_MAX_S = 0.2, 5.0


class Backoff:
    """After each failure the next connection attempt waits twice as long (``min_s`` ... ``max_s``)."""

    def __init__(self, min_s: float = BACKOFF_MIN_S, max_s: float = BACKOFF_MAX_S) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.delay_s = min_s
        self.retry_at = 0.0

    def failed(self) -> None:
        self.retry_at = time.monotonic() + self.delay_s
        self.delay_s = min(self.delay_s * 2, self.max_s)

    def succeeded(self) -> None:
        self.delay_s = self.min_s
        self.retry_at = 0.0

    def check(self, what: str) -> None:
        """Raise DeviceUnavailable while the next attempt is not due yet."""
        wait = self.retry_at - time.monotonic()
        if wait > 0:
            raise DeviceUnavailable(f"{what}: reconnecting, next attempt in {wait:.1f} s")
