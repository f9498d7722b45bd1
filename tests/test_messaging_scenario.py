"""The pilot's S4G stack over the brokers: identical results with every role direct, on the embedded broker
and on a real Mosquitto (127.0.0.1:1883); schedules and telemetry really travel as SenML."""

import json
import socket
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cosim.run import run
from cosim.scenario import load

REPO = Path(__file__).resolve().parents[1]


def _mosquitto_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=1):
            return True
    except OSError:
        return False


def _scenario(tmp_path: Path, name: str, messaging: dict) -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "fur_skive.yaml").read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    full = data.pop("variants")["full"]
    data.update(full)
    data.update({"start": "2019-06-15T00:00:00+02:00", "duration": "3h", "messaging": messaging,
                 "telemetry": {"period": "30min"}})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


MODES = {
    "direct": {"default": "direct"},
    "embedded": {"default": "embedded"},  # every role, the local loops included, on the embedded broker
    # a namespace of this run's own: other runs (parallel workers, other checkouts) share the broker
    "mosquitto": {"default": "mosquitto://127.0.0.1:1883", "namespace": f"s4g-test-scenario-{uuid.uuid4().hex[:12]}"},
}


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory) -> Path:
    """The run on the embedded broker, which every test here reads (one run, not one per test)."""
    tmp = tmp_path_factory.mktemp("embedded")
    result = run(load(_scenario(tmp, "embedded", MODES["embedded"])), tmp / "run", progress=False, report=False)
    assert result.status == "complete", result.error
    return tmp / "run"


def test_results_identical_in_every_broker_mode(tmp_path, embedded_run):
    if not _mosquitto_up():
        pytest.skip("no Mosquitto on 127.0.0.1:1883 (CI starts one; see .ci/run)")
    runs = {"embedded": embedded_run}
    for mode in ("direct", "mosquitto"):
        result = run(load(_scenario(tmp_path, mode, MODES[mode])), tmp_path / mode, progress=False, report=False)
        assert result.status == "complete", result.error
        runs[mode] = tmp_path / mode
    tables = {mode: {t: pq.read_table(runs[mode] / "timeseries" / f"{t}.parquet")
                     for t in ("devices", "sites", "controllers", "buses")} for mode in MODES}
    for mode in ("embedded", "mosquitto"):
        for name, table in tables["direct"].items():
            other = tables[mode][name]
            assert other.column_names == table.column_names
            for col in table.column_names:
                if col.endswith("solve_ms"):  # wall-clock solver time, the one thing allowed to differ
                    continue
                a, b = table[col].to_numpy(), other[col].to_numpy()
                assert np.array_equal(a, b, equal_nan=True), f"{mode}: {name}.{col} differs from direct"


def test_schedules_and_telemetry_travel_as_senml(embedded_run):
    obs = pq.read_table(embedded_run / "sensorthings" / "observations.parquet").to_pandas()
    entities = json.loads((embedded_run / "sensorthings" / "entities.json").read_text())
    assert len(obs) > 100 and obs["t_s"].max() > 0
    assert {"W", "/"} <= set(obs["unit"].dropna())  # powers in W, SoC as a ratio
    assert entities  # Things, Datastreams ... of the SensorThings model
    ctl = pq.read_table(embedded_run / "timeseries" / "controllers.parquet").to_pandas()
    fallback = [c for c in ctl.columns if c.endswith(".fallback")]
    assert fallback and (ctl[fallback] == 0).all().all()  # every LESSAg got its schedule over the broker


_RUN = ("import sys; from cosim.run import run; from cosim.scenario import load; "
        "r = run(load(sys.argv[1]), sys.argv[2], progress=False, kpis=False, report=False); "
        "sys.exit(0 if r.status == 'complete' else f'run {r.status}: {r.error}')")


def test_same_seed_same_files_across_processes(tmp_path, embedded_run):
    """Issue 19: the records of a SenML pack followed a set's order, i.e. the process's string hash seed, so two
    runs with the same seed wrote different observations.parquet. Two processes with different PYTHONHASHSEED
    must write byte-identical files (the determinism tests inside one process cannot see this): this process's
    run and one in a process whose hash seed differs from ours."""
    import os
    import subprocess
    import sys

    ours = os.environ.get("PYTHONHASHSEED", "random") if sys.flags.hash_randomization else "0"
    hash_seed = "2" if ours == "1" else "1"
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    subprocess.run([sys.executable, "-c", _RUN, str(embedded_run.parent / "embedded.yaml"), str(tmp_path / "other")],
                   env=env, check=True, cwd=REPO, timeout=600)
    files = ["sensorthings/observations.parquet", "sensorthings/entities.json",
             *(f"timeseries/{t}.parquet" for t in ("devices", "sites", "buses"))]
    for name in files:
        a, b = embedded_run / name, tmp_path / "other" / name
        assert a.read_bytes() == b.read_bytes(), f"{name} differs between PYTHONHASHSEED={ours} and {hash_seed}"
