"""The sessions file reader: a cut-short last record (a crashed writer) is dropped, counted and warned about while
every complete record is kept; corruption before the end is a typed error naming the line."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.sessions_file import SessionsFileError, TruncatedSessionsWarning, read_sessions, scan_sessions

records = st.lists(st.one_of(
    st.fixed_dictionaries({"record": st.just("session"), "site": st.sampled_from(["a", "b"]),
                           "e_delivered_wh": st.floats(0, 1e5), "note": st.text(max_size=20)}),
    st.fixed_dictionaries({"record": st.just("site"), "site": st.sampled_from(["a", "b"]),
                           "p_peak_w": st.floats(0, 1e5)})), min_size=1, max_size=12)


def _write(path, rows) -> bytes:
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records, cut=st.floats(0, 1))
def test_a_file_cut_anywhere_keeps_every_complete_record(tmp_path, rows, cut):
    path = tmp_path / "sessions.jsonl"
    data = _write(path, rows)
    n = round(cut * len(data))
    path.write_bytes(data[:n])
    complete = data[:n].count(b"\n")  # records whose newline was written
    mid_record = n > 0 and data[n - 1:n] != b"\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = scan_sessions(path)
    kept = rows[:complete]
    # a cut that leaves a whole JSON object without its newline still parses: that record is complete
    whole = mid_record and data[:n].rsplit(b"\n", 1)[-1] == json.dumps(rows[complete]).encode()
    if whole:
        kept = rows[:complete + 1]
    assert got.sessions == [r for r in kept if r["record"] == "session"]
    assert got.sites == [r for r in kept if r["record"] == "site"]
    truncated = mid_record and not whole
    assert got.truncated == int(truncated)
    assert any(issubclass(w.category, TruncatedSessionsWarning) for w in caught) == truncated


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=records.filter(lambda r: len(r) >= 2), where=st.integers(0, 10), junk=st.sampled_from(
    [b'{"record": "sess', b"\xff\xfe", b"[1, 2]", b'{"record": "other"}', b"nonsense", b'{"site": "a"}']))
def test_corruption_before_the_end_is_a_typed_error_naming_the_line(tmp_path, rows, where, junk):
    path = tmp_path / "sessions.jsonl"
    lines = [json.dumps(r).encode() for r in rows]
    k = where % (len(lines) - 1)  # a bad line with complete records after it
    lines[k] = junk
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(SessionsFileError, match=f"line {k + 1}"):
        read_sessions(path)


def test_a_complete_last_line_that_is_not_json_is_corruption(tmp_path):
    path = tmp_path / "sessions.jsonl"
    path.write_bytes(b'{"record": "site", "site": "a"}\n{"record": "ses\n')
    with pytest.raises(SessionsFileError, match="line 2"):
        read_sessions(path)


def test_the_ev_kpis_of_a_crashed_run_count_the_complete_sessions(tmp_path):
    from cosim.kpi import ev_kpis

    rows = [{"record": "session", "site": "a", "wait_s": 0.0, "e_wanted_wh": 10.0, "e_delivered_wh": 10.0,
             "e_unmet_wh": 0.0, "served": True, "completed": True}] * 3
    data = _write(tmp_path / "sessions.jsonl", rows)
    (tmp_path / "sessions.jsonl").write_bytes(data + b'{"record": "session", "site": "a", "wai')
    with pytest.warns(TruncatedSessionsWarning):
        kpis = ev_kpis(tmp_path)
    assert kpis["ev"]["total"]["arrivals"] == 3.0
