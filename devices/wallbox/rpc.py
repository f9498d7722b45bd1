"""OCPP-J RPC for either side of a connection, on top of the ``ocpp`` package.

The package gives the message classes (Call, CallResult, CallError) and the JSON schemas of 1.6 and 2.0.1;
this module adds what our devices need on top: dict payloads in wire form (camelCase), schema validation of
every message sent and received (:mod:`devices.wallbox.schemas`), the right CALLERROR for every malformed
frame in the version's own vocabulary, a serial worker for incoming calls so the receive loop never blocks
on a handler, and typed failures for our own requests: :class:`CallErrorReply` (the peer answered
CALLERROR), :class:`MalformedReply` (the answer is garbage or violates the schema), ``TimeoutError`` and
:class:`ConnectionLost`.

A hostile or broken peer cannot end the connection or fail unrelated work: every frame is decoded by the
bounded :func:`devices.wire_json.loads`; a frame that cannot be decoded is answered with the version's
CALLERROR (with the frame's unique id when its start can still be read) or, when it looks like a reply to one
of our requests, fails that request only. Calls beyond a small queue (OCPP-J allows one outstanding call per
direction) are answered GenericError. Every rejection is counted in :attr:`Endpoint.stats`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections import Counter
from typing import Any
from collections.abc import Awaitable, Callable

from ocpp.charge_point import ChargePoint as _PackageEndpoint
from websockets.typing import Subprotocol
from ocpp.messages import Call, CallError, CallResult, MessageType

from devices.wallbox.schemas import KNOWN_ACTIONS, OcppFault, error_code, validate
from devices.wire_json import WireDecodeError
from devices.wire_json import loads as wire_loads

log = logging.getLogger(__name__)

Payload = dict[str, Any]
Handler = Callable[[Payload], Awaitable[Payload]]
AfterHook = Callable[[Payload], Awaitable[None]]

SUBPROTOCOL: dict[str, Subprotocol] = {"1.6": Subprotocol("ocpp1.6"), "2.0.1": Subprotocol("ocpp2.0.1")}
VERSION_OF_SUBPROTOCOL: dict[str, str] = {v: k for k, v in SUBPROTOCOL.items()}
MAX_UNIQUE_ID = 36  # OCPP-J: a unique id is at most 36 characters
MAX_QUEUED_CALLS = 8  # OCPP-J allows one outstanding call per direction; a few more are tolerated
LOUD_PER_KIND = 5  # the first rejections of each kind per connection are logged at WARNING, the rest at DEBUG
# the start of a frame, read without decoding it: message type and unique id
_HEAD = re.compile(r'\s*\[\s*([234])\s*,\s*"([^"\\]{1,36})"')


def printable(text: Any, limit: int = 80) -> str:
    """``text`` safe for a log line or a terminal: control characters escaped, at most ``limit`` characters."""
    s = str(text)
    if len(s) > limit:
        s = s[:limit] + "..."
    if s.isprintable():
        return s
    return s.encode("unicode_escape", "backslashreplace").decode("ascii")


class RpcError(Exception):
    """Base of the failures of a request."""


class CallErrorReply(RpcError):
    def __init__(self, code: str, description: str, details: Any = None) -> None:
        super().__init__(f"CALLERROR {code}: {description}")
        self.code, self.description, self.details = code, description, details


class MalformedReply(RpcError):
    """The peer's reply cannot be parsed or violates the schema."""


class ConnectionLost(RpcError):
    """The websocket closed while a request was outstanding (or before it could be sent)."""


def _framework_code(version: str) -> str:
    """The code for a frame that is not an OCPP-J message at all (its unique id cannot be read)."""
    return "FormationViolation" if version == "1.6" else "RpcFrameworkError"


