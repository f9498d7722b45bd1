"""The connection plumbing every protocol driver shares: lock, wanted state, back-off, reconnect, error mapping.

A protocol driver subclasses :class:`ReconnectingDriver` and keeps only its transport:

* ``_open_link()``   open the transport (and any handshake or discovery); raise as it likes
* ``_read_once()``   one measurement over an open link
* ``_write_once(sp)`` one already-checked setpoint over an open link
* ``_close_link()``  release everything; must not raise, safe to call twice

The base serialises calls (one lock per driver: one request in flight, as the devices expect), remembers whether
``connect()`` was asked for (``close()`` ends it: later calls raise DeviceUnavailable, no redial), re-opens a lost
link on the next call no earlier than the back-off allows (:mod:`devices.backoff`: after every failed open the wait
doubles, 0.2 s ... 5 s by default; a link that dies after working is re-dialled once at once), and turns whatever
the transport raised into the three typed errors of :mod:`devices.base`:

* OSError, TimeoutError, EOF (``EOFError``, ``asyncio.IncompleteReadError``) -> DeviceUnavailable
* a reply that does not decode (``UnicodeDecodeError``, ``ValueError`` incl. JSON errors, ``struct.error``,
  ``RecursionError``, ``LookupError``) -> ProtocolError
* DeviceError subclasses pass unchanged; ``_translate`` may add protocol-specific mappings first.

After an error the link is closed (its stream can no longer be trusted) unless ``_keeps_link(error)`` says the
reply was well-formed (a Modbus exception, a read-back mismatch, a refused setpoint). A driver with several
links overrides ``_drop_broken`` to close only what is down.
"""

from __future__ import annotations

import abc
import asyncio
import struct
from typing import Any, TypeVar
from collections.abc import Awaitable, Callable

from devices.backoff import Backoff
from devices.base import (Address, Capabilities, DeviceError, DeviceUnavailable, Driver, Measurement, ProtocolError,
                          Setpoint, SetpointRejected)

T = TypeVar("T")

UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, EOFError, asyncio.IncompleteReadError)
UNDECODABLE_ERRORS: tuple[type[BaseException], ...] = (UnicodeError, ValueError, struct.error, RecursionError,
                                                       LookupError)


def translate(exc: BaseException, label: str) -> DeviceError:
    """The typed error for an exception a transport raised (``label`` names the device in the message)."""
    if isinstance(exc, DeviceError):
        return exc
    text = str(exc) or type(exc).__name__
    if isinstance(exc, UNAVAILABLE_ERRORS):
        if isinstance(exc, TimeoutError):
            text = f"no reply in time ({text})"
        return DeviceUnavailable(f"{label}: {text}")
    if isinstance(exc, UNDECODABLE_ERRORS):
        return ProtocolError(f"{label}: undecodable reply: {type(exc).__name__}: {text[:200]}")
    raise exc  # a programming error: never disguised as a device fault


class ReconnectingDriver(Driver):
    """A driver whose link is (re)opened on demand, with back-off, and whose errors are typed."""

    def __init__(self, address: Address, capabilities: Capabilities, *, timeout_s: float = 2.0,
                 backoff: Backoff | None = None) -> None:
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self._lock = asyncio.Lock()
        self._wanted = False
        self._up = False
        self.backoff = backoff or Backoff()
        self.dials = 0  # open attempts, for diagnostics and the back-off tests
        self.failures = 0  # operations that ended in a typed error

    # -- what a protocol driver implements ------------------------------------------------------------------
    @abc.abstractmethod
    async def _open_link(self) -> None:
        """Open the transport (with any handshake); raise on failure."""

    @abc.abstractmethod
    async def _read_once(self) -> Measurement:
        """One measurement over the open link."""

    @abc.abstractmethod
    async def _write_once(self, setpoint: Setpoint) -> None:
        """Send one checked setpoint over the open link."""

    @abc.abstractmethod
    async def _close_link(self) -> None:
        """Release the transport; never raises, safe twice."""

    # -- what a protocol driver may refine ------------------------------------------------------------------
    def _link_up(self) -> bool:
        """Whether the link is usable now (override to also look at the transport)."""
        return self._up

    def _translate(self, exc: BaseException) -> DeviceError:
        """Protocol-specific exceptions first (override and fall back to ``super()``)."""
        return translate(exc, self.address.raw)

    def _keeps_link(self, error: DeviceError) -> bool:
        """True when the error came in a well-formed reply and the stream is still in step."""
        return isinstance(error, SetpointRejected)

    async def _drop_broken(self, error: DeviceError) -> None:
        """Close what the error broke (default: the whole link)."""
        await self._drop()

    def _needs_link(self, setpoint: Setpoint) -> bool:
        """Whether a write must have the whole link up first (a driver may send a safe setpoint on part of it)."""
        return True

    # -- the driver interface -------------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._wanted and self._link_up()

    async def connect(self) -> None:
        async with self._lock:
            self._wanted = True
            if not self._link_up():
                self.backoff.succeeded()  # an explicit connect tries at once
                await self._ensure_open()

    async def read(self) -> Measurement:
        return await self._operate(self._read_once)

    async def _write(self, setpoint: Setpoint) -> None:
        await self._operate(lambda: self._write_once(setpoint), open_first=self._needs_link(setpoint))

    async def close(self) -> None:
        async with self._lock:
            self._wanted = False
            await self._drop()

    # -- internals ------------------------------------------------------------------------------------------
    async def _operate(self, work: Callable[[], Awaitable[T]], *, open_first: bool = True) -> T:
        async with self._lock:
            if not self._wanted:
                raise DeviceUnavailable(f"{self.address.raw}: not connected (call connect())")
            if open_first:
                await self._ensure_open()
            return await self._guard(work)

    async def _guard(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` on the link; a failure is typed, counted and closes what it broke."""
        try:
            return await work()
        except asyncio.CancelledError:
            await self._drop()  # a request cut off mid-way leaves the stream out of step
            raise
        except Exception as exc:
            try:
                error = self._translate(exc)
            except Exception:
                await self._drop()  # not a device fault: re-raised as it is, but the link is not trusted
                raise
            self.failures += 1
            if not self._keeps_link(error):
                await self._drop_broken(error)
            if error is exc:
                raise
            raise error from exc

    async def _ensure_open(self) -> None:
        """Open the link if it is down, unless the back-off says not yet (DeviceUnavailable then). Call with the
        lock held; also usable from ``_write_once`` to open the rest of a partly opened link."""
        if self._link_up():
            return
        self.backoff.check(self.address.raw)
        self.dials += 1
        try:
            await self._open_link()
        except asyncio.CancelledError:
            await self._drop()
            raise
        except Exception as exc:
            try:
                error = self._translate(exc)
            except Exception:
                await self._drop()
                raise
            self.failures += 1
            await self._drop_broken(error)
            self.backoff.failed()
            if error is exc:
                raise
            raise error from exc
        self._up = True
        self.backoff.succeeded()

    async def _drop(self) -> None:
        self._up = False
        await self._close_link()

    async def __aenter__(self) -> ReconnectingDriver:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
