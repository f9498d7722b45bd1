"""A small asyncio HTTP server for the monitor page, its Server-Sent Events and the bench's control endpoints.

Routes: ``GET /`` (page), ``GET /app.js``, ``GET /style.css``, ``GET /events`` (SSE: an ``state`` event with
the whole state as JSON whenever it changes, a comment line every 15 s to keep proxies from closing it),
``GET /api/state`` (the same JSON), ``POST /api/stop`` (emergency stop; answers with each device's safe-state
result). It serves on the bench host's loopback by default and needs no network, no template, no build.

The device values come from the SMX broker: the server subscribes like any SMX client and, a few times per
second, takes what has arrived up to the last step the bench finished publishing.

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
from typing import Any, Callable

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
MAX_REQUEST = 16384


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
                 host: str = "127.0.0.1", port: int = 0, page: bool = True, auth: WebAuth | None = None) -> None:
        self.snapshot = snapshot
        self.auth = auth or WebAuth.open_access()
        self.stop_cb = stop
        self.subscription = subscription
        self.published_t = published_t
        self.host, self.port = host, port
        self.page = page
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
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
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
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
            if len(head) > MAX_REQUEST:
                raise ValueError("request too large")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(min(length, MAX_REQUEST)) if length else b""
            path = target.split("?", 1)[0]
            peer = writer.get_extra_info("peername")
            await self._route(method, path, writer, headers, body, f"{peer[0]}:{peer[1]}" if peer else "")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError, ValueError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass

    # which role each route needs (None: public) and the control actions the audit log records
    NEEDS = {("GET", "/events"): "viewer", ("GET", "/api/state"): "viewer", ("POST", "/api/stop"): "operator"}
    ACTIONS = {("POST", "/api/stop"): "emergency stop"}

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
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  405: "Method Not Allowed"}[status]
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                     f"Cache-Control: no-store\r\nX-Frame-Options: DENY\r\n{extra}Connection: close\r\n\r\n".encode()
                     + body)
        await writer.drain()

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
                    if filtered:
                        payload = json.dumps(self.visible(json.loads(payload), who), separators=(",", ":"))
                    writer.write(b"event: state\ndata: " + payload.encode() + b"\n\n")
                await writer.drain()
        finally:
            self._clients.discard(queue)