class Endpoint(_PackageEndpoint):  # type: ignore[misc]  # the ocpp package ships no type information
    """One side of an OCPP-J websocket (charge point or CSMS). ``handlers`` answer the peer's calls."""

    def __init__(self, ident: str, connection: Any, version: str, *, timeout_s: float = 10.0,
                 stats: Counter[str] | None = None) -> None:
        super().__init__(ident, connection, response_timeout=timeout_s)
        self._ocpp_version = version
        self.version = version
        self.handlers: dict[str, Handler] = {}
        self.after: dict[str, AfterHook] = {}
        self._pending: dict[str, asyncio.Future[Any]] = {}
        self._request_lock = asyncio.Lock()
        self._inbox: asyncio.Queue[Call | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._id_prefix = f"{id(self) & 0xFFFFFF:x}-"
        self._lost = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: counts of what happened on this connection (rejected frames by error code, malformed replies, ...)
        self.stats: Counter[str] = stats if stats is not None else Counter()
        self._loud: Counter[str] = Counter()
        self.last_rx = time.monotonic()

    def note(self, kind: str, detail: str) -> None:
        """Count one rejection or oddity; log the first few of each kind loudly."""
        self.stats[kind] += 1
        self._loud[kind] += 1
        level = logging.WARNING if self._loud[kind] <= LOUD_PER_KIND else logging.DEBUG
        log.log(level, "%s: %s: %s", printable(self.id), kind, printable(detail, 200))

    # -- receive side ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Receive until the connection closes; then fail whatever is outstanding."""
        worker = asyncio.create_task(self._serve_calls())
        try:
            while True:
                raw = await self._connection.recv()
                self.last_rx = time.monotonic()
                self.stats["frames_in"] += 1
                try:
                    await self.route_message(raw)
                except ConnectionLost:
                    raise
                except Exception as exc:  # a bug in routing must not end the connection either
                    log.exception("%s: routing a frame failed", printable(self.id))
                    self.note("route_errors", f"{type(exc).__name__}: {exc}")
        finally:
            self.connection_lost()
            worker.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(worker, *self._tasks, return_exceptions=True)

    def connection_lost(self) -> None:
        self._lost = True
        for uid in list(self._pending):
            self._fail(uid, ConnectionLost(f"{self.id}: connection closed"))

    async def route_message(self, raw: str | bytes) -> None:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            self.note("rejected_binary", f"{len(raw)} bytes")
            await self._reply_error("-1", _framework_code(self.version), "binary frames are not OCPP-J")
            return
        try:
            msg = wire_loads(raw)
        except WireDecodeError as exc:
            await self._undecodable(raw, exc.reason)
            return
        uid = msg[1] if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str) else None
        if uid is not None and not 0 < len(uid) <= MAX_UNIQUE_ID:
            uid = None
        kind = msg[0] if isinstance(msg, list) and msg else None
        if kind == MessageType.Call and len(msg) == 4 and uid is not None and isinstance(msg[2], str):
            if self._inbox.qsize() >= MAX_QUEUED_CALLS:
                self.note("rejected_flood", f"call {uid} while {self._inbox.qsize()} are queued")
                await self._reply_error(uid, "GenericError", "too many calls outstanding (OCPP-J allows one)")
                return
            self._inbox.put_nowait(Call(uid, msg[2], msg[3]))
            return
        if kind == MessageType.CallResult and len(msg) == 3 and uid is not None:
            self._resolve(uid, CallResult(uid, msg[2]))
            return
        if kind == MessageType.CallError and len(msg) == 5 and uid is not None and isinstance(msg[2], str):
            self._resolve(uid, CallError(uid, msg[2], msg[3], msg[4]))
            return
        # malformed: never answer a response with a CALLERROR; fail the request it was meant to answer
        if kind in (MessageType.CallResult, MessageType.CallError):
            if uid in self._pending:
                self._fail(uid, MalformedReply(f"{self.id}: malformed reply {printable(raw, 120)}"))
            self.note("malformed_replies", printable(raw, 120))
            return
        if not isinstance(msg, list) or kind not in (2, 3, 4) or isinstance(kind, bool):
            code = ("ProtocolError" if self.version == "1.6" else
                    "MessageTypeNotSupported" if isinstance(kind, int) and not isinstance(kind, bool)
                    else "RpcFrameworkError")
            self.note(f"rejected_{code}", printable(raw, 120))
            await self._reply_error(uid or "-1", code, "not an OCPP-J message (type id must be 2, 3 or 4)")
            return
        code = error_code("FormatViolation", self.version) if uid is not None else _framework_code(self.version)
        self.note(f"rejected_{code}", printable(raw, 120))
        await self._reply_error(uid or "-1", code, "a CALL is [2, uniqueId, action, payload]")

    async def _undecodable(self, raw: str, reason: str) -> None:
        """A frame that is not acceptable JSON: answer it by its unique id if its start can still be read."""
        head = _HEAD.match(raw[:80])
        kind, uid = (int(head.group(1)), head.group(2)) if head else (None, None)
        if kind in (MessageType.CallResult, MessageType.CallError):
            if uid in self._pending:  # only the request it answers fails; it is retried like any failure
                self._fail(uid, MalformedReply(f"{self.id}: reply is not acceptable JSON ({reason})"))
            self.note("malformed_replies", f"{reason}: {printable(raw, 80)}")
            return
        code = error_code("FormatViolation", self.version) if uid else _framework_code(self.version)
        self.note(f"rejected_{code}", f"{reason}: {printable(raw, 80)}")
        await self._reply_error(uid or "-1", code, f"frame is not acceptable JSON: {reason}"[:200])

    def _resolve(self, uid: str, msg: CallResult | CallError) -> None:
        fut = self._pending.get(uid)
        if fut is None or fut.done():
            self.note("replies_unknown_id", f"response to unknown or expired request {uid}")
            return
        fut.set_result(msg)

    def _fail(self, uid: str, exc: Exception) -> None:
        fut = self._pending.get(uid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)
            fut.exception()  # marked as seen: a caller that gave up (cancelled) must not leave it to the GC log

    async def _serve_calls(self) -> None:
        while True:
            call = await self._inbox.get()
            if call is None:
                return
            try:
                await self.handle_call(call)
            except ConnectionLost:
                return
            except Exception as exc:  # a handler bug must not kill the connection; it was answered InternalError
                log.exception("%s: handling %s failed", printable(self.id), printable(call.action))
                self.note("handler_errors", f"{type(exc).__name__}: {exc}")

    async def handle_call(self, call: Call) -> None:
        """Validate, dispatch to ``handlers``, validate and send the answer, then run the ``after`` hook."""
        handler = self.handlers.get(call.action)
        if handler is None:
            known = call.action in KNOWN_ACTIONS.get(self.version, set())
            code = "NotSupported" if known else "NotImplemented"
            self.note(f"rejected_{code}", printable(call.action))
            await self._reply_error(call.unique_id, code,
                                    f"{printable(call.action, 60)} is {'not supported' if known else 'unknown'} here")
            return
        try:
            validate(MessageType.Call, call.action, call.payload, self.version)
        except OcppFault as fault:
            await self.refuse(call, fault)
            return
        try:
            answer = await handler(call.payload)
            validate(MessageType.CallResult, call.action, answer, self.version)
        except OcppFault as fault:
            await self.refuse(call, fault)
            return
        except (ConnectionLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("%s: handler for %s failed", printable(self.id), call.action)
            self.note("handler_errors", f"{call.action}: {type(exc).__name__}: {exc}")
            await self._reply_error(call.unique_id, "InternalError", f"{type(exc).__name__}: {exc}"[:200])
            return
        await self.send_raw(CallResult(call.unique_id, answer).to_json())
        hook = self.after.get(call.action)
        if hook is not None:
            task = asyncio.create_task(self._run_hook(call.action, hook, call.payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def refuse(self, call: Call, fault: OcppFault) -> None:
        """Answer ``call`` with the CALLERROR of ``fault`` (counted)."""
        code = error_code(fault.code, self.version)
        self.note(f"rejected_{code}", f"{call.action}: {fault.description}")
        await self._reply_error(call.unique_id, code, fault.description, fault.details)

    async def _run_hook(self, action: str, hook: AfterHook, payload: Payload) -> None:
        try:
            await hook(payload)
        except (ConnectionLost, asyncio.CancelledError):
            pass
        except Exception as exc:  # logged and counted, never an unretrieved task exception
            log.exception("%s: after-hook of %s failed", printable(self.id), action)
            self.note("handler_errors", f"after {action}: {type(exc).__name__}: {exc}")

    async def _reply_error(self, uid: str, code: str, description: str, details: Any = None) -> None:
        await self.send_raw(CallError(uid, error_code(code, self.version), description, details or {}).to_json())

    # -- send side -------------------------------------------------------------------------------------------
    async def send_raw(self, text: str) -> None:
        try:
            await self._connection.send(text)
        except Exception as exc:  # websockets' ConnectionClosed and transport errors
            raise ConnectionLost(f"{self.id}: cannot send: {exc}") from exc

    def next_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    async def request(self, action: str, payload: Payload, *, timeout_s: float | None = None,
                      validate_request: bool = True) -> Payload:
        """Send a CALL and return the validated CALLRESULT payload; one outstanding request at a time."""
        if validate_request:
            try:
                validate(MessageType.Call, action, payload, self.version)
            except OcppFault as fault:
                raise ValueError(f"refusing to send an invalid {action}: {fault.description}") from None
        timeout = self._response_timeout if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            await asyncio.wait_for(self._request_lock.acquire(), timeout)
        except TimeoutError:
            raise TimeoutError(f"{self.id}: {action}: an earlier request is still outstanding") from None
        try:
            if self._lost:
                raise ConnectionLost(f"{self.id}: connection closed")
            uid = self.next_id()
            fut: asyncio.Future[Any] = loop.create_future()
            self._pending[uid] = fut
            try:
                await self.send_raw(Call(uid, action, payload).to_json())
                reply = await asyncio.wait_for(fut, max(deadline - loop.time(), 0.0))
            except TimeoutError:
                raise TimeoutError(f"{self.id}: no answer to {action} within {timeout:g} s") from None
            finally:
                self._pending.pop(uid, None)
        finally:
            self._request_lock.release()
        if isinstance(reply, CallError):
            raise CallErrorReply(printable(reply.error_code, 40), printable(reply.error_description, 200),
                                 reply.error_details)
        if not isinstance(reply.payload, dict):
            raise MalformedReply(f"{self.id}: {action} reply payload is not an object: {printable(reply.payload)}")
        try:
            validate(MessageType.CallResult, action, reply.payload, self.version)
        except OcppFault as fault:
            raise MalformedReply(f"{self.id}: {action} reply violates the schema ({fault.code}): "
                                 f"{fault.description}") from None
        return reply.payload


__all__ = [
    "SUBPROTOCOL",
    "VERSION_OF_SUBPROTOCOL",
    "CallErrorReply",
    "ConnectionLost",
    "Endpoint",
    "Handler",
    "MalformedReply",
    "OcppFault",
    "Payload",
    "RpcError",
    "error_code",
    "printable",
    "validate",
]
