"""HDLC for DLMS/COSEM (IEC 62056-46): frame format type 3, addresses, control field, CRC, segmentation.

A frame is ``7E | format(2) | destination | source | control | [HCS(2) | information] | FCS(2) | 7E``; the
format field is ``1010 S LLLLLLLLLLL`` (S = more segments follow, L = octets between the flags). HCS and FCS
are CRC-16/X.25 (sent least significant octet first). Addresses use HDLC extended addressing (the last octet
has bit 0 set): the client is one octet (SAP), the server one, two or four octets (upper = logical device,
lower = physical address). Information fields carry the LLC header (E6 E6 00 to the meter, E6 E7 00 back)
in front of the APDU, in the first segment only.

:class:`FrameReader` splits a byte stream into frames, resynchronising on the next flag after garbage;
:class:`ServerLink` is the meter's side of the link (sans I/O: bytes in, frames out): SNRM/UA with parameter
negotiation, DISC, I-frames with send/receive sequence numbers, segmentation in both directions with window
size 1 (RR between segments), DM while disconnected, FRMR for a frame it cannot accept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from collections.abc import Callable

from devices.crc import ReflectedCrc16
from devices.meter.axdr import DecodeError

log = logging.getLogger(__name__)

FLAG = 0x7E
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
DEFAULT_MAX_INFO = 128  # until negotiated (IEC 62056-46 default)
MAX_FRAME = 0x7FF

# control field (P/F bit 0x10 set where sent)
SNRM, DISC, UA, DM, FRMR, UI = 0x93, 0x53, 0x73, 0x1F, 0x97, 0x13


_X25 = ReflectedCrc16(0x8408, xorout=0xFFFF)


def crc16(data: bytes) -> int:
    """CRC-16/X.25 (reflected 0x1021, init and final XOR 0xFFFF)."""
    return _X25(data)


def _crc_bytes(data: bytes) -> bytes:
    return crc16(data).to_bytes(2, "little")


@dataclass(frozen=True)
class Address:
    upper: int
    lower: int | None = None  # physical address (server, 2- or 4-octet form)
    size: int = 1

    def encode(self) -> bytes:
        if self.size == 1:
            return bytes([(self.upper << 1) | 1])
        if self.size == 2:
            return bytes([self.upper << 1, ((self.lower or 0) << 1) | 1])
        lower = self.lower or 0
        return bytes([(self.upper >> 7) << 1, (self.upper & 0x7F) << 1, (lower >> 7) << 1, ((lower & 0x7F) << 1) | 1])


def server_address(logical: int, physical: int | None) -> Address:
    """The shortest form that holds both addresses (one octet without a physical address)."""
    if physical is None:
        return Address(logical, None, 1 if logical < 0x80 else 2)
    if logical < 0x80 and physical < 0x80:
        return Address(logical, physical, 2)
    return Address(logical, physical, 4)


def _decode_address(buf: bytes, pos: int, end: int) -> tuple[Address, int]:
    octets: list[int] = []
    while True:
        if pos >= end or len(octets) == 4:
            raise DecodeError("HDLC address not terminated")
        octets.append(buf[pos])
        pos += 1
        if octets[-1] & 1:
            break
    vals = [o >> 1 for o in octets]
    if len(octets) == 1:
        return Address(vals[0]), pos
    if len(octets) == 2:
        return Address(vals[0], vals[1], 2), pos
    if len(octets) == 4:
        return Address((vals[0] << 7) | vals[1], (vals[2] << 7) | vals[3], 4), pos
    raise DecodeError("HDLC address of 3 octets")


@dataclass(frozen=True)
class Frame:
    destination: Address
    source: Address
    control: int
    info: bytes = b""
    segmented: bool = False

    @property
    def is_information(self) -> bool:
        return self.control & 1 == 0

    @property
    def ns(self) -> int:
        return (self.control >> 1) & 7

    @property
    def nr(self) -> int:
        return (self.control >> 5) & 7

    @property
    def kind(self) -> int:
        """Control field without sequence numbers and P/F: 0 I, 0x01 RR, 0x05 RNR, else the U-frame type."""
        if self.is_information:
            return 0
        if self.control & 3 == 1:
            return self.control & 0x0F
        return self.control | 0x10

    def encode(self) -> bytes:
        header_wo_format = self.destination.encode() + self.source.encode() + bytes([self.control])
        if self.info:
            length = 2 + len(header_wo_format) + 2 + len(self.info) + 2
        else:
            length = 2 + len(header_wo_format) + 2
        if length > MAX_FRAME:
            raise ValueError(f"HDLC frame of {length} octets")
        fmt = (0xA000 | (0x0800 if self.segmented else 0) | length).to_bytes(2, "big")
        head = fmt + header_wo_format
        if self.info:
            head += _crc_bytes(head)
            body = head + self.info
        else:
            body = head
        return bytes([FLAG]) + body + _crc_bytes(body) + bytes([FLAG])


def i_control(ns: int, nr: int, final: bool = True) -> int:
    return (nr << 5) | (0x10 if final else 0) | (ns << 1)


def rr_control(nr: int, final: bool = True) -> int:
    return (nr << 5) | (0x10 if final else 0) | 0x01


def decode_frame(raw: bytes) -> Frame:
    """One frame without its flags (format field .. FCS)."""
    if len(raw) < 7:
        raise DecodeError("HDLC frame too short")
    fmt = int.from_bytes(raw[:2], "big")
    if fmt >> 12 != 0xA:
        raise DecodeError(f"HDLC frame format 0x{fmt:04x} is not type 3")
    if fmt & 0x7FF != len(raw):
        raise DecodeError(f"HDLC length field {fmt & 0x7FF} != {len(raw)}")
    if crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise DecodeError("HDLC FCS error")
    dst, pos = _decode_address(raw, 2, len(raw) - 2)
    src, pos = _decode_address(raw, pos, len(raw) - 2)
    if pos >= len(raw) - 2:
        raise DecodeError("HDLC control field missing")
    control = raw[pos]
    pos += 1
    info = b""
    if pos < len(raw) - 2:
        if len(raw) - 2 - pos < 2:
            raise DecodeError("HDLC HCS truncated")
        if crc16(raw[:pos]) != int.from_bytes(raw[pos:pos + 2], "little"):
            raise DecodeError("HDLC HCS error")
        info = bytes(raw[pos + 2:-2])
    return Frame(dst, src, control, info, bool(fmt & 0x0800))


class FrameReader:
    """Bytes in, frames (or the decode error of a damaged frame) out; garbage between frames is skipped.
    Consecutive frames may share one flag."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[Frame | DecodeError]:
        self.buf += data
        out: list[Frame | DecodeError] = []
        buf = self.buf
        while True:
            start = buf.find(FLAG)
            if start < 0:
                buf.clear()
                break
            del buf[:start]
            while len(buf) > 1 and buf[1] == FLAG:  # idle flags
                del buf[0]
            if len(buf) < 3:
                break
            fmt = int.from_bytes(buf[1:3], "big")
            length = fmt & 0x7FF
            if fmt >> 12 != 0xA or length < 7:
                del buf[0]
                continue
            if len(buf) < length + 2:
                break
            if buf[length + 1] != FLAG:
                del buf[0]
                out.append(DecodeError("HDLC closing flag missing"))
                continue
            raw = bytes(buf[1:length + 1])
            del buf[:length + 1]  # keep the closing flag: it may open the next frame
            try:
                out.append(decode_frame(raw))
            except DecodeError as exc:
                out.append(exc)
        return out


