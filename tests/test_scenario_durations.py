"""The one duration grammar (cosim/durations.py): every parser of the framework accepts the same texts."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cosim import durations
from cosim.durations import MAX_S, parse_seconds, positive_whole_seconds, seconds, whole_seconds
from cosim.messaging.config import DelaySpec
from cosim.messaging.config import parse_seconds as messaging_seconds
from cosim.scenario import parse_duration
from hil_bench.config import BenchSpec, Drill
from hil_bench.config import parse_seconds as bench_seconds

UNIT_S = {"": 1.0, **durations.UNITS}


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(sorted(UNIT_S)), st.sampled_from(["", " "]))
def test_number_and_unit_round_trip(n, unit, space):
    expected = n * UNIT_S[unit]
    text = f"{n}{space}{unit}"
    if expected > MAX_S:
        with pytest.raises(ValueError, match="at most 3650d"):
            parse_seconds(text)
        return
    assert parse_seconds(text) == pytest.approx(expected)
    # the scenario, the messaging section and the bench section read it the same way
    assert messaging_seconds(text) == bench_seconds(text) == parse_seconds(text)
    if expected == int(expected) and expected > 0:
        assert parse_duration(text) == int(expected)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=20), st.floats(), st.integers(), st.none(), st.booleans(), st.lists(st.integers())))
def test_any_input_is_a_duration_or_a_value_error(value):
    try:
        s = parse_seconds(value)
    except ValueError as exc:
        assert str(exc)  # a message for the user, never an empty one
    else:
        assert math.isfinite(s) and 0 <= s <= MAX_S


@pytest.mark.parametrize("text,seconds_", [("1d", 86400), ("15min", 900), ("90s", 90), ("2h", 7200), (60, 60),
                                           ("60", 60), ("1w", 604800), ("0.5h", 1800), ("250ms", 0.25),
                                           ("2 sec", 2), ("3m", 180), (" 7D ", 604800), (".5min", 30)])
def test_examples(text, seconds_):
    assert seconds(text) == seconds_


@pytest.mark.parametrize("bad,message", [
    ("abc", "expected a duration"), ("1 fortnight", "units: ms, s"), ("-5min", "not a negative"),
    (-1, "not a negative"), (float("nan"), "NaN"), (float("inf"), "at most 3650d"), ("100000000000d", "at most"),
    ("1e3", "expected a duration"), ("1h30min", "expected a duration"), (True, "expected a duration"),
    (None, "expected a duration"), ("", "expected a duration"), ("\u0663s", "expected a duration"),
])
def test_refusals_say_what_was_expected(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_seconds(bad)


def test_each_use_adds_its_own_constraint():
    assert whole_seconds("0s") == 0
    with pytest.raises(ValueError, match="whole seconds"):
        whole_seconds("250ms")
    with pytest.raises(ValueError, match="> 0"):
        positive_whole_seconds("0")
    assert positive_whole_seconds(MAX_S) == MAX_S


def test_sections_of_a_scenario_use_the_grammar():
    assert DelaySpec(s="250ms").s == 0.25
    assert BenchSpec(tolerance="1min").tolerance == 60.0
    assert Drill(at="1w", device="d", fault="controller_silent").at == 604800
    with pytest.raises(ValueError, match="at most"):
        Drill(at="5000d", device="d", fault="controller_silent")
