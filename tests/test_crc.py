"""The shared reflected CRC-16 gives the catalogue check values of both protocols that use it."""

from hypothesis import given, strategies as st

from devices.libal.rtu import crc16 as modbus_crc
from devices.meter.hdlc import crc16 as x25_crc


def test_catalogue_check_values():
    assert modbus_crc(b"123456789") == 0x4B37  # CRC-16/MODBUS
    assert x25_crc(b"123456789") == 0x906E  # CRC-16/X-25 (IBM-SDLC)


@given(st.binary(max_size=64))
def test_modbus_crc_appended_little_endian_leaves_zero_residue(data):
    crc = modbus_crc(data)
    assert modbus_crc(data + crc.to_bytes(2, "little")) == 0
