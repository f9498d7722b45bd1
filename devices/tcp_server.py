"""The TCP server every virtual device shares: free loopback port, one task per connection, a connection cap, an
idle (half-open) timeout, a clean stop and counters.

A protocol server gives :class:`TcpServer` a handler ``async def handle(conn: ServedConnection)`` and reads through
``conn`` (``read``, ``readexactly``, ``readuntil``): a read that waits longer than the connection's
``idle_timeout_s`` ends the connection (a peer that connected and went quiet, or stopped in the middle of a frame,
cannot hold a slot for ever). ``conn.idle_timeout_s = None`` lifts it for a connection that may legitimately stay
silent (a CAN listener). Beyond ``max_connections`` a new connection is closed at once.

Counters (``counters``, a Counter): ``accepted``, ``refused`` (over the cap), ``timed_out`` (idle), ``errored``
(the handler raised something unexpected: logged, the server keeps serving), ``closed`` and whatever the protocol
counts with ``conn.count(...)`` / ``server.count(...)``; every rejection a protocol makes (an exception reply, an
error element, a 4xx) is counted under ``rejected`` and its own name.

TLS (``start(..., ssl=context)``, contexts from :mod:`devices.tls`): the handshake runs inside the connection's
task, bounded by ``TLS_HANDSHAKE_S``, so a peer without a valid certificate (none, another CA, revoked,
expired) is counted (``tls_refused``) and closed before the protocol sees a byte; ``conn.identity`` is the
verified peer (name, role, site) the protocol may authorise by.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections import Counter
from collections.abc import Awaitable, Callable

from devices.tls import PeerIdentity, peer_identity

log = logging.getLogger(__name__)

MAX_CONNECTIONS = 16
IDLE_TIMEOUT_S = 300.0
STOP_GRACE_S = 2.0
TLS_HANDSHAKE_S = 10.0


class IdleTimeout(Exception):
    """No byte arrived within the connection's idle timeout."""


class ServedConnection:
    """One accepted connection: its streams, reads bounded by the idle timeout, and the server's counters."""

    def __init__(self, server: TcpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.idle_timeout_s: float | None = server.idle_timeout_s
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        #: the verified TLS client (None without TLS or without a client certificate)
        self.identity: PeerIdentity | None = peer_identity(writer.get_extra_info("ssl_object"))

    async def _bounded(self, aw: Awaitable[bytes]) -> bytes:
        if self.idle_timeout_s is None:
            return await aw
        try:
            return await asyncio.wait_for(aw, self.idle_timeout_s)
        except TimeoutError:
            raise IdleTimeout(f"{self.peer}: nothing received for {self.idle_timeout_s:g} s") from None

    async def read(self, n: int = 4096) -> bytes:
        """Up to ``n`` bytes; b"" at the end of the connection."""
        return await self._bounded(self.reader.read(n))

    async def readexactly(self, n: int) -> bytes:
        return await self._bounded(self.reader.readexactly(n))

    async def readuntil(self, separator: bytes) -> bytes:
        return await self._bounded(self.reader.readuntil(separator))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    def count(self, name: str, rejected: bool = True) -> None:
        self.server.count(name, rejected)

    def close(self) -> None:
        self.writer.close()


Handler = Callable[[ServedConnection], Awaitable[None]]


class TcpServer:
    def __init__(self, handler: Handler, *, name: str = "server", max_connections: int = MAX_CONNECTIONS,
                 idle_timeout_s: float | None = IDLE_TIMEOUT_S, limit: int = 2**16) -> None:
        self.handler = handler
        self.name = name
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self.limit = limit
        self.port = 0
        self.host = "127.0.0.1"
        self.ssl: ssl_module.SSLContext | None = None
        self.counters: Counter[str] = Counter()
        self.connections: set[ServedConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    @property
    def serving(self) -> bool:
        return self._server is not None

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl: ssl_module.SSLContext | None = None) -> int:
        """Listen (port 0: a free one chosen by the OS); return the bound port. OSError if the port is taken.
        With ``ssl`` every connection first completes a TLS handshake (see the module doc)."""
        if self._server is None:
            self.ssl = ssl
            try:
                self._server = await asyncio.start_server(self._accept, host, port, limit=self.limit)
            except OSError as exc:  # say which server and where: a serve command prints this and exits 2
                raise OSError(exc.errno, f"cannot serve {self.name} on {host}:{port}: {exc.strerror or exc}") \
                    from exc
            self.host, self.port = host, self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Stop listening, close every connection and wait for their tasks; safe to call twice."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.connections):
            conn.close()
        # Closing the sockets ends each handler by itself (EOF); cancelling instead trips asyncio's stream
        # callback in Python 3.12.1 into logging CancelledError, so only stragglers are cancelled.
        pending = [t for t in self._tasks if not t.done()]
        if pending:
            _, late = await asyncio.wait(pending, timeout=STOP_GRACE_S)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def open_connections(self) -> int:
        return len(self.connections)

    def count(self, name: str, rejected: bool = True) -> None:
        self.counters[name] += 1
        if rejected:
            self.counters["rejected"] += 1

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._server is None or len(self.connections) >= self.max_connections:
            self.counters["refused"] += 1
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        if self.ssl is not None:
            try:
                await asyncio.wait_for(writer.start_tls(self.ssl), TLS_HANDSHAKE_S)
            except (ssl_module.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
                self.count("tls_refused")
                log.info("%s: TLS handshake with %s failed: %s", self.name, writer.get_extra_info("peername"), exc)
                self._tasks.discard(task)
                writer.close()
                return
        conn = ServedConnection(self, reader, writer)
        self.connections.add(conn)
        self.counters["accepted"] += 1
        try:
            await self.handler(conn)
        except IdleTimeout as exc:
            self.counters["timed_out"] += 1
            log.debug("%s: %s", self.name, exc)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError, ssl_module.SSLError):
            pass  # the peer went away, or the server stops
        except Exception:  # a bug in one connection must not take the others (or the server) down
            self.counters["errored"] += 1
            log.exception("%s: connection %s failed", self.name, conn.peer)
        finally:
            self.connections.discard(conn)
            self._tasks.discard(task)
            self.counters["closed"] += 1
            writer.close()
