"""The pilot scenario run "secure" (`security:` pointing at a PKI): every broker role on TLS with client
certificates, the CRL and the topic policy; the results are identical to a plain run, column for column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from cosim.run import run
from cosim.scenario import ScenarioError, load
from devices import pki

REPO = Path(__file__).resolve().parents[1]


def pilot(tmp_path: Path, name: str, security: dict | None, duration: str = "3h") -> Path:
    data = yaml.safe_load((REPO / "scenarios" / "fur_skive.yaml").read_text())
    data["grid"]["path"] = str(REPO / "scenarios" / data["grid"]["path"])
    data.update(data.pop("variants")["full"])
    data.update({"duration": duration, "messaging": {"default": "embedded"}, "telemetry": {"period": "30min"}})
    if security is not None:
        data["security"] = security
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_pki(d: Path) -> Path:
    pki.init(d)
    pki.issue(d, "broker", "broker")
    pki.issue(d, "cosim", "cosim")
    return d


def test_pilot_secure_gives_identical_results(tmp_path):
    make_pki(tmp_path / "pki")
    tables = {}
    for mode, security in (("plain", None), ("secure", {"pki": "pki"})):  # relative to the scenario file
        result = run(load(pilot(tmp_path, mode, security)), tmp_path / mode, progress=False, report=False)
        assert result.status == "complete", result.error
        tables[mode] = {t: pq.read_table(tmp_path / mode / "timeseries" / f"{t}.parquet")
                        for t in ("devices", "sites", "controllers", "buses")}
    for name, table in tables["plain"].items():
        other = tables["secure"][name]
        assert other.column_names == table.column_names
        for col in table.column_names:
            if col.endswith("solve_ms"):
                continue
            assert np.array_equal(table[col].to_numpy(), other[col].to_numpy(), equal_nan=True), f"{name}.{col}"


def test_a_revoked_bus_certificate_stops_the_secure_run(tmp_path):
    d = make_pki(tmp_path / "pki")
    pki.revoke(d, "cosim", reason="key_compromise")
    result = run(load(pilot(tmp_path, "revoked", {"pki": str(d)}, duration="10min")), tmp_path / "run",
                 progress=False, report=False)
    assert result.status == "failed" and "BrokerUnavailable" in (result.error or "")


def test_security_section_is_validated(tmp_path):
    with pytest.raises(ScenarioError, match=r"security\.unknown"):
        load(pilot(tmp_path, "bad", {"pki": "x", "unknown": 1}))
