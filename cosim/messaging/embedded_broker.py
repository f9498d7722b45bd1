"""The embedded MQTT 3.1.1 broker on a free loopback port, in a child process or a background thread.

This is the default broker of every role mapped to ``embedded``: nothing to install, nothing left behind.
The broker binds ``127.0.0.1:0`` so the kernel picks a free port (no race between choosing and binding),
and ``stop()`` shuts it down cleanly.

A plain broker runs in a child process of its own (``serve`` below): in a background thread every message it
relays competed with the co-simulation for the interpreter lock -- in its own process it runs beside the
simulation on another core. The child serves with the small broker of :mod:`.mini_broker` (amqtt cost ~10x
the CPU per relayed message and a socket write per packet; a step waits for its messages to come back).
The child binds the port, reports it on stdout, and serves until its stdin closes: ``stop()`` closes it, and so
does the end of the parent, however it ends (no orphan broker). It runs in its own session, so a Ctrl-C meant
for the run does not stop it mid-run.
A secure broker (below) is amqtt in a background thread of this process: its policy object and the counts of what
it refused live here (``process=False`` gives a plain amqtt broker in a thread too).

    with EmbeddedBroker() as broker:
        print(broker.url)        # mqtt://127.0.0.1:40123

``EmbeddedBroker(security=BrokerSecurity(pki, policy))`` serves TLS only (the broker's certificate from the PKI),
requires a client certificate that verifies against the PKI and its CRL, and applies the policy through the
plugins of :mod:`.broker_auth` (identity from the certificate, topic ACL), as Mosquitto does in production.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import subprocess
import sys
import threading
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devices import tls

from .errors import BrokerUnavailable

log = logging.getLogger(__name__)

# amqtt logs every connection at INFO; keep it quiet unless the application configured that logger itself.
_AMQTT_LOGGERS = ("amqtt", "transitions")


def _quiet_amqtt() -> None:
    for name in _AMQTT_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


@dataclass(frozen=True)
class BrokerSecurity:
    """TLS and policy of a secure embedded broker: the PKI directory, the broker's identity in it, and the
    policy object (:class:`cosim.security.broker_policy.BrokerPolicy`)."""

    pki: str | Path
    policy: Any
    identity: str = "broker"

    def context(self) -> ssl.SSLContext:
        return tls.server_context(tls.TlsFiles.from_pki(self.pki, self.identity))


class EmbeddedBroker:
    """The small broker in a child process (``process=True``, the default without ``security``) or amqtt in its
    own thread and event loop. ``start()`` returns once it listens; ``port`` is then set."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, name: str = "embedded",
                 security: BrokerSecurity | None = None, process: bool | None = None) -> None:
        if process and security is not None:
            raise ValueError("a secure embedded broker runs in this process (its policy and counts live here)")
        self.security = security
        self.process = security is None if process is None else process
        self._child: subprocess.Popen[str] | None = None
        self._child_ready = False  # the child reported its port
        self._policy_key: str | None = None
        self.host = host
        self.port = port
        self._requested_port = port
        self.name = name
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker: Any = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        if self._child is not None:
            return self._child.poll() is None
        return self._thread is not None and self._thread.is_alive() and self._error is None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.security else 'mqtt'}://{self.host}:{self.port}"

    @property
    def counts(self) -> dict[str, int]:
        """Refused connections, publications, subscriptions and deliveries (secure brokers)."""
        from .broker_auth import COUNTS

        return dict(COUNTS.get(self._policy_key or "", {}))

    def launch(self) -> EmbeddedBroker:
        """Start a child-process broker without waiting for it (``start()`` waits): its interpreter starts while
        the caller goes on building. A thread broker starts in ``start()``."""
        if self.process and self._child is None:
            self._launch_child()
        return self

    def start(self, timeout: float = 10.0) -> EmbeddedBroker:
        if self.process:
            if self._child is None:
                self._launch_child()
            return self if self._child_ready else self._await_child(timeout)
        if self._thread is not None:
            return self
        _quiet_amqtt()
        self.port = self._requested_port
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"amqtt-{self.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise BrokerUnavailable(f"embedded broker did not start within {timeout} s")
        if self._error is not None:
            err = self._error
            self._join(timeout)
            raise BrokerUnavailable(f"embedded broker failed to start: {err}") from err
        log.debug("embedded broker %s listening on %s", self.name, self.url)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._child is not None:
            self._stop_child(timeout)
            return
        thread, loop = self._thread, self._loop
        if thread is None:
            return
        if loop is not None and loop.is_running() and self._broker is not None:
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            try:
                fut.result(timeout)
            except Exception as exc:  # a failed shutdown must not hide the stop
                log.warning("embedded broker %s: shutdown error: %s", self.name, exc)
        if loop is not None and loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        self._join(timeout)
        self._unregister()

    def _unregister(self) -> None:
        if self._policy_key is not None:
            from .broker_auth import unregister

            unregister(self._policy_key)

    def _join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("embedded broker thread %s did not end within %s s", self._thread.name, timeout)
        self._thread = None
        self._broker = None

    # -- the child process ----------------------------------------------------------------------------------
    def _launch_child(self) -> None:
        cmd = [sys.executable, "-c", "import sys; from cosim.messaging.embedded_broker import serve; "
               f"sys.exit(serve({self.host!r}, {self._requested_port}))"]
        # the child imports this package from where this process found it (an uninstalled checkout too)
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
        self.port = self._requested_port
        self._child = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                       start_new_session=True)

    def _await_child(self, timeout: float) -> EmbeddedBroker:
        child = self._child
        assert child is not None and child.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(child.stdout, selectors.EVENT_READ)
            line = child.stdout.readline() if sel.select(timeout) else ""
        if not line.startswith("port "):
            self._stop_child(timeout)
            reason = line.strip() or f"no answer within {timeout} s"
            raise BrokerUnavailable(f"embedded broker did not start: {reason}")
        self.port = int(line.split()[1])
        self._child_ready = True
        log.debug("embedded broker %s listening on %s (process %d)", self.name, self.url, child.pid)
        return self

    def _stop_child(self, timeout: float) -> None:
        child, self._child = self._child, None
        self._child_ready = False
        if child is None:
            return
        try:
            if child.stdin is not None:
                child.stdin.close()  # the child's signal to shut the broker down and exit
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker process %d did not end within %s s: killed", child.pid, timeout)
            child.kill()
            child.wait()
        finally:
            if child.stdout is not None:
                child.stdout.close()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    # -- the broker thread -----------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        if self.security is not None:
            from . import broker_auth

            files = tls.TlsFiles.from_pki(self.security.pki, self.security.identity)
            self._policy_key = self._policy_key or broker_auth.register(self.security.policy)
            plugin = {"policy": self._policy_key}
            return {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}", "ssl": True,
                                          "cafile": str(files.ca), "certfile": str(files.cert),
                                          "keyfile": str(files.key)}},
                "plugins": {"cosim.messaging.broker_auth.CertificateAuthPlugin": plugin,
                            "cosim.messaging.broker_auth.TopicPolicyPlugin": plugin},
            }
        return {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self._requested_port}"}},
            # only what we need: anonymous access; no $SYS publisher, no packet logging
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            self._close_loop(loop)
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            self._close_loop(loop)

    async def _start(self) -> None:
        from amqtt.broker import Broker

        context = self.security.context() if self.security is not None else None

        class _Broker(Broker):  # type: ignore[misc]  # amqtt ships no type information
            # amqtt's own context accepts clients without a certificate and checks no CRL: ours does both
            def _create_ssl_context(self, listener: Any) -> ssl.SSLContext:
                assert context is not None
                return context

        broker = _Broker(self._config())
        await broker.start()
        self._broker = broker
        if self._requested_port == 0:
            server = broker._servers.get("default")  # amqtt 0.12 keeps the asyncio.Server here
            sockets = getattr(getattr(server, "instance", None), "sockets", None)
            if not sockets:
                raise BrokerUnavailable("cannot read the port the embedded broker bound")
            self.port = int(sockets[0].getsockname()[1])

    async def _shutdown(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()

    @staticmethod
    def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
        try:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def serve(host: str, port: int) -> int:
    """The child process: the small broker (``mini_broker``) until stdin closes; its port (or the error) on
    stdout."""
    from .mini_broker import serve_until

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def release() -> None:
            if not stop.done():
                stop.set_result(None)

        def wait_for_parent() -> None:
            sys.stdin.read()  # until the parent closes it (stop(), or the parent ended)
            loop.call_soon_threadsafe(release)

        threading.Thread(target=wait_for_parent, daemon=True).start()
        await serve_until(host, port, stop, lambda p: print(f"port {p}", flush=True))

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"error cannot listen on {host}:{port}: {exc}", flush=True)
        return 1
    return 0
