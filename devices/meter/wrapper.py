"""The DLMS/COSEM transport layer for IP networks (IEC 62056-47, the "wrapper"): an 8-octet header before each
APDU: version (0x0001), source wPort, destination wPort, length of the APDU. The client's wPort is its SAP
(16 = public client), the meter's is its logical device (1 = management logical device).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from devices.meter.axdr import DecodeError

VERSION = 1
HEADER = struct.Struct(">HHHH")
DEFAULT_PORT = 4059


@dataclass(frozen=True)
class WrapperHeader:
    source: int
    destination: int
    length: int


def wrap(source: int, destination: int, apdu: bytes) -> bytes:
    return HEADER.pack(VERSION, source, destination, len(apdu)) + apdu


def parse_header(raw: bytes) -> WrapperHeader:
    if len(raw) != HEADER.size:
        raise DecodeError(f"wrapper header needs {HEADER.size} octets, got {len(raw)}")
    version, source, destination, length = HEADER.unpack(raw)
    if version != VERSION:
        raise DecodeError(f"wrapper version {version} (expected {VERSION})")
    return WrapperHeader(source, destination, length)
