"""Charging-profile semantics: acceptance, stacking, purposes, kinds, validity, units and the composite schedule."""

from datetime import datetime, timedelta, UTC

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.wallbox import profiles as pf

T0 = datetime(2024, 3, 4, 8, 0, tzinfo=UTC)
ST = pf.Station()  # 32 A, 3 phases, 230 V, 1.6
ST201 = pf.Station(version="2.0.1")
TX = pf.Tx(id="7", start=T0)


def prof(pid, level, limit, unit="W", purpose=pf.TX_DEFAULT, connector=1, start=T0, kind=None, periods=None,
         duration=None, **kw) -> pf.Profile:
    periods = periods or [(0, limit)]
    kind = kind or ("Absolute" if start is not None else "Relative")
    return pf.Profile(id=pid, stack_level=level, purpose=purpose, kind=kind, connector=connector,
                      schedule=pf.Schedule(unit, tuple(pf.Period(s, v) for s, v in periods), start=start,
                                           duration_s=duration), **kw)


def at(profiles, t, **kw):
    return pf.limit_at(profiles, t, ST, **kw)


def test_no_profile_means_the_hardware_limit():
    assert at([], T0) == pytest.approx(32 * 230 * 3)
    assert at([], T0, unit="A") == 32
    assert at([], T0, phases_in_use=1) == pytest.approx(32 * 230)


def test_highest_stack_level_prevails_within_a_purpose_and_falls_back_when_it_ends():
    low = prof(1, 0, 11_000)
    high = prof(2, 3, 4_000, duration=3600)
    assert at([low, high], T0 + timedelta(minutes=30)) == 4000
    assert at([low, high], T0 + timedelta(minutes=90)) == 11_000  # the higher one's schedule is over
    assert at([low, high], T0 - timedelta(minutes=1)) == 32 * 230 * 3  # neither has started


def test_station_max_caps_and_tx_profile_overrides_tx_default():
    cap = prof(1, 0, 16, unit="A", purpose=pf.MAX, connector=0)
    default = prof(2, 5, 22_000)
    tx = prof(3, 0, 9_000, purpose=pf.TX, transaction_id="7")
    assert at([cap, default], T0) == pytest.approx(16 * 230 * 3)  # min(station max, TxDefault)
    assert at([default, tx], T0) == 22_000  # no transaction: the TxProfile does not apply
    assert at([default, tx], T0, tx=TX) == 9_000  # TxProfile beats TxDefault at any stack level
    assert at([default, tx], T0, tx=pf.Tx(id="8", start=T0)) == 22_000  # another transaction
    assert at([cap, default, tx], T0, tx=TX, connector=0) == pytest.approx(16 * 230 * 3)


def test_connector_specific_tx_default_overrides_connector_zero():
    general = prof(1, 7, 3_000, connector=0)
    specific = prof(2, 0, 8_000, connector=1)
    assert at([general], T0) == 3_000
    assert at([general, specific], T0) == 8_000


def test_periods_validity_and_units():
    p = prof(1, 0, 0, unit="A", periods=[(0, 16), (1800, 8), (3600, 32)],
             valid_from=T0 + timedelta(minutes=10), valid_to=T0 + timedelta(hours=2))
    assert at([p], T0) == pytest.approx(32 * 690)  # not yet valid
    assert at([p], T0 + timedelta(minutes=20), unit="A") == 16
    assert at([p], T0 + timedelta(minutes=40)) == pytest.approx(8 * 230 * 3)
    assert at([p], T0 + timedelta(minutes=40), phases_in_use=1) == pytest.approx(8 * 230)
    assert at([p], T0 + timedelta(hours=3), unit="A") == 32  # expired
    one_phase = pf.Profile(id=2, stack_level=1, purpose=pf.TX_DEFAULT, kind="Absolute", connector=1,
                           schedule=pf.Schedule("A", (pf.Period(0, 10, phases=1),), start=T0))
    assert at([one_phase], T0) == pytest.approx(10 * 230)  # numberPhases caps the phases used


def test_recurring_daily_and_relative_kinds():
    daily = prof(1, 0, 0, kind="Recurring", recurrency="Daily", periods=[(0, 4000), (6 * 3600, 11_000)],
                 start=T0.replace(hour=0))
    assert at([daily], T0.replace(hour=3) + timedelta(days=5)) == 4000
    assert at([daily], T0.replace(hour=7) + timedelta(days=5)) == 11_000
    rel = prof(2, 1, 0, start=None, periods=[(0, 2000), (600, 6000)])
    assert at([rel], T0 + timedelta(minutes=5), tx=TX) == 2000
    assert at([rel], T0 + timedelta(minutes=15), tx=TX) == 6000
    assert at([rel], T0 + timedelta(hours=5)) == 2000  # no transaction: its first period


def test_composite_merges_and_cuts_at_every_change():
    a = prof(1, 0, 0, periods=[(0, 10_000), (900, 5000), (1800, 10_000)])
    cap = prof(2, 0, 7000, purpose=pf.MAX, connector=0, start=T0 + timedelta(seconds=1200))
    out = pf.composite([a, cap], T0, 3600, ST)
    assert [(q.start_s, q.limit) for q in out] == [(0, 10_000), (900, 5000), (1800, 7000)]
    assert pf.next_change([a, cap], T0, 3600) == [900, 1200, 1800]
    in_a = pf.composite([a], T0, 600, ST, unit="A")
    assert [(q.start_s, q.limit) for q in in_a] == [(0, pytest.approx(10_000 / 690))]


