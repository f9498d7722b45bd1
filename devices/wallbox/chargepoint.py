"""The virtual charge point's shared core: a wallbox model behind OCPP as a websocket client of a CSMS.

It connects to ``<csms_url>/<cp_id>`` with the version's subprotocol, boots, reports status and transactions
as the model's state changes (``advance`` is called by the co-simulation clock or by a wall clock), sends
meter values at the configured interval, obeys charging profiles (the composite schedule of
:mod:`devices.wallbox.profiles` limits the model's charging power, split at period boundaries inside a step)
and answers the CSMS's requests. What differs between OCPP 1.6J and 2.0.1 (message shapes, the handler
table) lives in :mod:`devices.wallbox.chargepoint16` and :mod:`devices.wallbox.chargepoint201`.

One run-loop policy, whatever goes wrong: a refused or malformed BootNotification answer, a dropped link, a
frame that cannot be decoded, a failing handler or a bug in the sender all end the connection (never the
loop); the charge point backs off (:class:`devices.backoff.Backoff`, jittered by its id) and connects again,
until :meth:`stop`. Transaction messages wait in the :class:`~devices.wallbox.outbox.Outbox` until confirmed.

Test hooks (used by the conformance harness): ``silent`` (keep the socket, answer nothing) and
``corrupt_next`` (the next CALLRESULT is cut in half).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar
from collections.abc import Callable, Mapping
from urllib.parse import quote

import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from devices import tls
from devices.backoff import Backoff
from devices.wallbox import profiles as pf
from devices.wallbox.certificates import CertificateRefused
from devices.wallbox.model import WallboxBank, WallboxConfig
from devices.wallbox.outbox import Outbox, OutMsg
from devices.wallbox.security import OcppSecurityError, StationSecurity, basic_auth_header, check_password
from devices.wallbox.rpc import SUBPROTOCOL, CallErrorReply, ConnectionLost, Endpoint, MalformedReply, Payload

log = logging.getLogger(__name__)

CONNECTOR = 1


class BootRefused(Exception):
    """The CSMS did not accept our BootNotification (CALLERROR, malformed answer, no answer)."""


@dataclass
class LocalTx:
    local_id: str
    session: int
    start: datetime
    start_register_wh: float
    remote_id: str | None = None  # 1.6: assigned by the CSMS; 2.0.1: ours (= local_id)
    seq_no: int = 0
    id_tag: str = "S4G"
    charging_state: str = ""
    remote_start_id: int | None = None
    trigger: str = "CablePluggedIn"


class _FaultyConnection:
    """Wraps the websocket for the test hooks (silent device, corrupt reply)."""

    def __init__(self, ws: ClientConnection, cp: VirtualChargePoint) -> None:
        self.ws, self.cp = ws, cp

    async def recv(self) -> str | bytes:
        while True:
            msg = await self.ws.recv()
            if not self.cp.silent:
                return msg

    async def send(self, text: str) -> None:
        if self.cp.silent:
            return
        if self.cp.corrupt_next and text.startswith("[3,"):
            self.cp.corrupt_next = False
            text = text[: max(len(text) // 2, 3)]
        await self.ws.send(text)


class VirtualChargePoint:
    """Base: connection, outbox, model stepping, profiles. Subclasses speak one OCPP version."""

    version: ClassVar[str] = ""
    #: OCPP action -> method answering it, and action -> method run after the answer went out
    HANDLERS: ClassVar[dict[str, str]] = {}
    AFTER: ClassVar[dict[str, str]] = {}

    def __init__(self, bank: WallboxBank, cfg: WallboxConfig, *, cp_id: str, csms_url: str,
                 clock: Callable[[], datetime], clock_at: Callable[[float], datetime] | None = None,
                 id_tag: str = "S4G", backoff_s: tuple[float, float] = (0.05, 5.0),
                 call_timeout_s: float = 10.0, drain_timeout_s: float = 10.0,
                 security: StationSecurity | None = None) -> None:
        self.bank, self.cfg = bank, cfg
        #: security profile, password and TLS context (devices.wallbox.security); the password and the profile
        #: can be changed by the CSMS (AuthorizationKey / BasicAuthPassword, SecurityProfile) for the next connect
        self.security = security or StationSecurity()
        self.cp_id = cp_id
        self.csms_url = csms_url
        self.clock = clock
        self.clock_at = clock_at
        self.id_tag = id_tag
        self.backoff_s = backoff_s
        self.call_timeout_s = call_timeout_s
        self.drain_timeout_s = drain_timeout_s
        self.station = pf.Station(max_current_a=cfg.max_current_a, phases=cfg.phases, voltage_v=cfg.voltage_v,
                                  max_stack_level=cfg.max_stack_level, max_profiles=cfg.max_profiles,
                                  max_periods=cfg.max_periods, version=self.version)
        self.profiles: list[pf.Profile] = []
        self.settings: dict[str, Any] = {"meter_interval_s": cfg.meter_interval_s,
                                         "heartbeat_interval_s": cfg.heartbeat_interval_s,
                                         "tx_attempts": cfg.tx_message_attempts,
                                         "tx_retry_interval_s": cfg.tx_message_retry_interval_s,
                                         "security_profile": self.security.profile,
                                         "authorization_key": self.security.password}
        self.tx: LocalTx | None = None
        self.outbox = Outbox()
        self.reported_status: int | None = None
        self.silent = False
        self.corrupt_next = False
        self.boots = 0
        #: what happened to the connection: connects, disconnects by cause, boot refusals, ...
        self.stats: Counter[str] = Counter()
        self.last_disconnect: str = ""
        self._stop_reason: str | None = None
        self._pending_start_profile: Any = None  # a TxProfile given with a remote start
        self._remote_start_id: int | None = None  # 2.0.1 remoteStartId of the next transaction
        self._unavailable_after_tx = False
        self._reset_after_tx = False  # 2.0.1 Reset OnIdle during a transaction
        self._last_sent_t = -math.inf
        self._ws: ClientConnection | None = None
        self.endpoint: Endpoint | None = None
        self._booted = asyncio.Event()
        self._wake_sender = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_meter_t: float | None = None
        self._last_heartbeat_t = 0.0
        self._rng = random.Random(cp_id)
        self._background: set[asyncio.Task[None]] = set()
        self._tls: tuple[int, ssl.SSLContext] | None = None  # (certificate generation, its client context)

    # -- lifecycle -------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name=f"cp-{self.cp_id}")

    async def stop(self) -> None:
        self._stopping = True
        task, self._task = self._task, None
        if self._ws is not None:
            try:
                await asyncio.wait_for(self._ws.close(), 2)
            except Exception:  # already gone
                pass
        for t in (task, *self._background):
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in (task, *self._background) if t is not None), return_exceptions=True)
        self._ws = None
        self._booted.clear()

    @property
    def running(self) -> bool:
        """The run loop is alive (it ends only by :meth:`stop`)."""
        return self._task is not None and not self._task.done()

    @property
    def connected(self) -> bool:
        return self._booted.is_set() and self._ws is not None

    def open_connections(self) -> int:
        ws = self._ws
        return int(ws is not None and ws.state == websockets.protocol.State.OPEN)

    async def wait_booted(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._booted.wait(), timeout_s)

    @property
    def stats_all(self) -> Counter[str]:
        """Connection, outbox and RPC counts together."""
        out = Counter(self.stats)
        out.update(self.outbox.stats)
        return out

    async def _run(self) -> None:
        url = self.csms_url.rstrip("/") + "/" + quote(self.cp_id, safe="")
        backoff = Backoff(*self.backoff_s)
        while not self._stopping:
            try:
                async with connect(url, subprotocols=[SUBPROTOCOL[self.version]], open_timeout=5,
                                   ping_interval=20, ping_timeout=20, close_timeout=2, max_size=1 << 20,
                                   **self._security_options()) as ws:
                    self._ws = ws
                    self.stats["connects"] += 1
                    await self._session(ws, backoff)
                cause = "closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every error class: count, back off, connect again; never a silent stop
                cause = type(exc).__name__
                self.last_disconnect = f"{cause}: {exc}"[:300]
                level = logging.INFO if isinstance(exc, (OSError, TimeoutError, ConnectionLost,
                                                         websockets.exceptions.WebSocketException)) else logging.WARNING
                log.log(level, "%s: connection to %s ended: %s", self.cp_id, url, self.last_disconnect)
            finally:
                self._ws = None
                self._booted.clear()
                self.endpoint = None
                self._progress.set()
            self.stats[f"disconnects_{cause}"] += 1
            if self._stopping:
                return
            backoff.failed()  # with jitter: a restarting CSMS is not hammered by all its stations at once
            wait = max(backoff.retry_at - time.monotonic(), 0.0) * (0.75 + 0.5 * self._rng.random())
            await asyncio.sleep(wait)

    def _security_options(self) -> dict[str, Any]:
        """TLS context and the Authorization header of the current profile and password."""
        opts: dict[str, Any] = {}
        certs = self.security.certificates
        if certs is not None:  # profile 3: the certificate we hold now (a renewal applies from the next connect)
            if self._tls is None or self._tls[0] != certs.generation:
                self._tls = (certs.generation, tls.client_context(certs.files()))
            opts["ssl"] = self._tls[1]
        elif self.security.ssl is not None:
            opts["ssl"] = self.security.ssl
        password = self.settings.get("authorization_key")
        if self.settings["security_profile"] in (1, 2) and password:
            opts["additional_headers"] = {"Authorization": basic_auth_header(self.cp_id, password)}
        return opts

    def change_security(self, key: str, value: str) -> str:
        """A CSMS's change of the profile or the password (1.6 SecurityProfile / AuthorizationKey, 2.0.1
        SecurityCtrlr.BasicAuthPassword): 'Accepted' or 'Rejected'. The profile may only go up (whitepaper:
        a lower one is rejected), and to 2/3 only with TLS configured; both apply from the next connection."""
        if key == "authorization_key":
            try:
                check_password(value)
            except OcppSecurityError:
                return "Rejected"
            self.settings["authorization_key"] = value
            return "Accepted"
        try:
            profile = int(value)
        except ValueError:
            return "Rejected"
        if profile not in (1, 2, 3) or profile < self.settings["security_profile"] \
                or (profile >= 2 and self.security.ssl is None) \
                or (profile in (1, 2) and not self.settings.get("authorization_key")):
            return "Rejected"
        self.settings["security_profile"] = profile
        return "Accepted"

    async def _session(self, ws: ClientConnection, backoff: Backoff) -> None:
        ep = Endpoint(self.cp_id, _FaultyConnection(ws, self), self.version, timeout_s=self.call_timeout_s,
                      stats=self.stats)
        ep.handlers.update({action: getattr(self, name) for action, name in self.HANDLERS.items()})
        ep.after.update({action: getattr(self, name) for action, name in self.AFTER.items()})
        receiver = asyncio.create_task(ep.run())
        sender: asyncio.Task[None] | None = None
        try:
            await self._boot(ep, receiver)
            backoff.succeeded()
            self.endpoint = ep
            self.boots += 1
            # stale statuses are superseded by the current one; transaction messages stay queued
            self.outbox.keep_transaction_messages()
            self.reported_status = None
            self._booted.set()
            self._progress.set()
            self._send_status(self._now(), force=True)
            sender = asyncio.create_task(self._send_loop(ep))
            done, _ = await asyncio.wait({receiver, sender}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises what ended the session (a lost connection, a bug in the sender)
        finally:
            self._booted.clear()
            self.endpoint = None
            for running in (sender, receiver):
                if running is not None:
                    running.cancel()
            await asyncio.gather(*(t for t in (sender, receiver) if t is not None), return_exceptions=True)
            self._progress.set()

    async def _boot(self, ep: Endpoint, receiver: asyncio.Task[None]) -> None:
        """BootNotification until Accepted (Pending/Rejected: again after the interval). Any other answer
        ends the connection: the run loop backs off and connects again."""
        while True:
            try:
                reply = await self._race(ep.request("BootNotification", self._boot_payload()), receiver)
            except (CallErrorReply, MalformedReply, TimeoutError) as exc:
                self.stats["boot_refused"] += 1
                raise BootRefused(f"BootNotification: {exc}") from None
            interval = int(reply.get("interval", 0))
            if reply["status"] == "Accepted":
                if interval > 0:
                    self.settings["heartbeat_interval_s"] = interval
                return
            self.stats[f"boot_{reply['status']}"] += 1
            await self._race(asyncio.sleep(min(interval, 3600) if interval > 0 else 10), receiver)

    @staticmethod
    async def _race(coro: Any, receiver: asyncio.Task[None]) -> Any:
        """Await ``coro`` unless the connection dies first."""
        task = asyncio.ensure_future(coro)
        done, _ = await asyncio.wait({task, receiver}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ConnectionLost("connection closed")

    # -- outbox ----------------------------------------------------------------------------------------------
    def enqueue(self, msg: OutMsg) -> None:
        if not msg.persistent and not self.connected:
            return  # status and heartbeats are not buffered: the status after the next boot supersedes them
        self.outbox.append(msg)
        self._last_sent_t = float(self.bank.t_s)
        self._wake_sender.set()

    async def _send_loop(self, ep: Endpoint) -> None:
        while True:
            msg = self.outbox.head()
            if msg is None:
                self._wake_sender.clear()
                await self._wake_sender.wait()
                continue
            payload = msg.build()
            if payload is None:
                self.outbox.skipped(msg, "void")
                self._progress.set()
                continue
            try:
                reply = await ep.request(msg.action, payload)
            except TimeoutError:  # no failure to process: send it again (OCPP: until it is answered)
                log.info("%s: %s not answered, sending it again", self.cp_id, msg.action)
                continue
            except ValueError as exc:  # we built an invalid message: a bug, never sent again
                log.error("%s: %s", self.cp_id, exc)
                self.outbox.skipped(msg, "invalid")
                self._progress.set()
                continue
            except (CallErrorReply, MalformedReply) as exc:  # the CSMS failed to process it
                msg.failures += 1
                if msg.persistent and msg.failures < int(self.settings["tx_attempts"]):
                    log.info("%s: %s refused (%s), attempt %d", self.cp_id, msg.action, exc, msg.failures)
                    await asyncio.sleep(float(self.settings["tx_retry_interval_s"]) * msg.failures)
                    continue
                log.warning("%s: %s refused %d times, skipped: %s", self.cp_id, msg.action, msg.failures, exc)
                self.outbox.skipped(msg, "refused")
                self._progress.set()
                continue
            self.outbox.confirmed(msg)
            if msg.on_result is not None:
                msg.on_result(reply)
            self._progress.set()

    async def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until the CSMS has answered everything queued; returns at once when there is no connection
        (the outbox keeps the transaction messages). A connection that is still booting is waited for.
        False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.drain_timeout_s if timeout_s is None else timeout_s)
        while True:
            if self._ws is None:
                return True
            if self._booted.is_set() and not self.outbox:
                return True
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), max(deadline - loop.time(), 0))
            except TimeoutError:
                return False

    # -- clock and model -------------------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self.clock()

    def _tx_context(self) -> pf.Tx:
        if self.tx is None:
            return pf.NO_TX
        return pf.Tx(id=self.tx.remote_id or self.tx.local_id, start=self.tx.start)

    def _phases_in_use(self) -> int:
        return int(self.bank.caps()[0][0])

    async def advance(self, t_s: float, dt_s: float, env: Mapping[str, float]) -> None:
        """One co-simulation step: EV plug/unplug, charging under the composite schedule, messages."""
        start = self._now_at(t_s)
        arrays = {k: np.array([v if v is not None else 0.0], dtype=float) for k, v in env.items()}
        self.bank.apply_env(t_s, arrays)
        self._emit_changes(start, trigger="CablePluggedIn")
        self._integrate(t_s, dt_s, start)
        end = self._now_at(t_s + dt_s)
        self._emit_changes(end, trigger="ChargingStateChanged")
        self._periodic(t_s + dt_s, end)
        await self.drain()

    def _now_at(self, t_s: float) -> datetime:
        return self.clock_at(t_s) if self.clock_at is not None else self._now()

    def _integrate(self, t_s: float, dt_s: float, start: datetime) -> None:
        """Charge over the step, re-evaluating the composite limit at every profile breakpoint inside it."""
        tx = self._tx_context()
        cuts = [c for c in pf.next_change(self.profiles, start, dt_s, tx) if 0 < c < dt_s]
        edges = [0.0, *cuts, float(dt_s)]
        for k, (a, b) in enumerate(itertools.pairwise(edges)):
            t = start + timedelta(seconds=a)
            limit_w = pf.limit_at(self.profiles, t, self.station, connector=CONNECTOR, tx=tx, unit="W",
                                  phases_in_use=self._phases_in_use())
            self.bank.setpoints["p_max_w"][0] = limit_w
            self.bank.setpoints["i_max_a"][0] = self.cfg.max_current_a
            self.bank.integrate(t_s + a, b - a, accumulate=k > 0)
        self.bank.t_s = t_s + dt_s

    def _periodic(self, t_end: float, when: datetime) -> None:
        interval = int(self.settings["meter_interval_s"])
        if self.tx is not None and interval > 0 \
                and (self._last_meter_t is None or t_end - self._last_meter_t >= interval - 1e-9):
            self._last_meter_t = t_end
            self._send_periodic_meter(when)
        hb = int(self.settings["heartbeat_interval_s"])
        # a heartbeat only when nothing else was sent within the interval (both versions allow skipping it)
        if self.connected and hb > 0 and t_end - max(self._last_heartbeat_t, self._last_sent_t) >= hb:
            self._last_heartbeat_t = t_end
            self.enqueue(OutMsg("Heartbeat", dict, persistent=False))

    def _emit_changes(self, when: datetime, trigger: str) -> None:
        """Report what changed in the model since the last report: transaction end/start, then status."""
        b = self.bank
        if self.tx is not None and (not b.tx_active[0] or int(b.sessions[0]) != self.tx.session):
            reason = self._stop_reason or "EVDisconnected"
            self._stop_reason = None
            self._stop_tx(when, reason)
            self.profiles = pf.end_transaction(self.profiles, CONNECTOR)
            if self._unavailable_after_tx:
                self._unavailable_after_tx = False
                b.set_available(0, False)
            if self._reset_after_tx:  # 2.0.1 Reset OnIdle, answered Scheduled while the transaction ran
                self._reset_after_tx = False
                self._later(self.reset())
        if self.tx is None and b.tx_active[0]:
            self.tx = LocalTx(local_id=str(uuid.uuid4()), session=int(b.sessions[0]), start=when,
                              start_register_wh=float(b.e_wh[0]), id_tag=self.id_tag, trigger=trigger)
            self._last_meter_t = None
            self._start_tx(when)
        self._send_status(when)

    def _later(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _register(self) -> float:
        return float(self.bank.e_wh[0])

    def meter_snapshot(self) -> dict[str, float]:
        m = self.bank.measure()
        return {k: float(v[0]) for k, v in m.items()}

    # -- commands from the CSMS (version-neutral) ------------------------------------------------------------
    def set_profile(self, profile: pf.Profile) -> str:
        try:
            pf.check(profile, self.profiles, self.station, self._tx_context(), self._now())
        except pf.ProfileError as exc:
            log.info("%s: profile %s rejected: %s", self.cp_id, profile.id, exc)
            return "Rejected"
        self.profiles = pf.install(self.profiles, profile, self.version)
        return "Accepted"

    def clear_profiles(self, **criteria: Any) -> str:
        self.profiles, n = pf.clear(self.profiles, **criteria)
        return "Accepted" if n else "Unknown"

    def composite(self, connector: int, duration_s: int, unit: str) -> tuple[datetime, list[pf.Period]]:
        now = self._now()
        periods = pf.composite(self.profiles, now, duration_s, self.station, connector=connector,
                               tx=self._tx_context(), unit=unit, phases_in_use=self._phases_in_use())
        return now, periods

    def remote_start(self, id_tag: str, profile_raw: Any = None) -> bool:
        if not self.bank.remote_start(0):
            return False
        self.id_tag = id_tag
        self._pending_start_profile = profile_raw
        return True

    def change_availability(self, operative: bool) -> str:
        """Inoperative while a transaction runs is scheduled for its end."""
        if not operative and self.tx is not None:
            self._unavailable_after_tx = True
            return "Scheduled"
        self._unavailable_after_tx = False
        self.bank.set_available(0, operative)
        return "Accepted"

    def remote_stop(self) -> None:
        if self.bank.remote_stop(0):
            self._stop_reason = "Remote"

    async def reset(self, reason: str = "SoftReset") -> None:
        """Reboot: stop the transaction, drop the connection; the run loop reconnects and boots again."""
        if self.bank.remote_stop(0):
            self._stop_reason = reason
        self._emit_changes(self._now(), trigger="ResetCommand")
        self.bank.finished[0] = False
        if self.cfg.auto_start and self.bank.plugged[0]:
            self.bank.remote_start(0)  # free vend: the EV still plugged in starts a new transaction
            self._emit_changes(self._now(), trigger="CablePluggedIn")
        await asyncio.sleep(0)
        if self._ws is not None:
            await self._ws.close()

    # -- handlers the same in both versions ------------------------------------------------------------------
    async def _on_data_transfer(self, p: Payload) -> Payload:
        return {"status": "UnknownVendorId"}

    async def _after_remote(self, _: Payload) -> None:
        self._emit_changes(self._now(), trigger="RemoteStart")

    # -- certificate management (2.0.1 A02/M03-M05; the same messages in the 1.6 security extension) -----------
    #: the version's certificate types of InstallCertificate / GetInstalledCertificateIds -> our kind of root
    ROOT_TYPES: ClassVar[dict[str, str]] = {}
    #: SecurityEventNotification type for a certificate from the CSMS that we refused
    INVALID_CERTIFICATE_EVENT: ClassVar[str] = ""

    def _send_sign_request(self) -> None:
        """A new key pair and its CSR to the CSMS (SignCertificate); without a certificate store, nothing."""
        certs = self.security.certificates
        if certs is None:
            return
        csr = certs.csr()
        payload: Payload = {"csr": csr} if self.version == "1.6" else {
            "csr": csr, "certificateType": "ChargingStationCertificate"}
        self.enqueue(OutMsg("SignCertificate", lambda: payload, persistent=False,
                            on_result=lambda r: self.stats.update([f"sign_certificate_{r.get('status')}"])))

    async def _on_certificate_signed(self, p: Payload) -> Payload:
        certs = self.security.certificates
        try:
            if certs is None:
                raise CertificateRefused("this station has no certificate store (security profile 3)")
            certs.install_chain(p["certificateChain"])
        except CertificateRefused as exc:
            self.stats["certificate_refused"] += 1
            event = {"type": self.INVALID_CERTIFICATE_EVENT, "timestamp": pf.format_time(self._now()),
                     "techInfo": str(exc)[:255]}
            self.enqueue(OutMsg("SecurityEventNotification", lambda: event, persistent=True))
            return {"status": "Rejected"}
        self.stats["certificate_installed"] += 1
        return {"status": "Accepted"}

    async def _on_install_certificate(self, p: Payload) -> Payload:
        certs, kind = self.security.certificates, self.ROOT_TYPES.get(p["certificateType"])
        if certs is None or kind is None:
            return {"status": "Rejected"}
        return {"status": certs.install_root(kind, p["certificate"])}

    async def _on_get_installed_ids(self, p: Payload) -> Payload:
        certs = self.security.certificates
        wanted = p.get("certificateType")
        types = [wanted] if isinstance(wanted, str) else (wanted or list(self.ROOT_TYPES))
        kinds = {self.ROOT_TYPES[t]: t for t in types if t in self.ROOT_TYPES}
        found = certs.installed(set(kinds)) if certs is not None else []
        if not found:
            return {"status": "NotFound"}
        if self.version == "1.6":
            return {"status": "Accepted", "certificateHashData": [h for _, h in found]}
        return {"status": "Accepted", "certificateHashDataChain": [
            {"certificateType": kinds[kind], "certificateHashData": h} for kind, h in found]}

    async def _on_delete_certificate(self, p: Payload) -> Payload:
        certs = self.security.certificates
        return {"status": certs.delete(p["certificateHashData"]) if certs is not None else "NotFound"}

    # -- version-specific ------------------------------------------------------------------------------------
    def _boot_payload(self) -> Payload:
        raise NotImplementedError

    def _send_status(self, when: datetime, force: bool = False) -> None:
        raise NotImplementedError

    def _start_tx(self, when: datetime) -> None:
        raise NotImplementedError

    def _stop_tx(self, when: datetime, reason: str) -> None:
        raise NotImplementedError

    def _send_periodic_meter(self, when: datetime) -> None:
        raise NotImplementedError

    def _send_triggered_meter(self) -> None:
        raise NotImplementedError


__all__ = ["CONNECTOR", "BootRefused", "LocalTx", "OutMsg", "VirtualChargePoint"]
