"""The bounded JSON decode every network input goes through (devices/wire_json.py)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import wire_json
from devices.wire_json import WireDecodeError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_of_ordinary_documents(value):
    assert wire_json.loads(json.dumps(value)) == value
    assert wire_json.loads(json.dumps(value).encode()) == value


@given(st.binary(max_size=200))
@settings(max_examples=300)
def test_any_bytes_decode_or_raise_the_typed_error(data):
    try:
        wire_json.loads(data)
    except WireDecodeError as exc:
        assert exc.reason


@pytest.mark.parametrize("depth", [33, 1000, 100_000])
def test_deep_nesting_is_refused_before_parsing(depth):
    with pytest.raises(WireDecodeError, match="nested deeper"):
        wire_json.loads("[" * depth + "]" * depth)
    with pytest.raises(WireDecodeError, match="nested deeper"):
        wire_json.loads('{"a":' * depth + "1" + "}" * depth)


def test_brackets_inside_strings_do_not_count_and_escaped_quotes_do_not_end_strings():
    text = json.dumps(["[" * 100, '\\"{{{{' * 50, {"k": "]]]"}])
    assert wire_json.loads(text)[0] == "[" * 100


def test_depth_at_the_limit_passes():
    assert isinstance(wire_json.loads("[" * 32 + "]" * 32), list)


@pytest.mark.parametrize("text, reason", [
    ("[NaN]", "NaN"), ("[Infinity]", "Infinity"), ("[-Infinity]", "Infinity"),
    ('{"a": 1, "a": 2}', "duplicate key"), ("[1" + "0" * 100 + "]", "number literal"),
    ("[1,", "not JSON"), ("", "not JSON"),
])
def test_refusals_name_their_reason(text, reason):
    with pytest.raises(WireDecodeError, match=reason):
        wire_json.loads(text)


def test_size_and_encoding_limits():
    with pytest.raises(WireDecodeError, match="larger than"):
        wire_json.loads(b"[" + b"1," * 600_000 + b"1]")
    with pytest.raises(WireDecodeError, match="larger than 10"):
        wire_json.loads('"' + "é" * 8 + '"', max_bytes=10)  # 8 characters, 16 bytes
    with pytest.raises(WireDecodeError, match="not UTF-8"):
        wire_json.loads('["caf\xe9"]'.encode("latin-1"))


def test_duplicates_may_be_allowed_where_a_protocol_allows_them():
    assert wire_json.loads('{"a": 1, "a": 2}', reject_duplicates=False) == {"a": 2}
