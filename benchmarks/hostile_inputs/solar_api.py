"""Fronius Solar API (HTTP): pieces of requests to assemble hostile ones."""

from __future__ import annotations

import random

INVERTER = "/solar_api/v1/GetInverterRealtimeData.cgi?Scope=Device&DataCollection=CommonInverterData&DeviceId="
REQUEST_PARTS = [b"GET ", b"HEAD ", b"POST ", b"/solar_api/v1/GetPowerFlowRealtimeData.fcgi",
                 b"/solar_api/GetAPIVersion.cgi", b"?Scope=System", b"&DeviceId=", b" HTTP/1.1",
                 b" HTTP/1.0", b" HTTP/9.9", b"\r\n", b"Host: t", b"Content-Length: 5",
                 b"Content-Length: -1", b"Transfer-Encoding: chunked", b"Connection: close",
                 b": ", b"\x00", b"\xff", b" ", b"\t", b"%", b"%ZZ", b"0\r\n\r\n", b"hello"]
#: DeviceId values that must get a 4xx (or the API's own error code), never a 500
ABSURD_DEVICE_IDS = ["9" * 5000, "\u0661", "%D9%A1", "１", "1" * 65, "%00", "%FF"]


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()


def request(rng: random.Random) -> bytes:
    """Random bytes, a random assembly of request parts, or a request with an absurd DeviceId."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(0, 300))
    if kind == 1:
        return b"".join(rng.choice(REQUEST_PARTS) for _ in range(rng.randint(0, 25)))
    device_id = rng.choice(ABSURD_DEVICE_IDS)
    target = INVERTER + device_id
    if not target.isascii():
        target = INVERTER + "".join(f"%{b:02X}" for b in device_id.encode())
    return get(target)
