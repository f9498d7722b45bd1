"""OCPP-J RPC for either side of a connection, on top of the ``ocpp`` package.

The package gives the message classes (Call, CallResult, CallError), the JSON schemas of 1.6 and 2.0.1 and
the error classes; this module adds what our devices need on top: dict payloads in wire form (camelCase),
schema validation of every message sent and received against the package's OCPP JSON schemas (kept on,
inline, compiled with fastjsonschema), the right CALLERROR for every
malformed frame in the version's own vocabulary (1.6 "FormationViolation" / 2.0.1 "FormatViolation",
"RpcFrameworkError", ...), a serial worker for incoming calls so the receive loop never blocks on a handler,
and typed failures for our own requests: :class:`CallErrorReply` (the peer answered CALLERROR),
:class:`MalformedReply` (the answer is garbage or violates the schema), ``TimeoutError`` and
:class:`ConnectionLost`.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

import fastjsonschema
import ocpp
from ocpp.charge_point import ChargePoint as _PackageEndpoint
from ocpp.messages import Call, CallError, CallResult, MessageType
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

log = logging.getLogger(__name__)

Payload = dict[str, Any]
Handler = Callable[[Payload], Awaitable[Payload]]
AfterHook = Callable[[Payload], Awaitable[None]]

SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
VERSION_OF_SUBPROTOCOL = {v: k for k, v in SUBPROTOCOL.items()}
_KNOWN_ACTIONS = {"1.6": {a.value for a in Action16}, "2.0.1": {a.value for a in Action201}}
# 1.6 spells two codes differently from 2.0.1
_V16_CODES = {"FormatViolation": "FormationViolation", "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}
_V201_CODES = {v: k for k, v in _V16_CODES.items()}


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


class OcppFault(Exception):
    """Raised by a handler to answer with a CALLERROR of a given code."""

    def __init__(self, code: str, description: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.details = code, description, dict(details or {})


def error_code(code: str, version: str) -> str:
    """The version's spelling of an error code."""
    return _V16_CODES.get(code, code) if version == "1.6" else _V201_CODES.get(code, code)


def _code_for(rule: str, version: str) -> str:
    if rule == "type":
        return "TypeConstraintViolation"
    if rule in ("additionalProperties", "additionalItems"):
        return error_code("FormatViolation", version)
    if rule == "required":
        return "ProtocolError" if version == "1.6" else "OccurrenceConstraintViolation"
    if rule in ("minItems", "maxItems"):
        return error_code("OccurrenceConstraintViolation", version)
    return "PropertyConstraintViolation"  # enum, maxLength, minimum, maximum, multipleOf...


@functools.lru_cache(maxsize=None)
def _schema(message_type: int, action: str, version: str) -> dict:
    # the ocpp package's own schema files (the official OCPP JSON schemas)
    name = action + ("Response" if message_type == MessageType.CallResult else
                     "Request" if version != "1.6" else "")
    path = Path(ocpp.__file__).parent / f"v{version.replace('.', '')}" / "schemas" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8-sig"))


@functools.lru_cache(maxsize=None)
def _compiled(message_type: int, action: str, version: str) -> Callable[[Any], Any]:
    # compiled validators: ~20x faster than the interpreted jsonschema the package uses, same schemas;
    # formats are not checked (as in the package) and defaults are not filled in
    return fastjsonschema.compile(_schema(message_type, action, version), use_default=False, use_formats=False)


def validate(message_type: int, action: str, payload: Any, version: str) -> None:
    """Raise :class:`OcppFault` if ``payload`` violates the action's schema (request or response)."""
    if action not in _KNOWN_ACTIONS.get(version, ()):  # also keeps a crafted action name out of the file system
        raise OcppFault("NotImplemented", f"{action!r} is not an OCPP {version} action")
    try:
        check = _compiled(message_type, action, version)
    except (OSError, ValueError) as exc:
        raise OcppFault("NotImplemented", f"no schema for {action}") from exc
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = "/".join(str(p) for p in (exc.path or [])[1:]) or "payload"
        raise OcppFault(_code_for(str(exc.rule), version), f"{where}: {exc.message}"[:500]) from None


