"""A small asyncio HTTP server for the monitor page, its Server-Sent Events and the bench's control endpoints.

Routes: ``GET /`` (page), ``GET /app.js``, ``GET /style.css``, ``GET /events`` (SSE: an ``state`` event with
the whole state as JSON whenever it changes, a comment line every 15 s to keep proxies from closing it),
``GET /api/state`` (the same JSON), ``POST /api/stop`` (emergency stop; answers with each device's safe-state
result). It serves on the bench host's loopback by default and needs no network, no template, no build.

The device values come from the SMX broker: the server subscribes like any SMX client and, a few times per
second, takes what has arrived up to the last step the bench finished publishing.

Hostile or clumsy clients (tests/hostile/test_monitor.py): a malformed request gets a 4xx answer (400 bad
request line, header or Content-Length, 404, 405, 413 body too large, 431 head too large, 501 chunked bodies)
and the connection is closed; a client that sends nothing or half a request is cut off after
``request_timeout_s``; at most ``max_connections`` connections are served at once (Server-Sent-Event streams
included), the next ones get 503. None of this reaches the bench: the handler never raises.

Access (:mod:`cosim.security.webauth`): the page, its script and the ``/auth/`` routes are public; the state
and its event stream need a ``viewer`` (a ``resident`` sees only the devices of their site); the emergency
stop needs an ``operator``, a matching Origin and the session's CSRF token, and is written to the audit log
whoever asks. Without a users file the bench is open to whoever reaches it (loopback), as the local operator,
but a page from another site still cannot stop it (no CSRF token, foreign Origin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from pathlib import Path
from typing import Any, ClassVar
from collections.abc import Callable

from cosim.messaging import Subscription, topics
from cosim.messaging.errors import MessagingError
from cosim.security.webauth import Principal, Reply, WebAuth
from devices.io_loop import IoLoop

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
HTML = ("index.html", "text/html; charset=utf-8")
STATIC = {"/": HTML, "/index.html": HTML, "/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/style.css": ("style.css", "text/css; charset=utf-8")}
PUMP_S = 0.2
KEEPALIVE_S = 15.0
MAX_REQUEST = 16384  # request line + headers
MAX_BODY = 16384  # the control endpoints take no body worth this much
MAX_CONNECTIONS = 64
REQUEST_TIMEOUT_S = 10.0
MAX_TOPICS = 1000  # traffic entries and devices shown: foreign topics on a real broker are unbounded
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 408: "Request Timeout", 413: "Content Too Large",
           431: "Request Header Fields Too Large", 501: "Not Implemented",
           503: "Service Unavailable"}


class _HttpError(Exception):
    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


def _clean(x: Any) -> Any:
    """JSON without NaN/Infinity (browsers reject them)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class MonitorServer:
    """Serves the page and the state; ``snapshot()`` gives the bench state, ``stop(reason)`` the e-stop."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], stop: Callable[[str], dict[str, str]], *,
                 subscription: Subscription | None = None, published_t: Callable[[], int] = lambda: -1,
                 host: str = "127.0.0.1", port: int = 0, page: bool = True, max_connections: int = MAX_CONNECTIONS,
                 request_timeout_s: float = REQUEST_TIMEOUT_S, auth: WebAuth | None = None) -> None:
        self.snapshot = snapshot
        self.auth = auth or WebAuth.open_access()
        self.stop_cb = stop
        self.subscription = subscription
        self.published_t = published_t
        self.host, self.port = host, port
        self.page = page
        self.max_connections = max_connections
        self.request_timeout_s = request_timeout_s
        self.connections = 0  # open right now
        self._writers: set[asyncio.StreamWriter] = set()
        self.refused = {"bad_request": 0, "timeout": 0, "over_capacity": 0}  # what hostile clients cost us
        self.values: dict[str, dict[str, Any]] = {}  # device token -> {"meas"|"set"|"signals": {q: v}, "t_s"}
        self.messages = 0
        self._feeds: list[tuple[list[Subscription], Callable[[], int]]] = []
        self._feed_t: list[int] = []
        self.traffic: dict[str, dict[str, Any]] = {}  # topic -> latest message on the scenario's own brokers
        self._delivered_t = -1
        self._clients: set[asyncio.Queue] = set()
        self._last_payload = ""
        self._io: IoLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._pump: asyncio.Task | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> str:
        self._io = IoLoop("s4g-bench-monitor")
        self._io.run(self._start(), timeout_s=10)
        return self.url

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=MAX_REQUEST)
        self.port = self._server.sockets[0].getsockname()[1]
        self._pump = asyncio.get_running_loop().create_task(self._pump_loop())

    def close(self) -> None:
        io, self._io = self._io, None
        if io is None:
            return

        async def _stop() -> None:
            if self._pump is not None:
                self._pump.cancel()
            for q in list(self._clients):
                self._offer(q, None)  # tells the client's stream to end
            if self._server is not None:
                self._server.close()
                await asyncio.sleep(0)  # let the event streams end cleanly
                for w in list(self._writers):  # and cut the rest (half-open clients): wait_closed waits for them
                    w.transport.abort()
                await self._server.wait_closed()

        try:
            io.run(_stop(), timeout_s=10)
        finally:
            io.close()

    def add_feed(self, subscriptions: list[Subscription], due_t: Callable[[], int]) -> None:
        """Also show what flows on the scenario's own brokers (its ``messaging:`` roles), by topic."""
        self._feeds.append((subscriptions, due_t))
        self._feed_t.append(-1)

    def refresh(self) -> None:
        """Push the state now (e.g. after the run ended); safe from any thread."""
        if self._io is not None:
            asyncio.run_coroutine_threadsafe(self._publish(final=True), self._io.loop)

    # -- state -------------------------------------------------------------------------------------------
    async def _pump_loop(self) -> None:
        while True:
            try:
                await self._publish()
            except Exception:  # the monitor must never take the bench down
                log.exception("monitor: state update failed")
            await asyncio.sleep(PUMP_S)

    async def _deliver_feeds(self) -> None:
        loop = asyncio.get_running_loop()
        for i, (subs, due_t) in enumerate(self._feeds):
            t = due_t()
            if t <= self._feed_t[i]:
                continue
            for sub in subs:
                try:
                    messages = await loop.run_in_executor(None, sub.deliver, t)
                except MessagingError as exc:
                    log.warning("monitor: %s", exc)
                    continue
                for m in messages:
                    if m.topic not in self.traffic and len(self.traffic) >= MAX_TOPICS:
                        continue
                    self.traffic[m.topic] = {"role": m.role_key, "topic": m.topic, "t_s": m.t_s, "sender": m.sender,
                                             "values": {n: r.value if r.value is not None else r.string
                                                        for n, r in m.by_name().items()}}
                    self.messages += 1
            self._feed_t[i] = t

    async def _deliver(self) -> None:
        await self._deliver_feeds()
        sub = self.subscription
        t = self.published_t()
        if sub is None or t <= self._delivered_t:
            return
        try:
            messages = await asyncio.get_running_loop().run_in_executor(None, sub.deliver, t)
        except MessagingError as exc:
            log.warning("monitor: %s", exc)
            return
        self._delivered_t = t
        for m in messages:
            try:
                info = topics.parse_topic(m.topic)
            except MessagingError:
                continue
            kind = "signals" if info.quantity == "signals" else info.kind
            if (info.device or "") not in self.values and len(self.values) >= MAX_TOPICS:
                continue
            entry = self.values.setdefault(info.device or "", {})
            entry[kind or "meas"] = {name: rec.value for name, rec in m.by_name().items()}
            entry["t_s"] = max(entry.get("t_s", -1), m.t_s)
            self.messages += 1

    def state(self) -> dict[str, Any]:
        snap = self.snapshot()
        for dev in snap.get("devices", []):
            flow = self.values.get(dev.get("token", dev["id"]), {})
            dev["meas"] = flow.get("meas", {})
            dev["set"] = flow.get("set", {})
            dev["signals"] = flow.get("signals", {})
            dev["flow_t_s"] = flow.get("t_s")
        snap["broker_messages"] = self.messages
        snap["traffic"] = sorted(self.traffic.values(), key=lambda m: m["topic"])[:200]
        return _clean(snap)

    async def _publish(self, final: bool = False) -> None:
        await self._deliver()
        payload = json.dumps(self.state(), separators=(",", ":"))
        if payload == self._last_payload and not final:
            return
        self._last_payload = payload
        for q in list(self._clients):
            self._offer(q, payload)

    @staticmethod
    def _offer(q: asyncio.Queue, item: str | None) -> None:
        """A slow client gets the newest state, not a backlog."""
        if q.full():
            q.get_nowait()
        q.put_nowait(item)

    # -- HTTP --------------------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.connections > self.max_connections:
                self.refused["over_capacity"] += 1
                await self._send(writer, 503, b"too many connections\n", "text/plain")
                await self._linger(reader, writer)
                return
            try:
                method, path, headers, body = await asyncio.wait_for(self._read_request(reader),
                                                                     timeout=self.request_timeout_s)
            except _HttpError as exc:
                self.refused["bad_request"] += 1
                await self._send(writer, exc.status, f"{exc}\n".encode(), "text/plain")
                await self._linger(reader, writer)
                return
            except TimeoutError:
                self.refused["timeout"] += 1
                await self._send(writer, 408, b"request timeout\n", "text/plain")
                return
            peer = writer.get_extra_info("peername")
            await self._route(method, path, writer, headers, body,
                              f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "")
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the client went away: nothing to answer
        finally:
            self.connections -= 1
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, TimeoutError):
                pass

    @staticmethod
    async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an early answer: stop writing and swallow what the client still sends (briefly, boundedly), so
        closing with unread input does not reset the connection and destroy the answer before it is read."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(1.0):
                swallowed = 0
                while swallowed < (1 << 20) and (chunk := await reader.read(65536)):
                    swallowed += len(chunk)
        except (TimeoutError, ConnectionError, OSError):
            pass

    @staticmethod
    async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str], bytes]:
        """Read one request; (method, path, headers, body) or _HttpError with the status to answer."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(431, "request head too large") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise _HttpError(400, "incomplete request head") from None
            raise
        try:
            lines = head.decode("ascii").split("\r\n")
        except UnicodeDecodeError:
            raise _HttpError(400, "request head is not ASCII") from None
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/") \
                or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
            raise _HttpError(400, "bad request line")
        method, target, _ = parts
        headers: dict[str, str] = {}
        for ln in lines[1:]:
            if not ln:
                continue
            name, colon, value = ln.partition(":")
            if not colon or not name or name != name.strip():
                raise _HttpError(400, "bad header line")
            key = name.lower()
            if key in headers and key in ("content-length", "transfer-encoding"):
                raise _HttpError(400, f"duplicate {name} header")
            headers[key] = value.strip()
        if "transfer-encoding" in headers:
            raise _HttpError(501, "chunked request bodies are not supported")
        raw_length = headers.get("content-length", "0")
        if not (raw_length.isascii() and raw_length.isdigit()) or len(raw_length) > 12:
            raise _HttpError(400, "bad Content-Length")
        length = int(raw_length)
        if length > MAX_BODY:
            raise _HttpError(413, "request body too large")
        body = await reader.readexactly(length) if length else b""
        return method, target.split("?", 1)[0], headers, body

    # which role each route needs (None: public) and the control actions the audit log records
    NEEDS: ClassVar[dict[tuple[str, str], str]] = {("GET", "/events"): "viewer", ("GET", "/api/state"): "viewer",
                                                   ("POST", "/api/stop"): "operator"}
    ACTIONS: ClassVar[dict[tuple[str, str], str]] = {("POST", "/api/stop"): "emergency stop"}

    def _hosts(self) -> tuple[str, ...]:
        return (f"{self.host}:{self.port}", f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    async def _route(self, method: str, path: str, writer: asyncio.StreamWriter, headers: dict[str, str] | None = None,
                     body: bytes = b"", peer: str = "") -> None:
        key = (method, path)
        gate = await asyncio.get_running_loop().run_in_executor(  # scrypt and login back-off stay off the loop
            None, lambda: self.auth.gate(method, path, headers or {}, body, host=self._hosts(),
                                         need=self.NEEDS.get(key), action=self.ACTIONS.get(key), peer=peer))
        if isinstance(gate, Reply):
            await self._send(writer, gate.status, gate.bytes(), "application/json", gate.headers)
            return
        who: Principal = gate
        if method == "GET" and path in STATIC and self.page:
            name, ctype = STATIC[path]
            await self._send(writer, 200, (HERE / name).read_bytes(), ctype)
        elif method == "GET" and path == "/events" and self.page:
            await self._events(writer, who)
        elif method == "GET" and path == "/api/state":
            await self._send(writer, 200, json.dumps(self.visible(self.state(), who)).encode(), "application/json")
        elif method == "POST" and path == "/api/stop":
            report = await asyncio.get_running_loop().run_in_executor(
                None, self.stop_cb, "stop requested over HTTP")
            self.auth.audit(self.ACTIONS[key], who, "ok", peer)
            await self._send(writer, 200, json.dumps({"ok": True, "safe": report}).encode(), "application/json")
        elif method not in ("GET", "POST"):
            await self._send(writer, 405, b"method not allowed\n", "text/plain")
        else:
            await self._send(writer, 404, b"not found\n", "text/plain")

    @staticmethod
    def visible(state: dict[str, Any], who: Principal) -> dict[str, Any]:
        """A resident sees only their own site's devices and traffic."""
        if who.role != "resident":
            return state
        state = dict(state)
        state["devices"] = [d for d in state.get("devices", []) if who.sees_site(d.get("site"))]
        state["traffic"] = [m for m in state.get("traffic", []) if m.get("topic", "").split("/")[1:2] == [who.site]]
        return state

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    headers: dict[str, str] | None = None) -> None:
        reason = REASONS[status]
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Cache-Control: no-store\r\nX-Frame-Options: DENY\r\n{extra}Connection: close\r\n\r\n".encode()
                     + body)
        await self._drain(writer)

    async def _drain(self, writer: asyncio.StreamWriter) -> None:
        """A client that stops reading is cut off (TimeoutError) instead of holding a connection for ever."""
        await asyncio.wait_for(writer.drain(), timeout=self.request_timeout_s)

    async def _events(self, writer: asyncio.StreamWriter, who: Principal | None = None) -> None:
        filtered = who is not None and who.role == "resident"
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n"
                     b"Connection: keep-alive\r\n\r\nretry: 1000\n\n")
        queue: asyncio.Queue = asyncio.Queue(maxsize=1)
        queue.put_nowait(self._last_payload or json.dumps(self.state()))
        self._clients.add(queue)
        try:
            while True:
                try:
                    payload = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    writer.write(b": keepalive\n\n")
                else:
                    if payload is None:
                        return
                    if filtered and who is not None:  # filtered: a resident signed in
                        payload = json.dumps(self.visible(json.loads(payload), who), separators=(",", ":"))
                    writer.write(b"event: state\ndata: " + payload.encode() + b"\n\n")
                await self._drain(writer)
        finally:
            self._clients.discard(queue)