def negotiation(max_tx: int, max_rx: int, window_tx: int = 1, window_rx: int = 1) -> bytes:
    """The information field of SNRM / UA carrying the HDLC parameters."""
    def param(pid: int, value: int, size: int) -> bytes:
        return bytes([pid, size]) + value.to_bytes(size, "big")
    body = (param(0x05, max_tx, 1 if max_tx < 256 else 2) + param(0x06, max_rx, 1 if max_rx < 256 else 2)
            + param(0x07, window_tx, 4) + param(0x08, window_rx, 4))
    return bytes([0x81, 0x80, len(body)]) + body


def parse_negotiation(info: bytes) -> dict[int, int]:
    """Parameter id -> value; empty for an empty field, DecodeError for a malformed one."""
    if not info:
        return {}
    if len(info) < 3 or info[0] != 0x81 or info[1] != 0x80 or info[2] != len(info) - 3:
        raise DecodeError(f"HDLC parameter field malformed: {info[:8].hex()}")
    out, pos = {}, 3
    while pos < len(info):
        if pos + 2 > len(info):
            raise DecodeError("HDLC parameter truncated")
        pid, size = info[pos], info[pos + 1]
        if size == 0 or size > 4 or pos + 2 + size > len(info):
            raise DecodeError(f"HDLC parameter 0x{pid:02x} of size {size}")
        out[pid] = int.from_bytes(info[pos + 2:pos + 2 + size], "big")
        pos += 2 + size
    return out


