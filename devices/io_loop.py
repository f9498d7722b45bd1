"""One asyncio event loop in a daemon thread, shared by protocol drivers and virtual devices.

mosaik runs its own event loop and calls in-process simulators synchronously from it, so protocol I/O
cannot run on that loop. Everything that touches a socket, and every virtual device's model, lives on
this loop; the co-simulation submits work and waits with a timeout.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, TypeVar
from collections.abc import Awaitable, Coroutine

T = TypeVar("T")


class IoLoop:
    def __init__(self, name: str = "s4g-io") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the I/O loop and wait for its result (exceptions propagate)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            future.cancel()
            raise

    def gather(self, aws: list[Awaitable[T]], timeout_s: float | None = None) -> list[T | BaseException]:
        """Run awaitables concurrently; each result is a value or the exception it raised."""

        async def _all() -> list[T | BaseException]:
            return await asyncio.gather(*aws, return_exceptions=True)

        return self.run(_all(), timeout_s)

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def _cancel_rest() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._thread.is_alive():
            self.run(_cancel_rest(), timeout_s=5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=5)
        self.loop.close()