@pytest.mark.parametrize("profile, why", [
    (prof(1, 0, 23_000), "above the hardware"),
    (prof(1, 0, 33, unit="A"), "above the hardware"),
    (prof(1, 0, -1), "negative"),
    (prof(1, 9, 1000), "stackLevel"),
    (prof(1, 0, 1000, purpose=pf.MAX, connector=1), "connector/EVSE 0"),
    (prof(1, 0, 1000, purpose=pf.TX), "without a running transaction"),
    (prof(1, 0, 1000, periods=[(60, 1000)]), "start at 0"),
    (prof(1, 0, 1000, periods=[(0, 1000), (0, 2000)]), "increase"),
    (prof(1, 0, 1000, kind="Recurring"), "recurrencyKind"),
    (prof(1, 0, 1000, connector=2), "does not exist"),
    (prof(1, 0, 1000, kind="Relative").__class__(**{**prof(1, 0, 1000, kind="Relative").__dict__, "purpose": pf.MAX,
                                                   "connector": 0}), None),  # 1.6 allows a Relative station cap
])
def test_check_rejects_with_a_reason(profile, why):
    if why is None:
        pf.check(profile, [], ST, pf.NO_TX, T0)
        with pytest.raises(pf.ProfileError, match=r"K01\.FR\.38"):
            pf.check(profile, [], ST201, pf.NO_TX, T0)
        return
    for station in (ST, ST201):
        with pytest.raises(pf.ProfileError, match=why):
            pf.check(profile, [], station, pf.NO_TX, T0)


def test_start_schedule_rules_per_version():
    relative_with_start = prof(1, 0, 1000, kind="Relative")
    absolute_without = prof(1, 0, 1000, start=None, kind="Absolute")
    pf.check(relative_with_start, [], ST, pf.NO_TX, T0)  # 1.6: startSchedule optional, ignored by Relative
    pf.check(absolute_without, [], ST, pf.NO_TX, T0)  # 1.6: runs from the start of charging
    with pytest.raises(pf.ProfileError, match=r"K01\.FR\.41"):
        pf.check(relative_with_start, [], ST201, pf.NO_TX, T0)
    with pytest.raises(pf.ProfileError, match=r"K01\.FR\.40"):
        pf.check(absolute_without, [], ST201, pf.NO_TX, T0)


def test_tx_profile_rules_per_version():
    tx_any = prof(1, 0, 1000, purpose=pf.TX)
    pf.check(tx_any, [], ST, TX, T0)  # 1.6: transactionId optional
    with pytest.raises(pf.ProfileError, match="without transactionId"):
        pf.check(tx_any, [], ST201, TX, T0)
    with pytest.raises(pf.ProfileError, match="running: 7"):
        pf.check(prof(1, 0, 1000, purpose=pf.TX, transaction_id="9"), [], ST201, TX, T0)
    assert pf.end_transaction([tx_any, prof(2, 0, 5)], 1) == [prof(2, 0, 5)]


def test_install_and_clear_semantics_per_version():
    a, b = prof(1, 2, 5000), prof(2, 2, 6000)
    assert pf.install([a], b, "1.6") == [b]  # 1.6: same stackLevel + purpose + connector replaces
    with pytest.raises(pf.ProfileError, match="overlapping"):
        pf.check(b, [a], ST201, pf.NO_TX, T0)  # 2.0.1: rejected instead
    later = prof(2, 2, 6000, valid_from=T0 + timedelta(days=1))
    bounded = prof(1, 2, 5000, valid_to=T0 + timedelta(hours=1))
    pf.check(later, [bounded], ST201, pf.NO_TX, T0)  # no overlap: fine
    assert pf.install([a], prof(1, 0, 7000), "2.0.1") == [prof(1, 0, 7000)]  # same id replaces
    kept, n = pf.clear([a, b, prof(3, 1, 1, purpose=pf.MAX, connector=0)], purpose=pf.TX_DEFAULT)
    assert n == 2 and [q.id for q in kept] == [3]
    kept, n = pf.clear([a, b], profile_id=2)
    assert n == 1 and kept == [a]
    assert pf.clear([a], profile_id=99) == ([a], 0)


_periods = st.lists(st.tuples(st.integers(1, 86_000), st.floats(0, 32).map(lambda x: round(x, 1))),
                    max_size=5).map(lambda xs: [(0, 16.0)] + sorted(dict(xs).items()))


@settings(max_examples=60, deadline=None)
@given(pid=st.integers(0, 2**31 - 1), level=st.integers(0, 8), periods=_periods,
       purpose=st.sampled_from([pf.TX_DEFAULT, pf.MAX]), unit=st.sampled_from(["A", "W"]),
       duration=st.one_of(st.none(), st.integers(1, 86_400)), offset=st.integers(-3600, 86_400))
def test_wire_round_trip_both_versions_and_composite_agrees_with_limit_at(pid, level, periods, purpose, unit,
                                                                          duration, offset):
    conn = 0 if purpose == pf.MAX else 1
    p = prof(pid, level, 0, unit=unit, purpose=purpose, connector=conn, periods=periods, duration=duration)
    assert pf.from_v16(conn, pf.to_v16(p)) == p
    back = pf.from_v201(conn, pf.to_v201(p))
    assert back == pf.Profile(**{**p.__dict__, "schedule": pf.Schedule(**{**p.schedule.__dict__, "id": 1})})
    t = T0 + timedelta(seconds=offset)
    comp = pf.composite([p], t, 3600, ST)
    for q in comp:  # each composite period equals the instantaneous limit at its start
        assert q.limit == pytest.approx(pf.limit_at([p], t + timedelta(seconds=q.start_s), ST))
