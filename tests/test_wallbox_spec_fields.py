"""Accept what OCPP allows, refuse only what it forbids: every optional field and every enum value of the
messages we handle, both versions, both roles (issue 16, "found while trying the virtual charge point").

Two parts. A schema sweep: for every action our charge point and our CSMS answer, payloads built from the
official schema (required fields only, every optional field, and each enum value at each place) must get a
schema-valid CALLRESULT, never a CALLERROR: a value the schema allows is no protocol error. Then the
semantics where the standards say more than the schema, one test per rule: 1.6 makes startSchedule optional
for every kind (an Absolute profile without it runs from the start of charging); 2.0.1 K01.FR.40/41 require
it for Absolute/Recurring and forbid it for Relative, K01.FR.22 keeps ChargingStationExternalConstraints from
the CSMS, K01.FR.38 forbids a Relative station maximum, K01.FR.19/20/45 bound the phases, K01.FR.06/39 refuse
doubles; expired validity, zero duration, minChargingRate, salesTariff, extra schedules are allowed.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from datetime import datetime, timedelta, UTC
from typing import Any, ClassVar
from collections.abc import Iterator

import pytest
from ocpp.messages import Call

from devices import registry
from devices.wallbox import profiles as pf
from devices.wallbox.rpc import Endpoint
from devices.wallbox.security import CsmsSecurity
from devices.wallbox.schemas import schema, validate
from devices.wallbox.session import TX_IDS, CsmsSession
from devices.wallbox.station_state import StationState
from devices.wallbox.virtual import VirtualWallbox16, VirtualWallbox201

FAM = registry.family("wallbox")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
NOW = "2024-01-01T00:01:00Z"
EV = {"ev_plugged": 1.0, "ev_id": 1.0, "ev_soc_arrival": 0.2, "ev_capacity_wh": 60_000.0, "ev_p_max_w": 22_000.0}
DEVICES = {"1.6": VirtualWallbox16, "2.0.1": VirtualWallbox201}


# -- payloads from the schema ----------------------------------------------------------------------------------
OVERRIDES: dict[str, Any] = {"connectorId": 1, "evseId": 1, "id": 1, "startPeriod": 0, "limit": 6.0, "stackLevel": 0,
                             "numberPhases": 1, "duration": 60, "multiplier": 0, "meterStart": 100, "meterStop": 200,
                             "seqNo": 0, "remoteStartId": 1, "attributeValue": "10"}


def instance(node: dict, defs: dict, maximal: bool, name: str = "") -> Any:
    """A valid value for ``node``: required properties only, or every property (``maximal``)."""
    if "$ref" in node:
        return instance(defs[node["$ref"].rsplit("/", 1)[-1]], defs, maximal, name)
    if "enum" in node:
        return node["enum"][0]
    kind = node.get("type")
    if kind == "object":
        props = node.get("properties", {})
        keys = list(props) if maximal else node.get("required", [])
        return {k: instance(props[k], defs, maximal, k) for k in keys}
    if kind == "array":
        return [instance(node["items"], defs, maximal, name) for _ in range(max(1, node.get("minItems", 1)))]
    if name in OVERRIDES and kind in ("integer", "number"):
        return OVERRIDES[name] if kind == "number" else int(OVERRIDES[name])
    if kind == "integer":
        return max(1, node.get("minimum", 1))
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if node.get("format") == "date-time":
        return NOW
    if name == "value":
        return "1.0"
    return OVERRIDES.get(name, "x") if isinstance(OVERRIDES.get(name, "x"), str) else "x"


def enum_places(node: dict, defs: dict, path: tuple = ()) -> Iterator[tuple[tuple, list]]:
    """(path, values) of every enum reachable from ``node`` (arrays: their first item)."""
    if "$ref" in node:
        yield from enum_places(defs[node["$ref"].rsplit("/", 1)[-1]], defs, path)
    elif "enum" in node:
        yield path, node["enum"]
    elif node.get("type") == "object":
        for k, sub in node.get("properties", {}).items():
            yield from enum_places(sub, defs, (*path, k))
    elif node.get("type") == "array":
        yield from enum_places(node["items"], defs, (*path, 0))


def payloads(action: str, version: str) -> Iterator[tuple[str, dict]]:
    sch = schema(2, action, version)
    defs = sch.get("definitions", {})
    yield "required only", instance(sch, defs, False)
    full = instance(sch, defs, True)
    yield "every field", full
    for path, values in enum_places(sch, defs):
        for value in values:
            p = copy.deepcopy(full)
            node = p
            for k in path[:-1]:
                node = node[k]
            node[path[-1]] = value
            yield f"{'/'.join(map(str, path))}={value}", p


class Wire:
    """A connection that records what an endpoint sends."""

    def __init__(self) -> None:
        self.sent: list = []

    async def send(self, text: str) -> None:
        self.sent.append(json.loads(text))

    async def recv(self) -> str:
        await asyncio.Future()
        return ""

    async def close(self) -> None:
        pass


async def answer(ep: Endpoint, action: str, payload: dict) -> list:
    await ep.handle_call(Call("u1", action, payload))
    return ep._connection.sent[-1]


def sweep_failures(ep: Endpoint, actions: list[str], version: str, fix=lambda action, p: p) -> list[str]:
    bad = []

    async def body():
        for action in actions:
            for label, payload in payloads(action, version):
                reply = await answer(ep, action, fix(action, payload))
                if reply[0] != 3:
                    bad.append(f"{action} [{label}]: {reply[2]} {reply[3]}")
                else:
                    validate(3, action, reply[2], version)
    asyncio.run(body())
    return bad


def charge_point(version: str, config: dict | None = None):
    dev = DEVICES[version](FAM, FAM.parse_config(config or {}), device_id="SPEC")
    cp = dev.make_charge_point("ws://127.0.0.1:1/")
    dev.cp = cp
    return dev, cp


def endpoint_of(cp) -> Endpoint:
    ep = Endpoint("SPEC", Wire(), cp.version)
    ep.handlers.update({a: getattr(cp, n) for a, n in cp.HANDLERS.items()})
    return ep


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
@pytest.mark.parametrize("with_tx", [False, True], ids=["idle", "charging"])
def test_every_field_and_enum_value_the_schema_allows_gets_an_answer_from_our_charge_point(version, with_tx):
    dev, cp = charge_point(version)
    if with_tx:
        asyncio.run(dev.advance(0, 60, EV))
        assert cp.tx is not None
    bad = sweep_failures(endpoint_of(cp), sorted(cp.HANDLERS), version)
    assert not bad, "\n".join(bad)


class Host:
    heartbeat_s = 300
    stats: ClassVar[Counter] = Counter()
    security = CsmsSecurity()  # no PKI: a SignCertificate is answered Rejected

    def emit(self, *a) -> None:
        pass


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_every_field_and_enum_value_the_schema_allows_gets_an_answer_from_our_csms(version):
    state = StationState("SPEC", version)
    session = CsmsSession(Host(), state, Wire())
    tx = TX_IDS.issue()  # a transaction our CSMS started, so that its stop is a possible one
    state.known_tx[str(tx)] = True

    def fix(action: str, p: dict) -> dict:
        if version == "1.6" and "transactionId" in p:
            p["transactionId"] = tx
        return p

    bad = sweep_failures(session.endpoint, sorted(session.endpoint.handlers), version, fix)
    assert not bad, "\n".join(bad)


# -- the semantics beyond the schema ---------------------------------------------------------------------------
def profile_16(**kw) -> dict:
    sched = {"chargingRateUnit": "W", "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6000.0},
                                                                 {"startPeriod": 120, "limit": 3000.0}]}
    sched.update(kw.pop("schedule", {}))
    return {"chargingProfileId": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": sched, **kw}


def profile_201(**kw) -> dict:
    sched = {"id": 1, "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "W",
             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6000.0}]}
    sched.update(kw.pop("schedule", {}))
    schedules = kw.pop("schedules", None)
    return {"id": 7, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": schedules or [sched], **kw}


def set_profile(cp, raw: dict, evse: int = 1) -> dict:
    ep = endpoint_of(cp)
    payload = ({"connectorId": evse, "csChargingProfiles": raw} if cp.version == "1.6"
               else {"evseId": evse, "chargingProfile": raw})
    reply = asyncio.run(answer(ep, "SetChargingProfile", payload))
    assert reply[0] == 3, reply
    return reply[2]


def test_v16_absolute_profile_without_start_schedule_is_accepted_and_runs_from_the_start_of_charging():
    dev, cp = charge_point("1.6")
    assert set_profile(cp, profile_16())["status"] == "Accepted"  # the reproduction of issue 16
    asyncio.run(dev.advance(0, 60, {**EV, "ev_plugged": 0.0}))
    asyncio.run(dev.advance(60, 60, EV))  # charging starts at t = 60 s
    start = cp.tx.start
    limit = lambda dt: pf.limit_at(cp.profiles, start + timedelta(seconds=dt), cp.station,  # noqa: E731
                                   tx=cp._tx_context())
    assert limit(60) == 6000 and limit(119) == 6000 and limit(121) == 3000
    assert dev.bank.p_w[0] == pytest.approx(6000)


@pytest.mark.parametrize("raw, status", [
    (profile_16(chargingProfileKind="Recurring", recurrencyKind="Daily"), "Accepted"),  # recurs from charging start
    (profile_16(chargingProfileKind="Relative", schedule={"startSchedule": "2024-01-01T00:00:00Z"}), "Accepted"),
    (profile_16(recurrencyKind="Weekly"), "Accepted"),  # recurrencyKind on an Absolute profile: ignored
    (profile_16(validTo="2023-01-01T00:00:00Z"), "Accepted"),  # expired: allowed, never applies
    (profile_16(validFrom="2024-02-01T00:00:00Z", validTo="2024-01-15T00:00:00Z"), "Accepted"),
    (profile_16(schedule={"duration": 0}), "Accepted"),
    (profile_16(schedule={"minChargingRate": 1380.0}), "Accepted"),
    (profile_16(chargingProfilePurpose="ChargePointMaxProfile", chargingProfileKind="Relative"), "Accepted"),
    (profile_16(schedule={"duration": -1}), "Rejected"),
    (profile_16(transactionId=5), "Rejected"),  # transactionId is only valid for a TxProfile
    (profile_16(chargingProfileKind="Recurring"), "Rejected"),  # a recurrence without its kind
])
def test_v16_profile_fields(raw, status):
    _, cp = charge_point("1.6")
    evse = 0 if raw["chargingProfilePurpose"] == "ChargePointMaxProfile" else 1
    assert set_profile(cp, raw, evse)["status"] == status


@pytest.mark.parametrize("raw, evse, status", [
    (profile_201(schedule={"startSchedule": None}), 1, "Rejected"),  # K01.FR.40
    (profile_201(chargingProfileKind="Recurring", recurrencyKind="Daily", schedule={"startSchedule": None}), 1,
     "Rejected"),  # K01.FR.40
    (profile_201(chargingProfileKind="Relative"), 1, "Rejected"),  # K01.FR.41
    (profile_201(chargingProfilePurpose="ChargingStationExternalConstraints"), 0, "Rejected"),  # K01.FR.22
    (profile_201(chargingProfilePurpose="ChargingStationMaxProfile", chargingProfileKind="Relative",
                 schedule={"startSchedule": None}), 0, "Rejected"),  # K01.FR.38
    (profile_201(chargingProfilePurpose="ChargingStationMaxProfile"), 1, "Rejected"),  # K01.FR.03: EVSE 0 only
    (profile_201(schedule={"chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": 1,
                                                       "phaseToUse": 2}]}), 1, "Rejected"),  # K01.FR.20
    (profile_201(), 2, "Rejected"),  # K01.FR.28: no such EVSE
    (profile_201(validTo="2023-01-01T00:00:00Z"), 1, "Accepted"),
    (profile_201(schedule={"duration": 0, "minChargingRate": 1.0}), 1, "Accepted"),
    (profile_201(schedule={"salesTariff": {"id": 1, "salesTariffEntry": [
        {"relativeTimeInterval": {"start": 0}, "ePriceLevel": 1}]}}), 1, "Accepted"),
    (profile_201(schedules=[{"id": i, "startSchedule": "2024-01-01T00:00:00Z", "chargingRateUnit": "A",
                             "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 16.0}]} for i in (1, 2, 3)]),
     1, "Accepted"),
])
def test_v201_profile_fields(raw, evse, status):
    for sched in raw["chargingSchedule"]:
        if sched.get("startSchedule", "") is None:
            del sched["startSchedule"]
    _, cp = charge_point("2.0.1")
    assert set_profile(cp, raw, evse)["status"] == status


def test_v201_number_of_phases_is_bounded_by_the_supply():  # K01.FR.45
    _, cp = charge_point("2.0.1", {"phases": 1})
    three = profile_201(schedule={"chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}]})
    assert set_profile(cp, three)["status"] == "Rejected"
    _, cp3 = charge_point("2.0.1")
    assert set_profile(cp3, three)["status"] == "Accepted"


def test_v201_tx_profiles_for_one_transaction_and_stack_level_are_refused_twice():  # K01.FR.39
    dev, cp = charge_point("2.0.1")
    asyncio.run(dev.advance(0, 60, EV))
    tx = cp.tx.local_id
    first = profile_201(chargingProfilePurpose="TxProfile", transactionId=tx)
    assert set_profile(cp, first)["status"] == "Accepted"
    assert set_profile(cp, {**first, "id": 8})["status"] == "Rejected"
    assert set_profile(cp, {**first, "id": 8, "stackLevel": 2})["status"] == "Accepted"
    assert set_profile(cp, {**first, "stackLevel": 1})["status"] == "Accepted"  # same id replaces


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_remote_start_profile_must_be_a_tx_profile_without_transaction_id(version):
    _, cp = charge_point(version, {"auto_start": False})
    ep = endpoint_of(cp)
    if version == "1.6":
        make = lambda prof: ("RemoteStartTransaction", {"idTag": "A", "connectorId": 1,  # noqa: E731
                                                        "chargingProfile": prof})
        tx_prof = profile_16(chargingProfilePurpose="TxProfile", chargingProfileKind="Relative")
    else:
        make = lambda prof: ("RequestStartTransaction", {"idToken": {"idToken": "A", "type": "Central"},  # noqa: E731
                                                         "remoteStartId": 3, "evseId": 1, "chargingProfile": prof})
        tx_prof = profile_201(chargingProfilePurpose="TxProfile", chargingProfileKind="Relative",
                              schedule={"startSchedule": None})
        del tx_prof["chargingSchedule"][0]["startSchedule"]
    with_id = {**tx_prof, "transactionId": 9 if version == "1.6" else "T9"}
    default = {**tx_prof, "chargingProfilePurpose": "TxDefaultProfile"}
    for prof, status in ((with_id, "Rejected"), (default, "Rejected"), (tx_prof, "Accepted")):
        reply = asyncio.run(answer(ep, *make(prof)))
        assert reply[0] == 3 and reply[2]["status"] == status, (prof, reply)


def test_v201_reset_on_idle_waits_for_the_transaction_and_evse_reset_is_refused():
    dev, cp = charge_point("2.0.1")
    asyncio.run(dev.advance(0, 60, EV))
    ep = endpoint_of(cp)
    assert asyncio.run(answer(ep, "Reset", {"type": "OnIdle"}))[2]["status"] == "Scheduled"
    assert cp._reset_after_tx
    assert asyncio.run(answer(ep, "Reset", {"type": "Immediate", "evseId": 1}))[2]["status"] == "Rejected"


def test_v201_variables_answer_only_the_actual_attribute_and_know_the_message_attempts():
    _, cp = charge_point("2.0.1")
    ep = endpoint_of(cp)
    req = {"getVariableData": [
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "MessageAttempts", "instance": "TransactionEvent"}},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}, "attributeType": "Target"},
        {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "MessageAttempts"}},
    ]}
    res = asyncio.run(answer(ep, "GetVariables", req))[2]["getVariableResult"]
    assert [r["attributeStatus"] for r in res] == ["Accepted", "NotSupportedAttributeType", "UnknownVariable"]
    assert res[0]["attributeValue"] == "5"
    req = {"setVariableData": [{"component": {"name": "OCPPCommCtrlr"}, "attributeValue": "2",
                                "variable": {"name": "MessageAttemptInterval", "instance": "TransactionEvent"}}]}
    assert asyncio.run(answer(ep, "SetVariables", req))[2]["setVariableResult"][0]["attributeStatus"] == "Accepted"
    assert cp.settings["tx_retry_interval_s"] == 2


def test_v201_clearing_external_constraints_is_not_the_csms_business():  # K10.FR.06
    _, cp = charge_point("2.0.1")
    reply = asyncio.run(answer(endpoint_of(cp), "ClearChargingProfile", {
        "chargingProfileCriteria": {"chargingProfilePurpose": "ChargingStationExternalConstraints"}}))
    assert reply[2]["status"] == "Unknown"


def test_v16_transaction_message_retry_keys_are_configurable():
    _, cp = charge_point("1.6")
    ep = endpoint_of(cp)
    for key, value, status in (("TransactionMessageAttempts", "3", "Accepted"),
                               ("TransactionMessageRetryInterval", "0.5", "Accepted"),
                               ("TransactionMessageAttempts", "0", "Rejected")):
        reply = asyncio.run(answer(ep, "ChangeConfiguration", {"key": key, "value": value}))
        assert reply[2]["status"] == status
    assert cp.settings["tx_attempts"] == 3 and cp.settings["tx_retry_interval_s"] == 0.5
