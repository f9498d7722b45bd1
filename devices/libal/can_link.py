"""An asyncio face on a python-can Bus: a reader thread feeds frames to the event loop, sends run off the loop.

python-can's buses are synchronous. The reader thread calls ``bus.recv`` and hands each message to the loop with
``call_soon_threadsafe``; ``send`` runs in a worker thread. Any python-can interface works (``socketcand`` for
the virtual rig and for a remote socketcand daemon, ``socketcan`` on a Linux host with a CAN adapter, ...).

Two weaknesses of python-can's socketcand client are handled here: its constructor retries a refused connection
in a tight loop for 10 s and waits for the greeting without a timeout, so the server is probed (connect, read
``< hi >``) with our timeout before the Bus is built; and its ``recv`` does not report a closed connection (it
returns None at once, forever), so a run of immediate empty returns is taken as the link being lost.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devices.base import DeviceUnavailable

if TYPE_CHECKING:
    import can

log = logging.getLogger(__name__)

RECV_TIMEOUT_S = 0.1
EOF_RUN = 3  # this many immediate empty recv returns in a row mean the peer closed the connection


@dataclass(frozen=True)
class CanTarget:
    interface: str = "socketcand"
    channel: str = "can0"
    host: str | None = None
    port: int | None = None
    bitrate: int | None = None

    def describe(self) -> str:
        where = f"{self.host}:{self.port}/" if self.host else ""
        return f"{self.interface}:{where}{self.channel}"


async def probe_socketcand(host: str, port: int, timeout_s: float) -> None:
    """Connect and wait for the daemon's greeting; DeviceUnavailable if it does not come in time."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
        greeting = await asyncio.wait_for(reader.readexactly(6), timeout_s)
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        raise DeviceUnavailable(f"socketcand {host}:{port}: {exc or 'no greeting within the timeout'}") from exc
    finally:
        if writer is not None:
            writer.close()
    if greeting != b"< hi >":
        raise DeviceUnavailable(f"socketcand {host}:{port}: unexpected greeting {greeting!r}")


class CanLink:
    def __init__(self, target: CanTarget, on_message: Callable[[object], None],
                 on_lost: Callable[[BaseException | None], None]) -> None:
        self.target = target
        self._on_message = on_message
        self._on_lost = on_lost
        self._bus: can.BusABC | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.alive = False

    async def open(self, timeout_s: float) -> None:
        import can

        t = self.target
        kwargs: dict[str, Any] = {"interface": t.interface, "channel": t.channel}
        if t.interface == "socketcand":
            if not t.host or not t.port:
                raise DeviceUnavailable("socketcand needs can=HOST:PORT in the address")
            await probe_socketcand(t.host, t.port, timeout_s)
            kwargs.update(host=t.host, port=t.port)
        if t.bitrate:
            kwargs["bitrate"] = t.bitrate
        abandoned = threading.Event()
        lock = threading.Lock()

        def build() -> can.BusABC | None:
            bus = can.Bus(**kwargs)
            with lock:
                if abandoned.is_set():  # we gave up waiting: do not leak the socket
                    bus.shutdown()
                    return None
                return bus

        try:
            self._bus = await asyncio.wait_for(asyncio.to_thread(build), timeout_s)
        except TimeoutError as exc:
            with lock:
                abandoned.set()
            raise DeviceUnavailable(f"CAN {t.describe()}: handshake not finished within {timeout_s:g} s") from exc
        except (can.CanError, OSError, ValueError, ImportError) as exc:
            raise DeviceUnavailable(f"CAN {t.describe()}: {exc}") from exc
        self._loop = asyncio.get_running_loop()
        self._stop.clear()
        self.alive = True
        self._thread = threading.Thread(target=self._read, name=f"can-reader {t.describe()}", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        bus, loop = self._bus, self._loop
        assert bus is not None and loop is not None
        early = 0
        error: BaseException | None = None
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                msg = bus.recv(RECV_TIMEOUT_S)
            except Exception as exc:  # python-can raises CanError, OSError or ValueError on a dead socket
                error = exc
                break
            if msg is None:
                early = early + 1 if time.monotonic() - t0 < RECV_TIMEOUT_S / 4 else 0
                if early >= EOF_RUN:
                    error = ConnectionError("connection closed by the CAN server")
                    break
                continue
            early = 0
            try:
                loop.call_soon_threadsafe(self._on_message, msg)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                return
        if not self._stop.is_set():
            try:
                loop.call_soon_threadsafe(self._lost, error)
            except RuntimeError:
                pass

    def _lost(self, error: BaseException | None) -> None:
        self.alive = False
        self._on_lost(error)

    async def send(self, arbitration_id: int, data: bytes, timeout_s: float) -> None:
        import can

        if self._bus is None or not self.alive:
            raise DeviceUnavailable(f"CAN {self.target.describe()}: not connected")
        msg = can.Message(arbitration_id=arbitration_id, data=data, is_extended_id=False)
        try:
            await asyncio.wait_for(asyncio.to_thread(self._bus.send, msg), timeout_s)
        except (can.CanError, OSError, TimeoutError) as exc:
            self.alive = False
            raise DeviceUnavailable(f"CAN {self.target.describe()}: send failed: {exc or 'timeout'}") from exc

    async def close(self) -> None:
        self.alive = False
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 2.0)
        bus, self._bus = self._bus, None
        if bus is not None:
            await asyncio.to_thread(bus.shutdown)