class Endpoint(_PackageEndpoint):
    """One side of an OCPP-J websocket (charge point or CSMS). ``handlers`` answer the peer's calls."""

    def __init__(self, ident: str, connection: Any, version: str, *, timeout_s: float = 10.0) -> None:
        super().__init__(ident, connection, response_timeout=timeout_s)
        self._ocpp_version = version
        self.version = version
        self.handlers: dict[str, Handler] = {}
        self.after: dict[str, AfterHook] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._request_lock = asyncio.Lock()
        self._inbox: asyncio.Queue[Call | None] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._id_prefix = f"{id(self) & 0xFFFFFF:x}-"
        self._lost = False
        self._tasks: set[asyncio.Task] = set()

    # -- receive side ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Receive until the connection closes; then fail whatever is outstanding."""
        worker = asyncio.create_task(self._serve_calls())
        try:
            while True:
                raw = await self._connection.recv()
                await self.route_message(raw)
        finally:
            self.connection_lost()
            worker.cancel()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.gather(worker, *self._tasks, return_exceptions=True)

    def connection_lost(self) -> None:
        self._lost = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionLost(f"{self.id}: connection closed"))

    async def route_message(self, raw: str | bytes) -> None:
        if isinstance(raw, bytes):
            await self._reply_error("-1", "RpcFrameworkError" if self.version != "1.6" else "FormatViolation",
                                    "binary frames are not OCPP-J")
            return
        try:
            msg = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            self._fail_all(MalformedReply(f"{self.id}: received a frame that is not JSON: {raw[:80]!r}"))
            await self._reply_error("-1", "RpcFrameworkError" if self.version != "1.6" else "FormatViolation",
                                    "frame is not valid JSON")
            return
        uid = msg[1] if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str) else None
        kind = msg[0] if isinstance(msg, list) and msg else None
        if kind == MessageType.Call and isinstance(msg, list) and len(msg) == 4 and uid is not None \
                and isinstance(msg[2], str):
            self._inbox.put_nowait(Call(uid, msg[2], msg[3]))
            return
        if kind == MessageType.CallResult and len(msg) == 3 and uid is not None:
            self._resolve(uid, CallResult(uid, msg[2]))
            return
        if kind == MessageType.CallError and len(msg) == 5 and uid is not None and isinstance(msg[2], str):
            self._resolve(uid, CallError(uid, msg[2], msg[3], msg[4]))
            return
        # malformed: never answer a response with a CALLERROR; fail the request it was meant to answer
        if kind in (MessageType.CallResult, MessageType.CallError) and uid in self._pending:
            self._fail(uid, MalformedReply(f"{self.id}: malformed reply {raw[:120]!r}"))
            return
        if kind in (MessageType.CallResult, MessageType.CallError):
            log.warning("%s: ignoring malformed response %r", self.id, raw[:200])
            return
        if not isinstance(msg, list) or kind not in (2, 3, 4):
            code = ("MessageTypeNotSupported" if self.version != "1.6" and isinstance(kind, int)
                    else "RpcFrameworkError" if self.version != "1.6" else "ProtocolError")
            await self._reply_error(uid or "-1", code, "not an OCPP-J message (type id must be 2, 3 or 4)")
            return
        await self._reply_error(uid or "-1", "FormatViolation" if self.version == "1.6" else "RpcFrameworkError",
                                "a CALL is [2, uniqueId, action, payload]")

    def _resolve(self, uid: str, msg: CallResult | CallError) -> None:
        fut = self._pending.get(uid)
        if fut is None or fut.done():
            log.info("%s: response to unknown or expired request %s", self.id, uid)
            return
        fut.set_result(msg)

    def _fail(self, uid: str, exc: Exception) -> None:
        fut = self._pending.get(uid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        for uid in list(self._pending):
            self._fail(uid, exc)

    async def _serve_calls(self) -> None:
        while True:
            call = await self._inbox.get()
            if call is None:
                return
            try:
                await self.handle_call(call)
            except ConnectionLost:
                return
            except Exception:  # a handler bug must not kill the connection; it was answered InternalError
                log.exception("%s: handling %s failed", self.id, call.action)

    async def handle_call(self, call: Call) -> None:
        """Validate, dispatch to ``handlers``, validate and send the answer, then run the ``after`` hook."""
        handler = self.handlers.get(call.action)
        if handler is None:
            known = call.action in _KNOWN_ACTIONS.get(self.version, set())
            await self._reply_error(call.unique_id, "NotSupported" if known else "NotImplemented",
                                    f"{call.action} is {'not supported' if known else 'unknown'} here")
            return
        try:
            validate(MessageType.Call, call.action, call.payload, self.version)
        except OcppFault as fault:
            await self._reply_error(call.unique_id, fault.code, fault.description, fault.details)
            return
        try:
            answer = await handler(call.payload)
            validate(MessageType.CallResult, call.action, answer, self.version)
        except OcppFault as fault:
            await self._reply_error(call.unique_id, error_code(fault.code, self.version), fault.description,
                                    fault.details)
            return
        except (ConnectionLost, asyncio.CancelledError):
            raise
        except Exception as exc:
            log.exception("%s: handler for %s failed", self.id, call.action)
            await self._reply_error(call.unique_id, "InternalError", f"{type(exc).__name__}: {exc}"[:200])
            return
        await self.send_raw(CallResult(call.unique_id, answer).to_json())
        hook = self.after.get(call.action)
        if hook is not None:
            task = asyncio.create_task(hook(call.payload))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

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
            fut: asyncio.Future = loop.create_future()
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
            raise CallErrorReply(reply.error_code, reply.error_description, reply.error_details)
        if not isinstance(reply.payload, dict):
            raise MalformedReply(f"{self.id}: {action} reply payload is not an object: {reply.payload!r}")
        try:
            validate(MessageType.CallResult, action, reply.payload, self.version)
        except OcppFault as fault:
            raise MalformedReply(f"{self.id}: {action} reply violates the schema ({fault.code}): "
                                 f"{fault.description}") from None
        return reply.payload
