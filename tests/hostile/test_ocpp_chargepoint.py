"""Our virtual charge point against a hostile CSMS, OCPP 1.6J and 2.0.1.

A scripted CSMS plays, connection after connection, what hypothesis draws: a BootNotification answered with
a CALLERROR, a schema-invalid result, garbage, deep JSON, nothing, or a dropped link; after an accepted boot,
CALLERRORs and malformed answers to transaction messages, garbage and deeply nested calls, wrong types,
unknown actions, floods, answers to calls nobody made, stalls; every connection ends with a dropped or
aborted link. Meanwhile the charge point charges EVs (plug, meter values, unplug) on its own clock.
Asserted: the run loop lives and reconnects after every kind of misbehaviour (the time to recover is measured
and printed), every bad call gets the version's CALLERROR, no transaction message is lost (the CSMS confirmed
exactly the transaction messages the charge point counts as confirmed, in order, none skipped), a 1.6
MeterValues never carries transactionId -1, and every rejection is counted. The reproductions of issue 12
are pinned as examples. ``pytest tests/hostile --hostile-long`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import time
from collections import defaultdict
from datetime import datetime, UTC

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from benchmarks.hostile_inputs.ocpp import FRAMEWORK, bad_calls, is_tx_message
from devices import registry
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
VERSIONS = {"1.6": VirtualWallbox16, "2.0.1": VirtualWallbox201}
RECOVERY_S: dict[str, list[float]] = defaultdict(list)  # kind of misbehaviour -> times to recover


def examples(request, default: int, long: int) -> int:
    return long if request.config.getoption("--hostile-long", default=False) else default


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ScriptedCsms:
    """A CSMS that misbehaves as each connection's plan says, then serves properly."""

    def __init__(self, version: str, plans: list[tuple[str, list[str]]]) -> None:
        self.version = version
        self.plans = list(plans)
        self.tx_ids = itertools.count(1000)
        self.issued: set[int] = set()
        self.confirmed: list[tuple[str, str]] = []  # transaction messages answered with a CALLRESULT
        self.failures_caused = 0  # CALLERRORs and malformed answers given to transaction messages
        self.errors_expected = 0  # CALLERRORs the charge point owes us for bad calls
        self.accepted_boots: list[float] = []
        self.dropped_at: tuple[str, float] | None = None  # the last misbehaviour that ended a connection
        self.problems: list[str] = []
        self.uids = itertools.count(1)
        self.booted = asyncio.Event()

    # -- the proper CSMS ---------------------------------------------------------------------------------------
    def answer(self, action: str, p: dict) -> dict:
        if action == "BootNotification":
            return {"status": "Accepted", "currentTime": now(), "interval": 3600}
        if action == "Heartbeat":
            return {"currentTime": now()}
        if action == "StartTransaction":
            tx = next(self.tx_ids)
            self.issued.add(tx)
            return {"transactionId": tx, "idTagInfo": {"status": "Accepted"}}
        if action == "MeterValues" and self.version == "1.6" and "transactionId" in p \
                and p["transactionId"] not in self.issued:
            self.problems.append(f"MeterValues with transactionId {p['transactionId']}")
        if action == "StopTransaction" and p["transactionId"] not in self.issued:
            self.problems.append(f"StopTransaction with transactionId {p['transactionId']}")
        return {}

    async def reply(self, ws, msg: list) -> None:
        action, payload = msg[2], msg[3]
        answer = self.answer(action, payload)
        await ws.send(json.dumps([3, msg[1], answer]))
        if is_tx_message(action, payload):
            self.confirmed.append((action, json.dumps(payload, sort_keys=True)))
        if action == "BootNotification":
            self.accepted_boots.append(time.monotonic())
            self.booted.set()

    async def next_call(self, ws, timeout_s: float = 5.0) -> list:
        """The next CALL from the charge point (answers to our calls are checked and skipped)."""
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout_s))
            if msg[0] == 2:
                return msg
            self.check_reply(msg)

    def check_reply(self, msg: list) -> None:
        if msg[0] == 4 and msg[1] in self.want:
            code = self.want.pop(msg[1])
            if msg[2] != code:
                self.problems.append(f"expected {code}, got {msg}")
        elif msg[1] in self.want_any:
            self.want_any.discard(msg[1])
            if not (msg[0] == 3 or (msg[0] == 4 and msg[2] == "GenericError")):
                self.problems.append(f"flood answered {msg}")

    async def serve_until(self, ws, done, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            msg = json.loads(await asyncio.wait_for(ws.recv(), max(deadline - time.monotonic(), 0.01)))
            if msg[0] == 2:
                await self.reply(ws, msg)
            else:
                self.check_reply(msg)

    # -- the misbehaving one -----------------------------------------------------------------------------------
    async def handler(self, ws) -> None:
        plan = self.plans.pop(0) if self.plans else None
        self.want: dict[str, str] = {}
        self.want_any: set[str] = set()
        try:
            if plan is None:
                await self.serve_until(ws, lambda: False, timeout_s=3600)
            else:
                await self.play(ws, *plan)
        except (ConnectionClosed, TimeoutError):
            pass
        except Exception as exc:  # reported by the test, not lost in the server's log
            self.problems.append(f"scripted CSMS: {type(exc).__name__}: {exc}")
        finally:
            if plan is not None:
                self.dropped_at = (plan[0] if plan[0] != "accept" else (plan[1] or ["drop"])[-1], time.monotonic())
                await ws.close()

    async def play(self, ws, boot: str, events: list[str]) -> None:
        msg = await self.next_call(ws)
        assert msg[2] == "BootNotification"
        uid = msg[1]
        if boot == "callerror":
            await ws.send(json.dumps([4, uid, "InternalError", "not today", {}]))
        elif boot == "invalid":
            await ws.send(json.dumps([3, uid, {"status": "Maybe", "currentTime": "noon", "interval": "x"}]))
        elif boot == "garbage":
            await ws.send("<html>502 Bad Gateway</html>")
        elif boot == "deep":
            await ws.send(f'[3,"{uid}",' + "[" * 100_000)
        elif boot == "silent":
            await asyncio.sleep(0.35)  # longer than the charge point's call timeout
        elif boot == "abort":
            ws.transport.abort()
            return
        if boot != "accept":
            await asyncio.sleep(0.05)  # the charge point gives up on this connection by itself (or we drop it)
            return
        await self.reply(ws, msg)
        for event in events:
            await self.event(ws, event)
        await self.serve_until(ws, lambda: not self.want and not self.want_any)
        if events and events[-1] == "abort":
            ws.transport.abort()

    async def event(self, ws, event: str) -> None:
        if event in ("callerror_tx", "deep_reply_tx", "invalid_reply_tx"):
            while True:
                msg = await self.next_call(ws)
                if is_tx_message(msg[2], msg[3]):
                    break
                await self.reply(ws, msg)
            self.failures_caused += 1
            if event == "callerror_tx":
                await ws.send(json.dumps([4, msg[1], "InternalError", "database is down", {}]))
            elif event == "deep_reply_tx":
                await ws.send(f'[3,"{msg[1]}",' + "{\"a\":" * 5_000 + "1" + "}" * 5_000 + "]")
            else:
                await ws.send(json.dumps([3, msg[1], {"transactionId": "abc"} if msg[2] == "StartTransaction"
                                          else {"idTagInfo": 5}]))
                if msg[2] not in ("StartTransaction", "StopTransaction", "TransactionEvent"):
                    self.failures_caused -= 1  # an empty schema: this answer is valid after all
                    self.confirmed.append((msg[2], json.dumps(msg[3], sort_keys=True)))
        elif event == "garbage_reply":  # the charge point's call times out and is sent again
            msg = await self.next_call(ws)
            await ws.send("ERROR 500")
            # the charge point answers the garbage with a CALLERROR: wait for it, so that under load it cannot
            # arrive after the next event's expectation for the same (anonymous) id is set
            self.want["-1"] = FRAMEWORK[self.version]
            await self.serve_until(ws, lambda: not self.want)
        elif event == "unknown_result":
            await ws.send(json.dumps([3, "nobody-asked", {"status": "Accepted"}]))
        elif event == "stall":  # a half-open peer: reads nothing for longer than the call timeout
            await asyncio.sleep(0.4)
        elif event == "flood":
            comp = {"connectorId": 1, "duration": 60} if self.version == "1.6" else {"evseId": 1, "duration": 60}
            for _ in range(20):
                uid = f"f{next(self.uids)}"
                self.want_any.add(uid)
                await ws.send(json.dumps([2, uid, "GetCompositeSchedule", comp]))
            # every flooded call answered before the next event: a call sent while one of them is still being
            # served is rightly answered "too many calls outstanding" (hypothesis found flood, then a bad call)
            await self.serve_until(ws, lambda: not self.want_any)
        elif event in bad_calls(self.version):
            raw, code, by_uid = bad_calls(self.version)[event]
            uid = f"b{next(self.uids)}"
            await ws.send(raw.replace("UID", uid) if isinstance(raw, str) else raw)
            self.want[uid if by_uid else "-1"] = code
            await self.serve_until(ws, lambda: not self.want)
        # "drop" / "abort": the connection ends after the events


EVENTS = ["callerror_tx", "deep_reply_tx", "invalid_reply_tx", "garbage_reply", "unknown_result", "stall", "flood",
          *bad_calls("1.6"), "drop", "abort"]
BOOTS = ["accept", "accept", "callerror", "invalid", "garbage", "deep", "silent", "abort"]


def ev_env(t: int) -> dict:
    k, phase = divmod(t, 12)
    plugged = phase < 9
    return {"ev_plugged": float(plugged), "ev_id": float(k + 1), "ev_soc_arrival": 0.2, "ev_capacity_wh": 60_000.0,
            "ev_p_max_w": 11_000.0} if plugged else {"ev_plugged": 0.0}


async def campaign(version: str, plans: list[tuple[str, list[str]]], attempts: int = 1000,
                   csms_cls: type[ScriptedCsms] = ScriptedCsms) -> dict:
    """Run the charge point against ``plans``, then against a proper CSMS until everything is delivered."""
    csms = csms_cls(version, plans)
    async with serve(csms.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6", "ocpp2.0.1"], max_size=None) as server:
        port = server.sockets[0].getsockname()[1]
        cfg = FAM.parse_config({"meter_interval_s": 2, "heartbeat_interval_s": 3600, "tx_message_attempts": attempts,
                                "tx_message_retry_interval_s": 0.0})
        dev = VERSIONS[version](FAM, cfg, device_id="HOSTILE")
        await dev.start_client(f"ws://127.0.0.1:{port}/", backoff_s=(0.01, 0.05), call_timeout_s=0.3,
                               drain_timeout_s=0.05)
        cp = dev.cp
        try:
            t = 0
            while csms.plans or t < 30:  # the EV keeps charging through every misbehaviour
                await dev.advance(t, 1, ev_env(t))
                t += 1
                await asyncio.sleep(0.005)
                assert cp.running, cp.last_disconnect
                assert t < 5000, f"plans not consumed: {csms.plans}"
            dropped = csms.dropped_at
            await dev.advance(t, 1, {"ev_plugged": 0.0})  # the last EV leaves: its transaction ends
            while not (cp.connected and len(cp.outbox) == 0):
                csms.booted.clear()
                if not cp.connected:
                    await asyncio.wait_for(csms.booted.wait(), 10)
                await cp.drain(10)
            if dropped is not None:
                kind, at = dropped
                boots_after = [b for b in csms.accepted_boots if b > at]
                if boots_after:
                    RECOVERY_S[kind].append(boots_after[0] - at)
            assert cp.running
        finally:
            await dev.stop()
    return {"csms": csms, "cp": cp}


def check_nothing_lost(version: str, csms: ScriptedCsms, cp, expect_skipped: int = 0) -> None:
    assert not csms.problems, csms.problems
    stats = cp.outbox.stats
    assert stats["tx_enqueued"] == stats["tx_confirmed"] + stats["tx_skipped"] + cp.outbox.pending_transaction_messages()
    assert stats["tx_skipped"] == expect_skipped
    unique = list(dict.fromkeys(csms.confirmed))  # a resent message (its answer was lost) counts once
    assert len(unique) == stats["tx_confirmed"]
    payloads = [(a, json.loads(p)) for a, p in unique]
    if version == "1.6":
        stamps = [p.get("timestamp") or p["meterValue"][0]["timestamp"] for _, p in payloads]
        assert all(p.get("transactionId") != -1 for a, p in payloads if a == "MeterValues")
    else:
        stamps = [p["timestamp"] for _, p in payloads]
        seq: dict[str, int] = {}
        for _, p in payloads:  # in order: seqNo increases within each transaction
            tx = p["transactionInfo"]["transactionId"]
            assert p["seqNo"] > seq.get(tx, -1)
            seq[tx] = p["seqNo"]
    assert stamps == sorted(stamps)


plan_strategy = st.tuples(st.sampled_from(BOOTS), st.lists(st.sampled_from(EVENTS), max_size=4))


@pytest.mark.parametrize("version", list(VERSIONS))
def test_the_charge_point_survives_any_misbehaving_csms_and_loses_no_transaction_message(request, version):
    @settings(max_examples=examples(request, 4, 150), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(plans=st.lists(plan_strategy, min_size=1, max_size=3))
    def scenario(plans):
        out = asyncio.run(asyncio.wait_for(campaign(version, plans), 120))
        csms, cp = out["csms"], out["cp"]
        check_nothing_lost(version, csms, cp)
        assert not csms.want and not csms.want_any  # every bad call got its CALLERROR, every flooded call an answer
        rejected = sum(n for k, n in cp.stats.items() if k.startswith("rejected_"))
        assert rejected >= sum(1 for boot, evs in plans if boot == "accept" for e in evs if e in bad_calls(version))
        assert cp.stats["connects"] >= len(plans)  # every plan ends its connection: the charge point came back

    scenario()


def test_recovery_times(capsys):
    """Prints the time to recover per kind of misbehaviour measured by this module (run it last)."""
    with capsys.disabled():
        for kind, xs in sorted(RECOVERY_S.items()):
            print(f"\nOCPP charge point, recovery after {kind}: median {statistics.median(xs) * 1000:.0f} ms, "
                  f"max {max(xs) * 1000:.0f} ms ({len(xs)} runs)", end="")


# -- the reproductions of issue 12 -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", list(VERSIONS))
@pytest.mark.parametrize("boot", ["callerror", "invalid", "deep", "garbage"])
def test_a_refused_or_malformed_boot_and_a_dropped_link_do_not_silence_the_charge_point(version, boot):
    out = asyncio.run(asyncio.wait_for(campaign(version, [(boot, [])] * 2), 60))
    assert out["cp"].stats["boot_refused"] >= 1 or boot == "garbage"
    check_nothing_lost(version, out["csms"], out["cp"])


@pytest.mark.parametrize("version", list(VERSIONS))
def test_deeply_nested_json_gets_a_callerror_and_the_charge_point_stays(version):
    out = asyncio.run(asyncio.wait_for(campaign(version, [("accept", ["deep", "deep_anonymous", "drop"])]), 60))
    assert not out["csms"].want
    check_nothing_lost(version, out["csms"], out["cp"])


class GarbageBeforeAnswer(ScriptedCsms):
    """Sends non-JSON (and a broken answer) while a transaction message waits for its answer, then answers."""

    async def event(self, ws, event: str) -> None:
        if event != "garbage_before_answer":
            return await super().event(ws, event)
        while True:
            msg = await self.next_call(ws)
            if is_tx_message(msg[2], msg[3]):
                break
            await self.reply(ws, msg)
        await ws.send("not json at all")
        await ws.send('[3, "and not an answer"')
        await self.reply(ws, msg)
        self.want["-1"] = FRAMEWORK[self.version]
        await self.serve_until(ws, lambda: not self.want)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_non_json_frame_fails_no_pending_transaction_message(version):
    """Before: the StartTransaction pending when garbage arrived was dropped and later MeterValues carried -1."""
    plans = [("accept", ["garbage_before_answer"] * 3)]
    out = asyncio.run(asyncio.wait_for(campaign(version, plans, csms_cls=GarbageBeforeAnswer), 60))
    check_nothing_lost(version, out["csms"], out["cp"])
    assert out["cp"].stats["malformed_replies"] == 3


class StartRefuser(ScriptedCsms):
    """Refuses the first StartTransaction every time it comes."""

    refuse = 3

    async def reply(self, ws, msg: list) -> None:
        if msg[2] == "StartTransaction" and self.refuse > 0:
            self.refuse -= 1
            await ws.send(json.dumps([4, msg[1], "InternalError", "no", {}]))
            return
        await super().reply(ws, msg)


def test_a_start_refused_for_good_is_skipped_and_no_meter_value_carries_minus_one():
    """1.6: the CSMS refuses a StartTransaction every time: it is skipped after the attempts (counted), the
    transaction's meter values go without transactionId and its stop is skipped (nothing to stop)."""
    out = asyncio.run(asyncio.wait_for(campaign("1.6", [], attempts=3, csms_cls=StartRefuser), 60))
    csms, cp = out["csms"], out["cp"]
    assert cp.outbox.stats["tx_skipped_refused"] == 1 and cp.outbox.stats["tx_skipped_void"] == 1
    check_nothing_lost("1.6", csms, cp, expect_skipped=2)
    first = [json.loads(p) for a, p in csms.confirmed if a == "MeterValues"][:3]
    assert first and all("transactionId" not in p for p in first)
    assert len(csms.issued) >= 2  # the next EV's transaction went through


@pytest.mark.parametrize("version", list(VERSIONS))
def test_a_bug_inside_the_charge_point_ends_the_connection_not_the_loop(version):
    """An exception out of our own code (here: the first status report after a boot) ends that connection;
    the run loop backs off and connects again."""
    async def body():
        csms = ScriptedCsms(version, [])
        async with serve(csms.handler, "127.0.0.1", 0, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as server:
            dev = VERSIONS[version](FAM, FAM.parse_config({}), device_id="BUGGY")
            cp = dev.make_charge_point(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/",
                                       backoff_s=(0.01, 0.05))
            dev.cp = cp
            original, calls = cp._send_status, []

            def flaky(*a, **kw):
                calls.append(1)
                if len(calls) == 1:
                    raise KeyError("a bug")
                return original(*a, **kw)
            cp._send_status = flaky
            await cp.start()
            await asyncio.wait_for(csms.booted.wait(), 10)
            while len(csms.accepted_boots) < 2:  # the second boot follows the bug's disconnect
                csms.booted.clear()
                await asyncio.wait_for(csms.booted.wait(), 10)
            await cp.wait_booted(10)
            assert cp.running and cp.stats["disconnects_KeyError"] == 1 and "a bug" in cp.last_disconnect
            await cp.stop()

    asyncio.run(asyncio.wait_for(body(), 30))
