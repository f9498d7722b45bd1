"""Robustness probes of OCPP (1.6J and 2.0.1), both sides, on loopback websockets.

* CSMS side: a hostile station runs charging sessions (start, meter values, stop) with bursts of bad frames
  (``benchmarks.hostile_inputs.ocpp.bad_frames``) between the messages, and hangs up between sessions. Lost and
  duplicated = the multiset difference between the transaction messages it sent and those our CSMS took in.
* Charge point side: our virtual charge point charges EVs against a hostile CSMS that sends bursts of bad calls
  (``bad_calls``) before answering a transaction message, answers some with a CALLERROR (the message must be
  resent) and drops the connection instead of answering others. Lost = transaction messages the charge point
  queued that the CSMS never confirmed; duplicated = confirmed twice.

Time to recover: CSMS side, from the end of a burst to the answer of the next valid call (baseline: a call
without a burst); charge point side, from a dropped connection to the next accepted BootNotification (baseline:
the first connection, from start to accepted boot). Crashes: a logged traceback (a handler that died) or the
charge point's run loop ending; silent stops: a valid call unanswered, a connection closed by our side, or the
charge point not delivering its queue within the deadline.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import random
import time
from collections import Counter
from datetime import datetime, UTC

from benchmarks.hostile_inputs.ocpp import (SUBPROTOCOL, bad_calls, bad_frames, boot, frame, is_tx_message, meter,
                                            start, stop)
from benchmarks.robustness_result import ProbeResult
from benchmarks.robustness_servers import RECOVER_S, counting_tracebacks

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ CSMS side
async def _csms(version: str, quick: bool) -> ProbeResult:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed
    from websockets.typing import Subprotocol

    from devices.wallbox.csms import CsmsServer

    rng = random.Random(8)
    sessions, burst = (3, 6) if quick else (15, 20)
    table = list(bad_frames(version).values())
    result = ProbeResult(lost=0, duplicated=0)
    sent: Counter = Counter()
    taken: Counter = Counter()
    uids = itertools.count(1)
    server = CsmsServer("127.0.0.1", 0)
    await server.start()
    server.expect("PROBE", version)
    server.listeners.append(lambda _st, action, p: is_tx_message(action, p) and taken.update(
        [(action, json.dumps(p, sort_keys=True))]))

    async def call(ws, message: tuple[str, dict]) -> list | None:
        uid = f"v{next(uids)}"
        await ws.send(frame(uid, message))
        deadline = time.monotonic() + RECOVER_S
        while True:
            reply = json.loads(await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.001)))
            if reply[1] == uid:
                if reply[0] != 3:
                    return None
                if is_tx_message(*message):
                    sent.update([(message[0], json.dumps(message[1], sort_keys=True))])
                return reply

    async def garbage(ws) -> None:
        for _ in range(burst):
            raw, _, _ = rng.choice(table)
            await ws.send(raw.replace("UID", f"g{next(uids)}") if isinstance(raw, str) else raw)
            result.inputs += 1

    async def timed(ws, message: tuple[str, dict], after_burst: bool) -> list | None:
        if after_burst:
            await garbage(ws)
        t0 = time.perf_counter()
        reply = await call(ws, message)
        (result.recover_s if after_burst else result.baseline_s).append(time.perf_counter() - t0)
        if reply is None:
            result.silent_stops += 1
        return reply

    with counting_tracebacks() as tracebacks:
        try:
            for k in range(sessions):
                try:
                    async with connect(server.url + "PROBE", subprotocols=[Subprotocol(SUBPROTOCOL[version])],
                                       max_size=None) as ws:
                        await timed(ws, boot(version), after_burst=False)
                        reply = await timed(ws, start(version, f"T{k}"), after_burst=True)
                        tx = (reply[2]["transactionId"] if version == "1.6" else f"T{k}") if reply else None
                        for j in range(2):
                            await timed(ws, meter(version, 1000.0 + 10 * k + j,
                                                  tx=tx if version == "1.6" else None), after_burst=j == 0)
                        if tx is not None:
                            await timed(ws, stop(version, tx), after_burst=True)
                        if k % 2:
                            ws.transport.abort()  # a station that vanishes without a close
                except (ConnectionClosed, TimeoutError):
                    result.silent_stops += 1
        except Exception:  # what this counts
            log.exception("OCPP CSMS probe failed")
            result.crashes += 1
        finally:
            await server.stop()
        result.crashes += tracebacks.count
    result.silent_stops += not sent  # no transaction went through at all
    result.lost = sum((sent - taken).values())
    result.duplicated = sum((taken - sent).values())
    return result


# ----------------------------------------------------------------------------------------- charge point side
class HostileCsms:
    """Accepts every boot; before answering a transaction message it may send a burst of bad calls, then answers
    it, refuses it with a CALLERROR or drops the connection without an answer."""

    def __init__(self, version: str, rng: random.Random, burst: int) -> None:
        self.version, self.rng, self.burst = version, rng, burst
        self.table = list(bad_calls(version).values())
        self.confirmed: list[str] = []  # transaction messages answered with a CALLRESULT
        self.inputs = 0
        self.boots: list[float] = []
        self.dropped_at: float | None = None
        self.recover_s: list[float] = []
        self.uids = itertools.count(1)

    def answer(self, action: str, p: dict) -> dict:
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now, "interval": 3600}
        if action == "Heartbeat":
            return {"currentTime": now}
        if action == "StartTransaction":
            return {"transactionId": 1000 + len(self.confirmed), "idTagInfo": {"status": "Accepted"}}
        if action == "StopTransaction":
            return {"idTagInfo": {"status": "Accepted"}}
        return {}

    async def handler(self, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                msg = json.loads(await ws.recv())
                if msg[0] != 2:
                    continue  # the charge point's answers to our bad calls
                action, payload = msg[2], msg[3]
                if is_tx_message(action, payload) and self.rng.random() < 0.5:
                    for _ in range(self.burst):
                        raw, _, _ = self.rng.choice(self.table)
                        await ws.send(raw.replace("UID", f"b{next(self.uids)}") if isinstance(raw, str) else raw)
                        self.inputs += 1
                    fate = self.rng.random()
                    if fate < 0.25:
                        self.inputs += 1
                        await ws.send(json.dumps([4, msg[1], "InternalError", "database is down", {}]))
                        continue
                    if fate < 0.45:
                        self.inputs += 1
                        self.dropped_at = time.perf_counter()
                        ws.transport.abort()
                        return
                await ws.send(json.dumps([3, msg[1], self.answer(action, payload)]))
                if is_tx_message(action, payload):
                    self.confirmed.append(json.dumps([action, payload], sort_keys=True))
                if action == "BootNotification":
                    self.boots.append(time.perf_counter())
                    if self.dropped_at is not None:
                        self.recover_s.append(self.boots[-1] - self.dropped_at)
                        self.dropped_at = None
        except ConnectionClosed:
            pass


def _ev_env(t: int) -> dict:
    k, phase = divmod(t, 12)
    if phase < 9:
        return {"ev_plugged": 1.0, "ev_id": float(k + 1), "ev_soc_arrival": 0.2, "ev_capacity_wh": 60_000.0,
                "ev_p_max_w": 11_000.0}
    return {"ev_plugged": 0.0}


async def _charge_point(version: str, quick: bool) -> ProbeResult:
    from websockets.asyncio.server import serve
    from websockets.typing import Subprotocol

    from devices import registry
    from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

    fam = registry.family("wallbox")
    steps, burst = (48, 4) if quick else (360, 10)
    csms = HostileCsms(version, random.Random(9), burst)
    result = ProbeResult(lost=0, duplicated=0)
    with counting_tracebacks() as tracebacks:
        async with serve(csms.handler, "127.0.0.1", 0, subprotocols=[Subprotocol(s) for s in SUBPROTOCOL.values()],
                         max_size=None) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            cfg = fam.parse_config({"meter_interval_s": 2, "heartbeat_interval_s": 3600,
                                    "tx_message_attempts": 1000, "tx_message_retry_interval_s": 0.0})
            dev = (VirtualWallbox16 if version == "1.6" else VirtualWallbox201)(fam, cfg, device_id="PROBE")
            t0 = time.perf_counter()
            await dev.start_client(f"ws://127.0.0.1:{port}/", backoff_s=(0.01, 0.05), call_timeout_s=RECOVER_S,
                                   drain_timeout_s=0.05)
            cp = dev.cp
            assert cp is not None  # made by start_client
            try:
                await cp.wait_booted(RECOVER_S)
                result.baseline_s.append(csms.boots[0] - t0)
                for t in range(steps):  # the EVs charge through every misbehaviour
                    await dev.advance(t, 1, _ev_env(t))
                    await asyncio.sleep(0.005)
                    if not cp.running:
                        result.crashes += 1
                        break
                await dev.advance(steps, 1, {"ev_plugged": 0.0})  # the last EV leaves: its transaction ends
                deadline = time.monotonic() + 4 * RECOVER_S
                while not (cp.connected and len(cp.outbox) == 0):
                    if time.monotonic() > deadline:
                        result.silent_stops += 1
                        break
                    if cp.connected:
                        await cp.drain(1.0)
                    else:
                        await asyncio.sleep(0.01)
                stats = cp.outbox.stats
                unique = set(csms.confirmed)
                result.lost = stats["tx_enqueued"] - len(unique)  # a skipped message is lost too
                result.duplicated = len(csms.confirmed) - len(unique)
                result.silent_stops += stats["tx_enqueued"] == 0  # no transaction went through at all
            finally:
                await dev.stop()
    result.crashes += tracebacks.count
    result.inputs = csms.inputs
    result.recover_s = csms.recover_s
    return result


def _run(coro) -> ProbeResult:
    try:
        return asyncio.run(asyncio.wait_for(coro, 300))
    except Exception:  # a probe that died counts one crash
        log.exception("OCPP probe failed")
        return ProbeResult(crashes=1)


def probe_csms_16(quick: bool) -> ProbeResult:
    return _run(_csms("1.6", quick))


def probe_csms_201(quick: bool) -> ProbeResult:
    return _run(_csms("2.0.1", quick))


def probe_charge_point_16(quick: bool) -> ProbeResult:
    return _run(_charge_point("1.6", quick))


def probe_charge_point_201(quick: bool) -> ProbeResult:
    return _run(_charge_point("2.0.1", quick))
