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


def test_the_runs_own_virtual_devices_serve_tls_where_their_protocol_has_it(tmp_path):
    """A device host with ``tls`` starts a SunSpec device as Modbus/TCP Security (the driver presents the client
    certificate, the server sees its identity), and reads and writes exactly as the plain one does; a meter
    (DLMS has no TLS here) stays plain."""
    from devices.simulator import DeviceSim

    d = make_pki(tmp_path / "pki")
    pki.issue(d, "device", "device")
    cfg = {"pv_kwp": 4.0, "battery": {"capacity_wh": 4500, "p_charge_max_w": 2400, "p_discharge_max_w": 2400}}
    readings = {}
    for mode, tls in (("plain", None), ("secure", {"pki": str(d), "server": "device", "client": "cosim"})):
        sim = DeviceSim()
        sim.init("D", step_size=60, tls=tls)
        sim.create(1, "fronius", address="sunspec+tcp://", config=cfg, device_id="f")
        sim.create(1, "meter", address="dlms+tcp://", config={}, device_id="m")
        try:
            sim.setup_done()
            for t in (0, 60, 120):
                sim.step(t, {"f": {"batt_p_w": {"ctl": 1000.0}, "pv_w_per_kwp": {"src": 600.0}}}, 0)
            server = sim.devices["f"].virtual.server.tcp
            assert (server.ssl is not None) == (mode == "secure")
            assert ("pki=" in sim.devices["f"].driver.address.raw) == (mode == "secure")
            if mode == "secure":
                assert {c.identity.name for c in server.connections} == {"cosim"}
                assert server.counters["tls_refused"] == 0
            assert sim.devices["m"].virtual.wrapper.ssl is None
            readings[mode] = dict(sim.devices["f"].last.values)
        finally:
            sim.close_devices()
    assert readings["secure"] == readings["plain"] and readings["plain"]["batt_p_w"] == pytest.approx(1000.0, abs=1)
