"""The GESSCon schedule codec: SenML round trip, and any malformed pack is a ValueError (never another crash)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controllers.schedule_codec import HOURS, from_senml, schedule_value, to_senml

finite = st.floats(-1e6, 1e6, allow_nan=False)
json_scalar = st.none() | st.booleans() | st.integers(-10**400, 10**400) | st.floats() | st.text(max_size=8)
json_value = st.recursive(json_scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c,
                                                                                          max_size=3), max_leaves=8)
record_keys = st.sampled_from(["bn", "bt", "bu", "n", "t", "u", "v"])


@given(st.text(min_size=1, max_size=12).filter(lambda s: "/" not in s), st.integers(0, 2**32),
       st.lists(finite, min_size=HOURS, max_size=HOURS))
def test_round_trip(ess, t0, values):
    ess_back, t0_back, v = from_senml(to_senml(ess, t0, values))
    assert (ess_back, t0_back) == (ess, float(t0))
    assert np.array_equal(v, np.asarray(values, dtype=float))
    assert schedule_value(to_senml(ess, t0, values), t0 + 3600 * 3 + 1) == pytest.approx(values[3])


@given(st.lists(st.dictionaries(record_keys, json_value, max_size=7), max_size=30) | json_value)
def test_malformed_pack_is_a_value_error(pack):
    try:
        from_senml(pack)
    except ValueError:
        pass
    assert schedule_value(pack, 0.0) is None or isinstance(schedule_value(pack, 0.0), float)


@given(st.integers(0, HOURS - 1), st.sampled_from(["bt", "t", "v", "n", "bn", "u"]), json_value)
def test_one_corrupted_field_is_a_value_error(h, key, bad):
    pack = to_senml("ess", 1_560_556_800, np.arange(HOURS, dtype=float))
    pack[h] = {**pack[h], key: bad}
    try:
        from_senml(pack)
    except ValueError:
        pass
