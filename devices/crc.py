"""Table-driven reflected CRC-16, the one algorithm behind Modbus RTU's CRC (poly 0xA001) and HDLC's FCS
(CRC-16/X.25, poly 0x8408 with a final XOR); each protocol module names its parameters."""

from __future__ import annotations


class ReflectedCrc16:
    def __init__(self, poly: int, init: int = 0xFFFF, xorout: int = 0) -> None:
        self.init, self.xorout = init, xorout
        self.table = []
        for byte in range(256):
            crc = byte
            for _ in range(8):
                crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
            self.table.append(crc)

    def __call__(self, data: bytes) -> int:
        crc, table = self.init, self.table
        for b in data:
            crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
        return crc ^ self.xorout


__all__ = ["ReflectedCrc16"]
