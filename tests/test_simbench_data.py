"""One SimBench parse serves the grid and the profiles; both are cached on disk and read back identically."""

from __future__ import annotations

import numpy as np
import pytest
import simbench

from simulators import simbench_data
from simulators.grid_loaders import load_simbench
from simulators.profiles import load_pq

CODE = "1-LV-semiurb4--0-sw"


@pytest.fixture
def counted_parse(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = simbench.get_simbench_net

    def counting(code: str):
        calls.append(code)
        return real(code)

    monkeypatch.setattr(simbench, "get_simbench_net", counting)
    simbench_data.clear()
    yield calls
    simbench_data.clear()


def test_grid_and_profiles_share_one_parse_and_the_cache(counted_parse, tmp_path, monkeypatch):
    monkeypatch.setenv("S4G_CACHE_DIR", str(tmp_path))
    model = load_simbench(CODE)
    p_w, q_var = load_pq("simbench", code=CODE, element="LV4.101 Load 7", start="2019-06-17T00:00:00+02:00",
                         duration_s=86400, step_s=900, timezone="Europe/Rome")
    assert counted_parse == [CODE]  # the profiles came from the grid's parse
    assert {p.name for p in (tmp_path / "simbench").iterdir()} >= {
        f"{simbench_data._stem(CODE)}.pkl", f"{simbench_data._stem(CODE)}-profiles.npz"}
    # a new process (cleared memory) reads both from the cache: no parse, the same numbers
    simbench_data.clear()
    again = load_simbench(CODE)
    p2, q2 = load_pq("simbench", code=CODE, element="LV4.101 Load 7", start="2019-06-17T00:00:00+02:00",
                     duration_s=86400, step_s=900, timezone="Europe/Rome")
    assert counted_parse == [CODE]
    assert again.bus_names == model.bus_names and [x.name for x in again.loads] == [x.name for x in model.loads]
    np.testing.assert_array_equal(p2, p_w)
    np.testing.assert_array_equal(q2, q_var)
    assert p_w.max() > 0 and np.all(np.isfinite(q_var))


def test_the_net_is_a_fresh_copy_each_time(counted_parse, tmp_path, monkeypatch):
    """The grid changes its net (adds loads, zeroes generators): the next user must not see that."""
    monkeypatch.setenv("S4G_CACHE_DIR", str(tmp_path))
    first = simbench_data.net(CODE)
    first.sgen["p_mw"] = 0.0
    assert simbench_data.net(CODE).sgen.p_mw.max() > 0
    profiles = simbench_data.profiles(CODE)
    assert profiles.sgen_p_mw.max() > 0 and not profiles.values[("load", "p_mw")].flags.writeable


def test_a_corrupt_cache_entry_is_rebuilt(counted_parse, tmp_path, monkeypatch):
    monkeypatch.setenv("S4G_CACHE_DIR", str(tmp_path))
    folder = tmp_path / "simbench"
    folder.mkdir()
    (folder / f"{simbench_data._stem(CODE)}-profiles.npz").write_bytes(b"not a zip file")
    (folder / f"{simbench_data._stem(CODE)}.pkl").write_text("{broken")
    data = simbench_data.profiles(CODE)
    assert counted_parse == [CODE] and len(data.names["load"]) == 41
    simbench_data.clear()
    assert simbench_data.profiles(CODE).names == data.names  # the rebuilt entry is readable
    assert counted_parse == [CODE]


def test_an_unknown_code_is_a_typed_error(tmp_path):
    with pytest.raises(simbench_data.UnknownSimbenchCode, match="1-LV-nowhere--0-sw"):
        simbench_data.profiles("1-LV-nowhere--0-sw", cache_dir=False)