class ServerLink:
    """The meter's end of one HDLC link. ``on_apdu(client_sap, apdu) -> response`` is the application layer;
    ``on_disconnect(client_sap)`` ends its association (DISC, or a new SNRM)."""

    def __init__(self, logical: int, physical: int, on_apdu: Callable[[int, bytes], bytes | None],
                 on_disconnect: Callable[[int], object], max_info: int = 512) -> None:
        self.logical, self.physical = logical, physical
        self.on_apdu, self.on_disconnect = on_apdu, on_disconnect
        self.max_info = max_info
        self.reader = FrameReader()
        self.connected = False
        self.client: Address | None = None
        self.me = server_address(logical, physical)
        self.vs = self.vr = 0
        self.max_tx = self.max_rx = DEFAULT_MAX_INFO
        self._rx = bytearray()
        self._tx: list[bytes] = []  # segments of a response not yet sent

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for frame in self.reader.feed(data):
            if isinstance(frame, DecodeError):
                log.debug("HDLC frame discarded: %s", frame)  # HDLC drops damaged frames; the client retries
                continue
            if not self._for_me(frame.destination):
                continue
            reply = self._handle(frame)
            if reply is not None:
                out.append(reply)
        return out

    def _for_me(self, dst: Address) -> bool:
        if dst.upper != self.logical:
            return False
        return dst.size == 1 or dst.lower == self.physical

    def _frame(self, control: int, info: bytes = b"", segmented: bool = False, to: Address | None = None) -> bytes:
        destination = to or self.client
        assert destination is not None
        return Frame(destination, self.me, control, info, segmented).encode()

    def _handle(self, frame: Frame) -> bytes | None:
        kind = frame.kind
        if kind == SNRM:
            return self._snrm(frame)
        if kind == DISC:
            if self.connected and frame.source != self.client:
                return self._frame(DM, to=frame.source)  # another client cannot end this link
            was = self.connected
            self._reset(frame.source)
            self.connected = False
            # the parameters ride along on this UA too: some clients (dlms-cosem 21.3) parse every UA as one
            return self._frame(UA, negotiation(self.max_tx, self.max_rx)) if was else self._frame(DM)
        if kind == UI:
            return None
        if not self.connected or frame.source != self.client:
            return self._frame(DM, to=frame.source)  # not connected (to this client)
        if kind == 0:
            return self._information(frame)
        if kind == 0x01:  # RR: the client wants the next segment (or polls)
            if self._tx and frame.nr == self.vs:
                return self._next_segment()
            return self._frame(rr_control(self.vr))
        return self._frame(FRMR, bytes([frame.control, (self.vr << 5) | (self.vs << 1), 0x01]))  # W: bad control

    def _reset(self, client: Address) -> None:
        if self.client is not None and self.connected:
            self.on_disconnect(self.client.upper)
        self.client = client
        self.vs = self.vr = 0
        self._rx.clear()
        self._tx = []

    def _snrm(self, frame: Frame) -> bytes:
        try:
            params = parse_negotiation(frame.info)
        except DecodeError:
            return self._frame(FRMR, bytes([frame.control, 0, 0x02]), to=frame.source)  # X: bad information field
        self._reset(frame.source)
        self.connected = True
        # the client's transmit limit is our receive limit and vice versa (capped by ours)
        self.max_rx = min(params.get(0x05, DEFAULT_MAX_INFO), self.max_info)
        self.max_tx = min(params.get(0x06, DEFAULT_MAX_INFO), self.max_info)
        return self._frame(UA, negotiation(self.max_tx, self.max_rx))

    def _information(self, frame: Frame) -> bytes | None:
        if len(frame.info) > self.max_rx:
            return self._frame(FRMR, bytes([frame.control, (self.vr << 5) | (self.vs << 1), 0x04]))  # Y: too long
        if frame.ns != self.vr:
            return self._frame(rr_control(self.vr))  # out of sequence: ask again for the one we expect
        self.vr = (self.vr + 1) % 8
        self._tx = []
        self._rx += frame.info
        if len(self._rx) > 0xFFFF + len(LLC_REQUEST):
            self._rx.clear()
            return self._frame(FRMR, bytes([frame.control, (self.vr << 5) | (self.vs << 1), 0x04]))
        if frame.segmented:
            return self._frame(rr_control(self.vr))
        request, self._rx = bytes(self._rx), bytearray()
        if not request.startswith(LLC_REQUEST):
            return self._frame(FRMR, bytes([frame.control, (self.vr << 5) | (self.vs << 1), 0x02]))
        assert self.client is not None
        response = self.on_apdu(self.client.upper, request[len(LLC_REQUEST):])
        if response is None:  # a silent meter
            return None
        data = LLC_RESPONSE + response
        self._tx = [data[k:k + self.max_tx] for k in range(0, len(data), self.max_tx)]
        return self._next_segment()

    def _next_segment(self) -> bytes:
        chunk = self._tx.pop(0)
        frame = self._frame(i_control(self.vs, self.vr), chunk, segmented=bool(self._tx))
        self.vs = (self.vs + 1) % 8
        return frame
