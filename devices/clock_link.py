"""The clock link: a served virtual device that follows someone else's simulated clock instead of the wall clock.

A virtual device normally keeps time by the wall clock (``s4g device serve --step``), like hardware. In a test
of the HIL bench that makes its behaviour depend on how the machine schedules two processes. With
``--clock-port`` the served device instead listens on a second loopback socket where the bench tells it, once
per step, how far to advance its model and with which exogenous inputs -- the same time source and inputs the
bench's own hosted virtual devices follow. The device's protocol (SunSpec, ...) is untouched: this link only
carries time.

Wire format: one JSON object per line, one request at a time per connection.

* request ``{"advance_to": T, "step_s": S, "env": {"site_load_w": 812.0, ...}}``: step the model from its clock
  to ``T`` (integer s since its start; never backwards) in model steps of at most ``S`` s, with ``env`` (input
  names of the family, finite numbers; omitted inputs keep their last value);
* reply ``{"t_s": T}`` once done, or ``{"error": "..."}`` for a request that is refused (nothing changes).

A refused request is :class:`~devices.base.ProtocolError` on the client's side, no reply in time or a lost
connection :class:`~devices.base.DeviceUnavailable`.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any
from collections.abc import Mapping

from devices.base import DeviceUnavailable, ProtocolError
from devices.virtual import VirtualDevice, advance_to
from devices.wire_json import WireDecodeError, loads

MAX_LINE = 64 * 1024  # a request carries a handful of numbers


class ClockRequestError(ValueError):
    """A clock request that is not acceptable; ``str()`` says why."""


def parse_request(line: bytes, inputs: frozenset[str], t_now: float) -> tuple[int, int, dict[str, float]]:
    """``(advance_to, step_s, env)`` of one request line, checked; ClockRequestError otherwise."""
    try:
        msg = loads(line)
    except WireDecodeError as exc:
        raise ClockRequestError(f"not valid JSON: {exc.reason}") from None
    if not isinstance(msg, dict) or set(msg) - {"advance_to", "step_s", "env"} or "advance_to" not in msg:
        raise ClockRequestError('expected {"advance_to": T, "step_s": S, "env": {...}}')
    target, step = msg["advance_to"], msg.get("step_s", 1)
    for name, value in (("advance_to", target), ("step_s", step)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ClockRequestError(f"{name}: expected an integer number of seconds (found {value!r})")
    if step < 1:
        raise ClockRequestError(f"step_s: expected >= 1 (found {step})")
    if target < t_now:
        raise ClockRequestError(f"advance_to: the clock never goes back (at {t_now} s, asked for {target} s)")
    env = msg.get("env", {})
    if not isinstance(env, dict):
        raise ClockRequestError("env: expected an object of input names and numbers")
    out: dict[str, float] = {}
    for name, value in env.items():
        if name not in inputs:
            raise ClockRequestError(f"env: {name!r} is not an input of this device (expected one of "
                                    f"{', '.join(sorted(inputs))})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ClockRequestError(f"env.{name}: expected a finite number (found {value!r})")
        out[name] = float(value)
    return target, step, out


class ClockServer:
    """Serves the clock link of one virtual device (on its I/O loop, where its protocol server runs)."""

    def __init__(self, device: VirtualDevice, env: Mapping[str, float]) -> None:
        self.device = device
        self.env = dict(env)
        self.inputs = frozenset(device.family.input_names)
        self._server: asyncio.AbstractServer | None = None
        self._lock = asyncio.Lock()  # two links (a reconnect) never step the model at once

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_LINE)
        bound = self._server.sockets[0].getsockname()
        return f"tcp://{bound[0]}:{bound[1]}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.LimitOverrunError:
                    await self._reply(writer, {"error": f"request longer than {MAX_LINE} bytes"})
                    return  # the rest of that line cannot be framed again
                except asyncio.IncompleteReadError:
                    return
                await self._reply(writer, await self.handle(line))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(self, line: bytes) -> dict[str, Any]:
        async with self._lock:
            try:
                target, step, env = parse_request(line, self.inputs, self.device.t_s)
            except ClockRequestError as exc:
                return {"error": str(exc)}
            self.env.update(env)
            await advance_to(self.device, target, step, self.env)
            return {"t_s": self.device.t_s}

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, msg: dict[str, Any]) -> None:
        writer.write(json.dumps(msg).encode() + b"\n")
        await writer.drain()


class ClockClient:
    """The bench's end of one device's clock link; call from one event loop, one request at a time."""

    def __init__(self, address: str, timeout_s: float) -> None:
        host, _, port = address.removeprefix("tcp://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"clock address: expected tcp://HOST:PORT (found {address!r})")
        self.address, self.host, self.port, self.timeout_s = address, host, int(port), timeout_s
        self._conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def advance_to(self, t_s: int, step_s: int, env: Mapping[str, float]) -> int:
        """Ask the device to advance to ``t_s``; its clock after the step (== ``t_s``)."""
        request = json.dumps({"advance_to": int(t_s), "step_s": int(step_s), "env": dict(env)}).encode() + b"\n"
        try:
            reply = await asyncio.wait_for(self._exchange(request), self.timeout_s)
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            await self.close()
            why = f"no reply within {self.timeout_s:g} s" if isinstance(exc, TimeoutError) else str(exc) or \
                type(exc).__name__
            raise DeviceUnavailable(f"clock link {self.address}: {why}") from None
        try:
            msg = loads(reply)
        except WireDecodeError as exc:
            await self.close()
            raise ProtocolError(f"clock link {self.address}: malformed reply: {exc.reason}") from None
        if isinstance(msg, dict) and "error" in msg:
            raise ProtocolError(f"clock link {self.address}: refused: {msg['error']}")
        if not isinstance(msg, dict) or msg.get("t_s") != int(t_s):
            raise ProtocolError(f"clock link {self.address}: unexpected reply {msg!r}")
        return int(msg["t_s"])

    async def _exchange(self, request: bytes) -> bytes:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.host, self.port, limit=MAX_LINE)
        reader, writer = self._conn
        writer.write(request)
        await writer.drain()
        line = await reader.readuntil(b"\n")
        return line

    async def close(self) -> None:
        if self._conn is not None:
            _, writer = self._conn
            self._conn = None
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
