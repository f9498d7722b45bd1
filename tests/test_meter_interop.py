"""An independent DLMS/COSEM client reads the virtual meter: dlms-cosem's own client classes (not our code) over
the TCP wrapper and over HDLC, with and without low-level security: registers with their scaler_unit, the
clock, and the load profile with a range descriptor, compared with the model's own values."""

from __future__ import annotations

import datetime as dt

import pytest

pytest.importorskip("dlms_cosem", reason="dlms-cosem (test dependency) is not installed")

import serial
from dlms_cosem import cosem, enumerations, utils
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.clients.hdlc_transport import SerialHdlcTransport
from dlms_cosem.cosem.capture_object import CaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor
from dlms_cosem.exceptions import DlmsClientException
from dlms_cosem.time import datetime_from_bytes

from devices import registry
from devices.family import DeviceContext
from devices.io_loop import IoLoop
from devices.meter.model import PROFILE_KEYS
from devices.meter.virtual import VirtualMeter

FAM = registry.family("meter")
pytestmark = pytest.mark.timeout(60)  # a blocking client that waits for a frame it cannot parse never returns
IC = enumerations.CosemInterface
CLOCK = cosem.CosemAttribute(IC.CLOCK, cosem.Obis(0, 0, 1, 0, 0), 2)
CONTEXT = DeviceContext(dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 900, "interop")  # the meter's clock start


@pytest.fixture(scope="module")
def meter():
    io = IoLoop("interop")
    config = FAM.parse_config({"password": "12345678", "utc_offset_min": 60})
    device = VirtualMeter(FAM, config, context=CONTEXT)
    io.run(device.start(), 10)
    io.run(device.start_hdlc(), 10)
    for k in range(4 * 26):  # 26 h of 15-min steps
        io.run(device.advance(k * 900, 900, {"point_p_w": 1800.0 - 40 * k, "point_q_var": 250.0,
                                             "point_v_pu": 1.02}), 10)
    yield device
    io.run(device.stop(), 10)
    io.close()


def tcp_client(device: VirtualMeter, **kw) -> DlmsClient:
    return DlmsClient.with_tcp_transport("127.0.0.1", device.wrapper.port, kw.pop("client", 16), 1,
                                         timeout=5, **kw)


def hdlc_client(device: VirtualMeter) -> DlmsClient:
    line = serial.serial_for_url(f"socket://127.0.0.1:{device.hdlc.port}", timeout=5)
    transport = SerialHdlcTransport(client_logical_address=16, server_logical_address=1,
                                    server_physical_address=device.cfg.hdlc_physical_address,
                                    serial_port="(socket)", serial=line)
    return DlmsClient(client_logical_address=16, server_logical_address=1, io_interface=transport)


def _value(client: DlmsClient, obis: tuple, attribute: int = 2):
    return utils.parse_as_dlms_data(client.get(cosem.CosemAttribute(IC.REGISTER, cosem.Obis(*obis), attribute)))


def check_reads(client: DlmsClient, device: VirtualMeter) -> None:
    bank = device.mbank
    with client.session() as c:
        assert _value(c, (1, 0, 1, 8, 0)) == int(bank.reg["e_import_wh"][0])
        assert _value(c, (1, 0, 1, 8, 0), 3) == [0, 30]  # scaler 0, unit Wh
        assert _value(c, (1, 0, 32, 7, 0)) == int(bank.reg["v_a_v"][0])
        assert _value(c, (1, 0, 32, 7, 0), 3) == [-1, 35]  # 0.1 V
        assert _value(c, (1, 0, 3, 7, 0)) == 250
        clock, _ = datetime_from_bytes(utils.parse_as_dlms_data(c.get(CLOCK)))
        assert clock == dt.datetime.fromtimestamp(bank.clock_s(0), dt.UTC)
        assert clock.utcoffset() == dt.timedelta(hours=1)  # local time of the meter, deviation -60
        serial_no = utils.parse_as_dlms_data(c.get(cosem.CosemAttribute(IC.DATA, cosem.Obis(0, 0, 96, 1, 0), 2)))
        assert bytes(serial_no).decode() == device.serial
        start = device.context.start + dt.timedelta(hours=1)
        descriptor = RangeDescriptor(restricting_object=CaptureObject(CLOCK, 0), from_value=start,
                                     to_value=start + dt.timedelta(days=1))
        raw = c.get(cosem.CosemAttribute(IC.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0), 2),
                    access_descriptor=descriptor)
        rows = utils.parse_as_dlms_data(raw)
    times, values = bank.profile(0)
    keep = (times >= start.timestamp()) & (times <= start.timestamp() + 86_400)
    assert len(rows) == keep.sum() == 97
    for row, t, v in zip(rows, times[keep], values[keep]):
        assert datetime_from_bytes(bytes(row[0]))[0].timestamp() == t
        assert row[1:] == [int(x) for x in v] and len(row) == 1 + len(PROFILE_KEYS)


def test_dlms_cosem_reads_over_the_tcp_wrapper(meter):
    check_reads(tcp_client(meter, block_transfer=True), meter)


def test_dlms_cosem_reads_over_the_tcp_wrapper_with_low_level_security(meter):
    check_reads(tcp_client(meter, client=32, authentication_method=enumerations.AuthenticationMechanism.LLS,
                           password=b"12345678"), meter)


def test_dlms_cosem_is_refused_with_a_wrong_password(meter):
    client = tcp_client(meter, client=32, authentication_method=enumerations.AuthenticationMechanism.LLS,
                        password=b"87654321")
    client.connect()
    try:
        with pytest.raises(DlmsClientException, match=r"REJECTED_PERMANENT.*AUTHENTICATION_FAILED: 13"):
            client.associate()
    finally:
        client.disconnect()


def test_dlms_cosem_reads_over_hdlc(meter):
    check_reads(hdlc_client(meter), meter)
