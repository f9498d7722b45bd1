"""Many entities' values moved as one vector per simulator (cosim/world.py: ``_gathered_columns`` for the recorder,
``_feed_points`` for the load profiles and devices into the grid, ``_feed_inputs`` for the
devices' site-profile inputs; the vector entities of the grid, profile and device simulators)
give exactly the results of one mosaik value per entity: every recorded column, in the same order, same values."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cosim.run import run
from cosim.scenario import load
from cosim.world import WorldBuilder

REPO = Path(__file__).resolve().parents[1]
PILOT = REPO / "scenarios" / "fur_skive.yaml"


def _short_pilot(tmp_path: Path) -> Path:
    data = yaml.safe_load(PILOT.read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.update({"start": "2019-06-15T10:00:00+02:00", "duration": "20min"})
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _tables(run_dir: Path) -> dict:
    return {f.stem: pq.read_table(f) for f in sorted((run_dir / "timeseries").glob("*.parquet"))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gathered")
    scenario = _short_pilot(tmp)
    seen: list[list] = []
    gather = WorldBuilder._gathered_columns
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WorldBuilder, "_gathered_columns", lambda self, by_id: seen.extend(gather(self, by_id)) or seen)
        gathered = run(load(scenario), tmp / "gathered", progress=False, kpis=False, report=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(WorldBuilder, "_gathered_columns", lambda self, by_id: [list(c) for c in self.columns])
        mp.setattr(WorldBuilder, "_feed_points", lambda self, feeds, gather: [
            self.world.connect(src, point, "p_w", "q_var") for src, point in feeds])
        mp.setattr(WorldBuilder, "_feed_inputs", lambda self: [
            self.world.connect(src, ent, (attr, name)) for (_, attr, name), f in self._input_feeds.items()
            for src, ent in f])
        plain = run(load(scenario), tmp / "plain", progress=False, kpis=False, report=False)
    assert gathered.status == plain.status == "complete"
    return _tables(gathered.run_dir), _tables(plain.run_dir), seen


def test_same_tables_columns_and_values(runs):
    gathered, plain, _ = runs
    assert gathered.keys() == plain.keys() and {"sites", "devices"} <= gathered.keys()
    for name, table in plain.items():
        assert gathered[name].column_names == table.column_names, name
        for col in table.column_names:
            if col.endswith("solve_ms"):  # wall time of a solve
                continue
            a = gathered[name][col].to_numpy(zero_copy_only=False).astype(float)
            b = table[col].to_numpy(zero_copy_only=False).astype(float)
            np.testing.assert_array_equal(a, b, err_msg=f"{name}.{col}")


def test_sites_and_devices_are_gathered(runs):
    """The pilot's 27 sites and their devices reach the recorder through a few vector entities, not one each."""
    *_, columns = runs
    per_site = [c for c in columns if c[2] == "sites" and not isinstance(c[3], list)]
    vectors = {c[0].split(".")[0] for c in columns if c[2] in ("sites", "devices") and isinstance(c[3], list)}
    assert not per_site and {"Grid-0", "Profiles-0", "Devices-0"} <= vectors
