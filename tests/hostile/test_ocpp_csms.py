"""A hostile charge point against our CSMS, OCPP 1.6J and 2.0.1.

Hypothesis draws sequences of frames (valid calls of a charging session interleaved with garbage, deep
nesting, binary frames, wrong types, unknown actions, impossible values, floods, answers to calls nobody
made); each bad frame must get the version's CALLERROR (or nothing, for a response), the connection stays up,
the station's state only follows the valid frames, every rejection is counted, and a call of ours that is
pending while garbage arrives is still answered. Half-open and idle connections are closed, a connection
beyond the cap is refused at the handshake, and the reproductions of issue 12 (deep JSON closing with 1011, a
non-JSON frame failing our pending call, terminal escapes in a charge point id, impossible values accepted)
are pinned as examples. ``pytest tests/hostile --hostile-long`` runs many more examples.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
from contextlib import redirect_stdout

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from benchmarks.hostile_inputs.ocpp import (FORMAT, FRAMEWORK, SUBPROTOCOL, bad_frames, boot, frame, meter, start,
                                            stop)
from devices.wallbox.csms import CsmsServer

SUB = SUBPROTOCOL
VERSIONS = ["1.6", "2.0.1"]


def examples(request, default: int, long: int) -> int:
    return long if request.config.getoption("--hostile-long", default=False) else default


def run(coro, timeout_s: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


class Station:
    """The hostile charge point: a raw websocket client that reads our answers by unique id."""

    def __init__(self, ws, version: str) -> None:
        self.ws, self.version = ws, version
        self.n = 0
        self.answers: dict[str, list] = {}

    def uid(self) -> str:
        self.n += 1
        return f"h{self.n}"

    async def read_until(self, uid: str, timeout_s: float = 5.0) -> list:
        while uid not in self.answers:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), timeout_s))
            self.answers[msg[1]] = msg
        return self.answers.pop(uid)

    async def call(self, call: tuple[str, dict]) -> list:
        uid = self.uid()
        await self.ws.send(frame(uid, call))
        return await self.read_until(uid)


async def started_server(version: str, **kw) -> CsmsServer:
    server = CsmsServer("127.0.0.1", 0, **kw)
    await server.start()
    server.expect("EVIL", version)
    return server


def rejected(server: CsmsServer) -> int:
    return sum(n for k, n in server.stats.items() if k.startswith("rejected_"))


# -- hypothesis: sequences of valid and bad frames -------------------------------------------------------------
STEPS = ["start", "meter", "stop", "heartbeat", "flood", "pending_call", "garbage_text", *bad_frames("1.6")]


@pytest.mark.parametrize("version", VERSIONS)
def test_bad_frames_in_any_order_get_their_callerror_and_the_session_follows_only_valid_ones(request, version):
    @settings(max_examples=examples(request, 12, 300), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(steps=st.lists(st.sampled_from(STEPS), min_size=1, max_size=14),
           junk=st.lists(st.one_of(st.text(max_size=60), st.binary(max_size=30)), min_size=1, max_size=3))
    def scenario(steps, junk):
        run(_scenario(version, steps, junk), 60)

    scenario()


async def _scenario(version: str, steps: list[str], junk: list) -> None:
    server = await started_server(version)
    v16 = version == "1.6"
    table = bad_frames(version)
    try:
        async with connect(server.url + "EVIL", subprotocols=[SUB[version]]) as ws:
            cp = Station(ws, version)
            assert (await cp.call(boot(version)))[0] == 3
            state = server.states["EVIL"]
            errors = unknown = 0
            tx = None
            e_wh = None
            for step in steps:
                if step == "start":
                    reply = await cp.call(start(version, f"T{cp.n}"))
                    assert reply[0] == 3
                    tx = reply[2]["transactionId"] if v16 else f"T{cp.n - 1}"
                elif step == "meter":
                    value = 1000.0 + cp.n
                    assert (await cp.call(meter(version, value, tx=tx if v16 else None)))[0] == 3
                    e_wh = value
                elif step == "stop":
                    if tx is None and v16:  # a stop of a transaction that never started: refused
                        reply = await cp.call(stop(version, 2_000_000_000))
                        assert reply[0] == 4 and reply[2] == "PropertyConstraintViolation"
                        errors += 1
                    else:
                        assert (await cp.call(stop(version, tx or "never-started")))[0] == 3
                        e_wh = 2000.0 if v16 else e_wh
                    tx = None
                elif step == "heartbeat":
                    assert (await cp.call(("Heartbeat", {})))[0] == 3
                elif step == "flood":  # OCPP-J allows one outstanding call; a burst is answered, the excess refused
                    uids = [cp.uid() for _ in range(30)]
                    for uid in uids:
                        await ws.send(frame(uid, ("Heartbeat", {})))
                    replies = [await cp.read_until(uid) for uid in uids]
                    assert all(r[0] == 3 or (r[0] == 4 and r[2] == "GenericError") for r in replies)
                    errors += sum(r[0] == 4 for r in replies)
                elif step == "pending_call":  # our own call survives garbage arriving before its answer
                    session = server.sessions["EVIL"]
                    trigger = {"requestedMessage": "Heartbeat"}  # the same in 1.6 and 2.0.1
                    ours = asyncio.create_task(session.request("TriggerMessage", trigger, 5))
                    call = json.loads(await asyncio.wait_for(ws.recv(), 5))
                    assert call[0] == 2 and call[2] == "TriggerMessage"
                    await ws.send("}{ not json")
                    errors += 1
                    await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
                    assert (await ours)["status"] == "Accepted"
                    await cp.read_until("-1")
                elif step == "garbage_text":
                    for item in junk:  # whatever it is: one CALLERROR or silence, never a dead connection
                        before = rejected(server) + server.stats["replies_unknown_id"] + server.stats[
                            "malformed_replies"]
                        await ws.send(item)
                        probe = cp.uid()
                        await ws.send(frame(probe, ("Heartbeat", {})))
                        while True:
                            msg = json.loads(await asyncio.wait_for(ws.recv(), 5))
                            if msg[1] == probe:
                                assert msg[0] == 3
                                break
                            if not _is_call(item):
                                assert msg[0] == 4  # the only other thing we may get: the CALLERROR for the junk
                            errors += msg[0] == 4
                        after = rejected(server) + server.stats["replies_unknown_id"] + server.stats[
                            "malformed_replies"]
                        assert after == before + 1 or _is_call(item)
                else:
                    raw, code, by_uid = table[step]
                    uid = cp.uid()
                    if isinstance(raw, str):
                        raw = raw.replace("UID", uid)
                    await ws.send(raw)
                    if code is None:  # nothing comes back; a probe shows it was handled (frames go in order)
                        unknown += 1
                        assert (await cp.call(("Heartbeat", {})))[0] == 3
                        continue
                    reply = await cp.read_until(uid if by_uid else "-1")
                    assert reply[0] == 4 and reply[2] == code, (step, reply)
                    errors += 1
            # the connection is still up and answers; the state followed the valid frames only
            assert (await cp.call(("Heartbeat", {})))[0] == 3
            assert state.tx_id == (None if tx is None else str(tx))
            if e_wh is not None:
                assert state.e_wh == pytest.approx(e_wh)
            assert rejected(server) == errors
            assert server.stats["replies_unknown_id"] + server.stats["malformed_replies"] >= unknown
    finally:
        await server.stop()


def _is_call(item) -> bool:
    """Junk that happens to be a well-formed CALL (answered like any call)."""
    try:
        msg = json.loads(item)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(msg, list) and len(msg) == 4 and msg[0] == 2 and isinstance(msg[1], str)


# -- connections: half-open, idle, flood beyond the cap, oversized frames --------------------------------------
PATIENCE_S = 60.0  # a deadline for what must happen, not a duration anything is expected to take
@pytest.mark.parametrize("version", VERSIONS)
def test_half_open_idle_and_surplus_connections_are_closed_or_refused_and_the_server_lives(version):
    async def body():
        server = await started_server(version, boot_timeout_s=0.3, idle_timeout_s=0.6, max_connections=3)
        for i in range(5):
            server.expect(f"CP{i}", version)
        try:
            # a TCP connection that never completes the websocket handshake is closed by the handshake timeout
            raw = socket.create_connection(("127.0.0.1", server.port))
            raw.setblocking(False)
            # connected but never boots: closed with 1008
            quiet = await connect(server.url + "CP0", subprotocols=[SUB[version]])
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(quiet.recv(), PATIENCE_S)
            assert closed.value.rcvd.code == 1008
            # from here on no connection may meet the boot timeout, however slow the machine: the timeouts are read
            # live, so each phase below waits on the event it expects, not on being faster than a short timeout
            server.boot_timeout_s = PATIENCE_S
            # boots, then goes silent: closed as idle
            idle = await connect(server.url + "CP1", subprotocols=[SUB[version]])
            await Station(idle, version).call(boot(version))
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(idle.recv(), PATIENCE_S)
            for cp_id in ("CP0", "CP1"):  # the server has let go of both
                st = server.states[cp_id]
                assert await st.wait_for(lambda: not st.connected, PATIENCE_S)
            assert server.stats["closed_boot_timeout"] == 1 and server.stats["closed_idle_timeout"] == 1
            server.idle_timeout_s = PATIENCE_S  # the held connections below stay until the test closes them
            # the cap: three connections are served, the fourth is refused with HTTP 503 ...
            held = [await connect(server.url + f"CP{i}", subprotocols=[SUB[version]]) for i in (2, 3, 4)]
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.url + "EVIL", subprotocols=[SUB[version]])
            assert refused.value.response.status_code == 503 and server.stats["refused_cap"] == 1
            # ... but a station reconnecting (its old connection half-dead) replaces its own slot
            again = await connect(server.url + "CP2", subprotocols=[SUB[version]])
            assert (await Station(again, version).call(boot(version)))[0] == 3
            for ws in held + [again]:
                await ws.close()
            # a frame beyond the size limit ends that connection with the websocket's own 1009, nothing else
            async with connect(server.url + "EVIL", subprotocols=[SUB[version]], max_size=None) as big:
                await big.send("[" + " " * (2 << 20) + "]")
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(big.recv(), PATIENCE_S)
                assert closed.value.rcvd.code == 1009
            async with connect(server.url + "EVIL", subprotocols=[SUB[version]]) as ok:
                assert (await Station(ok, version).call(boot(version)))[0] == 3
            raw.close()
        finally:
            await server.stop()

    run(body(), 300)


# -- the reproductions of issue 12 -----------------------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
def test_deeply_nested_json_gets_a_callerror_not_a_1011_close(version):
    async def body():
        server = await started_server(version)
        try:
            async with connect(server.url + "EVIL", subprotocols=[SUB[version]]) as ws:
                await ws.send('[2,"deep","Heartbeat",' + "[" * 100_000 + "]" * 100_000 + "]")
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply[0] == 4 and reply[1] == "deep" and reply[2] == FORMAT[version]
                await ws.send("[" * 100_000)
                reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert reply[:3] == [4, "-1", FRAMEWORK[version]]
                assert (await Station(ws, version).call(boot(version)))[0] == 3
        finally:
            await server.stop()

    run(body())


@pytest.mark.parametrize("version", VERSIONS)
def test_a_non_json_frame_does_not_fail_our_pending_call(version):
    async def body():
        server = await started_server(version)
        try:
            async with connect(server.url + "EVIL", subprotocols=[SUB[version]]) as ws:
                await Station(ws, version).call(boot(version))
                ours = asyncio.create_task(server.sessions["EVIL"].request(
                    "TriggerMessage", {"requestedMessage": "Heartbeat"}, 5))
                call = json.loads(await asyncio.wait_for(ws.recv(), 5))
                await ws.send("garbage, not JSON")
                await ws.send(json.dumps([3, call[1], {"status": "Accepted"}]))
                assert (await ours) == {"status": "Accepted"}
        finally:
            await server.stop()

    run(body())


@pytest.mark.parametrize("version", VERSIONS)
def test_impossible_values_are_refused_with_the_protocols_error(version):
    async def body():
        server = await started_server(version)
        table = bad_frames(version)
        try:
            async with connect(server.url + "EVIL", subprotocols=[SUB[version]]) as ws:
                cp = Station(ws, version)
                await cp.call(boot(version))
                for name in ("non_iso_timestamp", "impossible_date", "negative_meter", "soc_250", "connector_99",
                             "stop_unknown_tx"):
                    raw, code, _ = table[name]
                    uid = cp.uid()
                    await ws.send(str(raw).replace("UID", uid))
                    reply = await cp.read_until(uid)
                    assert reply[0] == 4 and reply[2] == code, (name, reply)
                state = server.states["EVIL"]
                assert state.e_wh != state.e_wh and state.status != state.status  # NaN: nothing taken over
        finally:
            await server.stop()

    run(body())


def test_terminal_escapes_in_a_charge_point_id_are_escaped_in_logs_and_output(caplog):
    from devices.csms import serve as csms_serve

    evil = "CP\x1b[2J\x1b]0;owned\x07"

    async def body():
        server = CsmsServer("127.0.0.1", 0, accept_any=True)
        await server.start()
        server.listeners.append(csms_serve._on_message)
        try:
            path = "".join(c if c.isalnum() else f"%{ord(c):02X}" for c in evil)
            async with connect(server.url + path, subprotocols=["ocpp1.6"]) as ws:
                await Station(ws, "1.6").call(("BootNotification", {"chargePointVendor": "X",
                                                                    "chargePointModel": "\x1b[31mred"}))
            return server.states[evil]
        finally:
            await server.stop()

    out = io.StringIO()
    with caplog.at_level(logging.INFO), redirect_stdout(out):
        st = run(body())
        print(csms_serve.describe(st))
    text = out.getvalue() + caplog.text
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b" in out.getvalue() and "\\x1b" in caplog.text  # escaped, still recognisable
