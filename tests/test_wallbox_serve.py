"""``s4g device serve csms`` and ``s4g device serve wallbox`` against each other (wall-clock, in-process)."""

import asyncio
import re

import pytest

from s4g.cli import build_parser
from devices.csms import serve as csms_serve
from devices.wallbox import serve as wallbox_serve


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_stand_alone_charge_point_against_the_stand_alone_csms(version, capsys):
    parser = build_parser()

    async def body():
        csms_args = parser.parse_args(["device", "serve", "csms", "--port", "0", "--every", "0.5", "--duration", "30"])
        ready = asyncio.Event()
        csms_task = asyncio.create_task(csms_serve.serve(csms_args, ready))
        await ready.wait()
        port = re.search(r"127\.0\.0\.1:(\d+)/", capsys.readouterr().out).group(1)
        wb_args = parser.parse_args(["device", "serve", "wallbox", "--csms", f"ws://127.0.0.1:{port}/", "--id", "CP_T",
                                     "--ocpp", version, "--ev", "capacity_wh=40000,p_max_w=7400,phases=1,soc=0.5",
                                     "--plug-at", "0.5", "--unplug-at", "1", "--duration", "1.5", "--step", "0.25"])
        await wallbox_serve.serve(wb_args)
        await asyncio.sleep(0.6)  # one more table from the CSMS
        csms_task.cancel()
        await asyncio.gather(csms_task, return_exceptions=True)

    asyncio.run(asyncio.wait_for(body(), 30))
    out = capsys.readouterr().out
    assert "CP_T [connected] Charging: 7360 W" in out  # 32 A on one phase
    assert "CP_T: boot VirtualWallbox" in out
    start, stop = (("start transaction", "stop transaction") if version == "1.6"
                   else ("transaction Started", "transaction Ended"))
    assert start in out and stop in out
    assert re.search(rf"CP_T\s+OCPP {re.escape(version)}", out)


def test_ev_option_is_checked():
    assert wallbox_serve.parse_ev("capacity_wh=1000,phases=1").phases == 1
    with pytest.raises(ValueError, match="unknown EV key"):
        wallbox_serve.parse_ev("colour=red")
    args = build_parser().parse_args(["device", "serve", "wallbox", "--csms", "ws://x/", "--ev", "colour=red"])
    assert wallbox_serve.run(args) == 2


def test_the_stand_alone_csms_signs_with_its_pki_only_on_tls_profiles(tmp_path):
    from devices import pki

    pki.init(tmp_path / "p")
    pki.issue(tmp_path / "p", "csms", "csms")
    parser = build_parser()
    secure = csms_serve.security_from_args(parser.parse_args(
        ["device", "serve", "csms", "--security-profile", "3", "--tls-pki", str(tmp_path / "p")]))
    assert secure.pki == str(tmp_path / "p") and secure.ssl is not None
    assert csms_serve.security_from_args(parser.parse_args(["device", "serve", "csms"])).pki is None
