"""Malformed frames, unknown actions and wrong types get the version's CALLERROR and the connection stays up;
unknown charge points and wrong subprotocols are refused at the handshake. Both roles: our CSMS and our
virtual charge point."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from devices import registry
from devices.wallbox import csms
from devices.wallbox.rpc import OcppFault, validate
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

BOOT = {"1.6": {"chargePointVendor": "X", "chargePointModel": "Y"},
        "2.0.1": {"chargingStation": {"model": "Y", "vendorName": "X"}, "reason": "PowerUp"}}
# (action, a valid payload, wrong type, missing a required field, a value outside its enum) per role
TO_CSMS = {
    "1.6": ("BootNotification", BOOT["1.6"], {"chargePointVendor": 5, "chargePointModel": "Y"},
            {"chargePointModel": "Y"}, None),
    "2.0.1": ("BootNotification", BOOT["2.0.1"], {"chargingStation": {"model": "Y", "vendorName": 5},
                                                  "reason": "PowerUp"},
              {"reason": "PowerUp"}, {"chargingStation": {"model": "Y", "vendorName": "X"}, "reason": "Bored"}),
}
TO_CP = {v: ("TriggerMessage", {"requestedMessage": "Heartbeat"}, {"requestedMessage": 5}, {},
             {"requestedMessage": "Pizza"}) for v in ("1.6", "2.0.1")}


def cases(version: str, sample: tuple, known_unhandled: str) -> list[tuple[str, str, str]]:
    """(frame, expected error code, expected unique id) for a peer speaking ``version``."""
    v16 = version == "1.6"
    action, ok, wrong_type, missing, bad_enum = sample
    out = [
        ("this is not json", "FormationViolation" if v16 else "RpcFrameworkError", "-1"),
        ('{"a": 1}', "ProtocolError" if v16 else "RpcFrameworkError", "-1"),
        ('[7, "u7", "Heartbeat", {}]', "ProtocolError" if v16 else "MessageTypeNotSupported", "u7"),
        ('[2, "u1", "Teleport", {}]', "NotImplemented", "u1"),
        (json.dumps([2, "u2", known_unhandled, {}]), "NotSupported", "u2"),
        (json.dumps([2, "u3", action, {**ok, "extra": 1}]), "FormationViolation" if v16 else "FormatViolation", "u3"),
        (json.dumps([2, "u4", action, wrong_type]), "TypeConstraintViolation", "u4"),
        (json.dumps([2, "u5", action, missing]), "ProtocolError" if v16 else "OccurrenceConstraintViolation", "u5"),
        (json.dumps([2, "u6", action, "not an object"]), "TypeConstraintViolation", "u6"),
    ]
    if bad_enum:
        out.append((json.dumps([2, "u8", action, bad_enum]), "PropertyConstraintViolation", "u8"))
    return out


async def expect_errors(ws, table) -> None:
    for frame, code, uid in table:
        await ws.send(frame)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply[0] == 4 and reply[1] == uid and reply[2] == code, (frame, reply)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_our_csms_answers_bad_frames_with_the_right_callerror_and_stays_up(version):
    sub = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}[version]

    async def body():
        server = await csms.acquire("127.0.0.1", 0)
        server.expect("CP9", version)
        try:
            async with connect(server.url + "CP9", subprotocols=[sub]) as ws:
                # a CSMS -> CP action sent to the CSMS is known to OCPP but not handled here
                await expect_errors(ws, cases(version, TO_CSMS[version], "GetCompositeSchedule"))
                await ws.send(json.dumps([2, "ok", "BootNotification", BOOT[version]]))
                reply = json.loads(await ws.recv())
                assert reply[0] == 3 and reply[2]["status"] == "Accepted"  # the connection is still fine
        finally:
            await csms.release(server)

    asyncio.run(asyncio.wait_for(body(), 30))


@pytest.mark.parametrize("cls", [VirtualWallbox16, VirtualWallbox201])
def test_our_charge_point_answers_bad_frames_with_the_right_callerror_and_stays_up(cls):
    async def body():
        got: asyncio.Queue = asyncio.Queue()

        async def fake_csms(ws):
            boot = json.loads(await ws.recv())
            assert boot[2] == "BootNotification"
            await ws.send(json.dumps([3, boot[1], {"status": "Accepted", "currentTime": "2024-01-01T00:00:00Z",
                                                   "interval": 300}]))
            await got.put(ws)
            await ws.wait_closed()

        async with serve(fake_csms, "127.0.0.1", 0, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as server:
            port = server.sockets[0].getsockname()[1]
            fam = registry.family("wallbox")
            dev = cls(fam, fam.parse_config({}), device_id="CPX")
            await dev.start_client(f"ws://127.0.0.1:{port}/")
            ws = await asyncio.wait_for(got.get(), 10)
            status = json.loads(await ws.recv())  # the status after boot
            assert status[2] == "StatusNotification"
            await ws.send(json.dumps([3, status[1], {}]))
            # a CP -> CSMS action sent to the charge point is known but not handled there
            await expect_errors(ws, cases(dev.version, TO_CP[dev.version], "StatusNotification"))
            await ws.send(json.dumps([2, "ok", "GetCompositeSchedule",
                                      {"connectorId": 1, "duration": 60} if dev.version == "1.6"
                                      else {"evseId": 1, "duration": 60}]))
            reply = json.loads(await ws.recv())
            assert reply[0] == 3 and reply[2]["status"] == "Accepted"
            await dev.stop()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_handshake_refuses_unknown_ids_and_wrong_subprotocols():
    async def body():
        server = await csms.acquire("127.0.0.1", 0)
        server.expect("KNOWN", "1.6")
        try:
            with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                await connect(server.url + "STRANGER", subprotocols=["ocpp1.6"])
            assert e.value.response.status_code == 404
            for subs in (["ocpp2.0.1"], ["chat"], None):
                with pytest.raises(websockets.exceptions.InvalidStatus) as e:
                    await connect(server.url + "KNOWN", subprotocols=subs)
                assert e.value.response.status_code == 400
            async with connect(server.url + "KNOWN", subprotocols=["ocpp2.0.1", "ocpp1.6"]) as ws:
                assert ws.subprotocol == "ocpp1.6"
        finally:
            await csms.release(server)

    asyncio.run(asyncio.wait_for(body(), 30))


def test_we_refuse_to_send_invalid_messages():
    with pytest.raises(OcppFault) as e:
        validate(2, "SetChargingProfile", {"connectorId": 1, "csChargingProfiles": {
            "chargingProfileId": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Relative",
            "chargingSchedule": {"chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                      "limit": 7.25}]}}}, "1.6")
    assert e.value.code == "PropertyConstraintViolation"  # 1.6 limits have one decimal
    with pytest.raises(OcppFault):
        validate(3, "GetCompositeSchedule", {"status": "Maybe"}, "2.0.1")
    validate(3, "GetCompositeSchedule", {"status": "Rejected"}, "2.0.1")
