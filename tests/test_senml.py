"""SenML (RFC 8428) codec: resolution, validation, compact encoding, round trip and fuzzing."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cosim.messaging import senml, units
from cosim.messaging.senml import RawRecord, Record, SenMLError

NOW = 1_600_000_000.0


# ------------------------------------------------------------------------------------------- resolution
def test_rfc_multiple_datapoints_example_resolves():
    # RFC 8428 §5.1.2-style pack: base name, base time, base unit, relative record times
    pack = [
        {"bn": "urn:dev:ow:10e2073a01080063:", "bt": 1.320067464e9, "bu": "A", "bver": 5,
         "n": "voltage", "u": "V", "v": 120.1},
        {"n": "current", "t": -5, "v": 1.2},
        {"n": "current", "t": -4, "v": 1.3},
    ]
    recs = senml.decode(json.dumps(pack))
    assert [r.name for r in recs] == ["urn:dev:ow:10e2073a01080063:voltage"] + ["urn:dev:ow:10e2073a01080063:current"] * 2
    assert [r.unit for r in recs] == ["V", "A", "A"]
    assert [r.time for r in recs] == [1.320067464e9, 1.320067464e9 - 5, 1.320067464e9 - 4]
    assert recs[1].value == 1.2


def test_base_fields_apply_until_replaced():
    pack = [{"bn": "a/", "bu": "W", "bv": 100, "n": "x", "v": 1},
            {"n": "y", "v": 2},
            {"bn": "b/", "bu": "V", "bv": 0, "n": "z", "v": 3, "t": 2e9}]
    recs = senml.decode(json.dumps(pack), now=NOW)
    assert [(r.name, r.unit, r.value) for r in recs] == [("a/x", "W", 101.0), ("a/y", "W", 102.0), ("b/z", "V", 3.0)]
    assert recs[2].time == 2e9


def test_base_sum_and_sum_only_record():
    recs = senml.decode('[{"bn":"m/","bs":10,"n":"e","u":"Wh","s":5}]', now=NOW)
    assert recs[0].sum == 15.0 and recs[0].value is None and recs[0].kind == "s" and recs[0].result == 15.0


def test_relative_times_resolve_against_now():
    recs = senml.decode('[{"n":"a","v":1},{"n":"b","v":2,"t":-60},{"n":"c","v":3,"t":30}]', now=NOW)
    assert [r.time for r in recs] == [NOW, NOW - 60, NOW + 30]
    # a base time below 2**28 is relative too; at or above it is absolute
    recs = senml.decode('[{"bt":-10,"n":"a","v":1},{"n":"b","v":1,"t":268435456}]', now=NOW)
    assert recs[0].time == NOW - 10 and recs[1].time == 268435456 - 10 + NOW  # bt carries over: -10 + 2**28 < 2**28
    recs = senml.decode('[{"n":"a","v":1,"t":268435456}]', now=NOW)
    assert recs[0].time == 268435456.0


def test_value_kinds():
    recs = senml.decode('[{"n":"s","vs":"on"},{"n":"b","vb":false},{"n":"d","vd":"aGVsbG8"},{"n":"v","v":-0.5}]',
                        now=NOW)
    assert [r.kind for r in recs] == ["vs", "vb", "vd", "v"]
    assert [r.result for r in recs] == ["on", False, "aGVsbG8", -0.5]
    assert recs[2].data_bytes() == b"hello"


def test_unknown_optional_fields_are_ignored_but_must_understand_fields_rejected():
    assert senml.decode('[{"n":"a","v":1,"foo":"bar"}]', now=NOW)[0].value == 1.0
    with pytest.raises(SenMLError, match="must-understand"):
        senml.decode('[{"n":"a","v":1,"foo_":"bar"}]', now=NOW)


# ------------------------------------------------------------------------------------------- rejections
@pytest.mark.parametrize("payload, reason", [
    (b"", "empty payload"),
    (b"\xff\xfe", "not UTF-8"),
    (b"{", "not JSON"),
    (b'{"n":"a","v":1}', "JSON array"),
    (b"[]", "empty pack"),
    (b"[1]", "JSON object"),
    (b'[{"n":"a"}]', "no value"),
    (b'[{"v":1}]', "no name"),
    (b'[{"n":"a","v":1,"vs":"x"}]', "more than one value"),
    (b'[{"n":"-a","v":1}]', "invalid name"),
    (b'[{"n":"a b","v":1}]', "invalid name"),
    (b'[{"n":"a","v":"1"}]', "must be a number"),
    (b'[{"n":"a","v":true}]', "must be a number"),
    (b'[{"n":"a","vb":1}]', "true or false"),
    (b'[{"n":1,"v":1}]', "must be a string"),
    (b'[{"n":"a","v":NaN}]', "is not a JSON number"),
    (b'[{"n":"a","v":Infinity}]', "is not a JSON number"),
    (b'[{"n":"a","v":1e999}]', "not finite"),
    (b'[{"n":"a","v":1,"v":2}]', "duplicate key"),
    (b'[{"n":"a","v":1,"u":"furlong"}]', "unknown unit"),
    (b'[{"n":"a","v":1,"u":""}]', "unit"),
    (b'[{"n":"a","vd":"a=="}]', "base64url"),
    (b'[{"n":"a","vd":"abcde"}]', "base64url"),
    (b'[{"n":"a","v":1,"ut":-1}]', "ut (update time) must be within"),
    (b'[{"bver":11,"n":"a","v":1}]', "newer than"),
    (b'[{"bver":0,"n":"a","v":1}]', "positive integer"),
    (b'[{"bver":10,"n":"a","v":1},{"bver":9,"n":"b","v":1}]', "differs"),
    (b'[{"n":"a","v":' + b"9" * 5000 + b"}]", "number literal longer than"),
    (b"[" * 100_000 + b"]" * 100_000, "nested deeper than"),
    (b'[{"n":"a","v":1,"x":[[[[1]]]]}]', "nested deeper than"),
    # times outside the sane window (1978..2106): "t": 1e300 once ended a run in the SensorThings mapping
    (b'[{"n":"a","v":1,"t":1e300}]', "outside the sane window"),
    (b'[{"n":"a","v":1,"t":-1e300}]', "outside the sane window"),
    (b'[{"n":"a","v":1,"bt":4294967297}]', "outside the sane window"),
    (b'[{"n":"a","v":1,"t":-1600000000}]', "outside the sane window"),  # relative: before 1978
    (b'[{"n":"a","v":1,"ut":1e300}]', "ut (update time) must be within"),
])
def test_bad_payloads_raise_senml_error_with_reason(payload, reason):
    with pytest.raises(SenMLError) as exc_info:
        senml.decode(payload, now=NOW)
    assert reason in str(exc_info.value)
    assert exc_info.value.reason


def test_oversized_payload_rejected():
    with pytest.raises(SenMLError, match="larger than"):
        senml.decode(b"[" + b" " * 100 + b"]", max_bytes=50)


def test_non_strict_units_accept_any_unit():
    assert senml.decode('[{"n":"a","v":1,"u":"furlong"}]', now=NOW, strict_units=False)[0].unit == "furlong"


def test_record_index_in_error():
    with pytest.raises(SenMLError) as exc_info:
        senml.decode('[{"n":"a","v":1},{"n":"b"}]', now=NOW)
    assert exc_info.value.index == 1 and str(exc_info.value).startswith("record 1:")


# --------------------------------------------------------------------------------------------- encoding
def test_compact_encoding_uses_base_fields():
    t0 = 1_622_505_600.0
    recs = [Record("fur/ess1/p_w", value=float(h * 100), unit="W", time=t0 + 3600 * h) for h in range(24)]
    raw = senml.to_raw(recs)
    assert raw[0].bn == "fur/ess1/" and raw[0].bt == t0 and raw[0].bu == "W"
    assert raw[0].t is None and raw[1].t == 3600 and all(r.u is None for r in raw)
    assert all(r.n == "p_w" for r in raw)
    payload = senml.encode(recs)
    assert payload.startswith(b'[{"bn":"fur/ess1/","bt":1622505600.0,"bu":"W","n":"p_w","v":0.0}')
    assert senml.decode(payload) == recs


def test_encoding_keeps_absolute_times_when_base_time_would_round():
    recs = [Record("a/x", value=1.0, time=1_600_000_000.1), Record("a/y", value=2.0, time=1_600_000_000.3)]
    raw = senml.to_raw(recs)
    if raw[0].bt is not None:  # only used when exact
        assert all((r.t or 0.0) + raw[0].bt == rec.time for r, rec in zip(raw, recs))
    assert senml.decode(senml.encode(recs)) == recs


def test_explicit_base_name_must_prefix_every_name():
    with pytest.raises(SenMLError, match="base name"):
        senml.encode([Record("a/x", value=1.0)], base_name="b/")
    assert json.loads(senml.encode([Record("a/x", value=1.0)], base_name="a/")) == [{"bn": "a/", "n": "x", "v": 1.0}]


def test_encode_validates_records():
    with pytest.raises(SenMLError, match="more than one value"):
        senml.encode([Record("a", value=1.0, string="x")])
    with pytest.raises(SenMLError, match="not finite"):
        senml.encode([Record("a", value=math.nan)])
    with pytest.raises(SenMLError, match="empty pack"):
        senml.encode([])
    with pytest.raises(SenMLError, match="expected a Record"):
        senml.encode([{"n": "a", "v": 1}])  # type: ignore[list-item]


def test_encoding_is_deterministic_and_json_compact():
    recs = [Record("a/x", value=0.1, unit="W", time=1.6e9)]
    assert senml.encode(recs) == senml.encode(list(recs)) == b'[{"n":"a/x","u":"W","v":0.1,"t":1600000000.0}]'


def test_raw_record_json_round_trip():
    raw = RawRecord(bn="a/", bt=1.6e9, n="x", v=1.0)
    assert senml.resolve([raw], now=NOW) == senml.decode(json.dumps([raw.to_json()]), now=NOW)


# ------------------------------------------------------------------------------------------------ units
def test_units_registry_and_s4g_extensions():
    for u in ("W", "Wh", "kW", "kWh", "V", "A", "var", "%", "/", "Cel", "EUR/kWh", "pu", "VA", "kvar"):
        assert units.is_known(u), u
    assert not units.is_known("kw") and not units.is_known("Watt")
    assert units.convert(1.5, "kW", "W") == 1500.0
    assert units.convert(2.0, "kWh", "Wh") == 2000.0
    assert units.convert(50.0, "%", "/") == 0.5
    assert units.convert(20.0, "Cel", "K") == pytest.approx(293.15)
    with pytest.raises(ValueError, match="cannot convert"):
        units.convert(1.0, "W", "Wh")
    with pytest.raises(ValueError, match="no conversion"):
        units.convert(1.0, "W", "furlong")


# ------------------------------------------------------------------------------------------- hypothesis
_name_head = st.sampled_from("abcxyzABC019")
_name_tail = st.text(alphabet="abcXYZ0189-:._/", max_size=12)
names = st.builds(lambda h, t: h + t, _name_head, _name_tail)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
abs_times = st.floats(min_value=2.0**28, max_value=4e9, allow_nan=False)
b64 = st.binary(max_size=16).map(lambda b: __import__("base64").urlsafe_b64encode(b).decode().rstrip("="))


@st.composite
def records(draw, time=abs_times):
    kind = draw(st.sampled_from(["v", "vs", "vb", "vd", "s", "v+s"]))
    kw = {}
    if kind in ("v", "v+s"):
        kw["value"] = draw(finite)
    if kind in ("s", "v+s"):
        kw["sum"] = draw(finite)
    if kind == "vs":
        kw["string"] = draw(st.text(max_size=10))
    if kind == "vb":
        kw["boolean"] = draw(st.booleans())
    if kind == "vd":
        kw["data"] = draw(b64)
    return Record(
        name=draw(st.sampled_from(["", "site1/dev2/", "urn:dev:x:"])) + draw(names),
        unit=draw(st.none() | st.sampled_from(sorted(units.KNOWN_UNITS))),
        time=draw(time),
        update_time=draw(st.none() | st.floats(min_value=0, max_value=1e6, allow_nan=False)),
        **kw,
    )


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), min_size=1, max_size=12), st.booleans())
def test_round_trip_encode_decode(recs, compact):
    payload = senml.encode(recs, compact=compact)
    assert senml.decode(payload, now=NOW) == recs
    assert senml.decode(payload.decode(), now=NOW) == recs


@settings(max_examples=100, deadline=None)
@given(st.lists(records(time=st.none() | st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)),
                min_size=1, max_size=6))
def test_round_trip_relative_and_missing_times(recs):
    decoded = senml.decode(senml.encode(recs), now=NOW)
    expected = [Record(**{**{f: getattr(r, f) for f in Record.__slots__},
                          "time": NOW + (r.time if r.time is not None else 0.0)}) for r in recs]
    for got, want in zip(decoded, expected):
        assert got.time == pytest.approx(want.time, abs=1e-6)
        assert (got.name, got.result, got.unit) == (want.name, want.result, want.unit)


def _only_senml_errors(payload):
    try:
        out = senml.decode(payload, now=NOW)
    except SenMLError as exc:
        assert exc.reason
        return None
    assert isinstance(out, list) and all(isinstance(r, Record) for r in out)
    return out


@pytest.mark.timeout(60)  # never a hang
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(payload):
    _only_senml_errors(payload)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["n", "v", "vs", "vb", "vd", "s", "t", "ut", "u", "bn", "bt", "bu", "bv", "bs", "bver", "x",
                         "x_"]), children, max_size=5),
    max_leaves=20)


@pytest.mark.timeout(60)  # never a hang
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_random_json(value):
    _only_senml_errors(json.dumps(value))


@pytest.mark.timeout(60)  # never a hang
@settings(max_examples=150, deadline=None)
@given(st.lists(records(), min_size=1, max_size=5), st.data())
def test_fuzz_truncated_and_mutated_payloads(recs, data):
    payload = senml.encode(recs)
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    with pytest.raises(SenMLError):  # a strict prefix of a JSON array is never valid JSON
        senml.decode(payload[:cut], now=NOW)
    pos = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    byte = data.draw(st.integers(min_value=0, max_value=255))
    _only_senml_errors(payload[:pos] + bytes([byte]) + payload[pos + 1:])
