"""The client side of DLMS/COSEM: transports (TCP wrapper; HDLC on a TCP socket or a serial line) and one
association with GET (normal, with list, block transfer).

Every failure is typed: no answer in time or a lost link is :class:`~devices.base.DeviceUnavailable`; a
malformed or unexpected reply, an ExceptionResponse, a refused association (:class:`AssociationRefused`) or a
data-access-result (:class:`DataAccessError`) is a :class:`~devices.base.ProtocolError`. After a timeout or a
malformed reply the transport is closed (a late reply must never be taken for the next answer); the owner
reconnects.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable

from devices.base import DeviceUnavailable, ProtocolError
from devices.meter import apdu as A
from devices.meter import axdr, hdlc, wrapper
from devices.meter.apdu import AttributeRef, Conformance, Result, Selection
from devices.meter.axdr import Data, DecodeError
from devices.serial_line import SerialLine, SerialPortLine, TcpLine

MAX_BLOCKS = 10_000
MAX_RESPONSE = 4 * 1024 * 1024
CLIENT_MAX_PDU = 0xFFFF
PROPOSED = (Conformance.GET | Conformance.SELECTIVE_ACCESS | Conformance.BLOCK_TRANSFER_WITH_GET
            | Conformance.MULTIPLE_REFERENCES)


class AssociationRefused(ProtocolError):
    """The meter answered the AARQ with a rejection (wrong password, unsupported security, ...)."""

    def __init__(self, aare: A.Aare) -> None:
        try:
            reason = A.AcseDiagnostic(aare.diagnostic).name.lower().replace("_", "-")
        except ValueError:
            reason = f"diagnostic {aare.diagnostic}"
        if aare.initiate_error is not None:
            try:
                reason += f", initiate error {A.InitiateError(aare.initiate_error).name.lower().replace('_', '-')}"
            except ValueError:
                reason += f", initiate error {aare.initiate_error}"
        super().__init__(f"association refused: {reason}")
        self.aare = aare
        self.reason = reason


class DataAccessError(ProtocolError):
    """A GET answered with a data-access-result instead of data."""

    def __init__(self, what: str, code: int) -> None:
        super().__init__(f"{what}: {A.dar_name(code)}")
        self.code = code


def exception_message(apdu: bytes) -> str:
    state = apdu[1] if len(apdu) > 1 else -1
    service = apdu[2] if len(apdu) > 2 else -1
    names = []
    for enum, v in ((A.StateError, state), (A.ServiceError, service)):
        try:
            names.append(enum(v).name.lower().replace("_", "-"))
        except ValueError:
            names.append(str(v))
    return f"ExceptionResponse: {names[0]}, {names[1]}"


# -- transports ---------------------------------------------------------------------------------------------
class Transport(abc.ABC):
    """Carries one APDU to the meter and its response back."""

    description = ""

    @abc.abstractmethod
    async def open(self, timeout_s: float) -> None: ...

    @abc.abstractmethod
    async def request(self, apdu: bytes, timeout_s: float) -> bytes: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def is_open(self) -> bool: ...


class WrapperTransport(Transport):
    """The IEC 62056-47 wrapper on a TCP connection."""

    def __init__(self, host: str, port: int, client: int, server: int) -> None:
        self.line = TcpLine(host, port, "dlms+tcp")
        self.client, self.server = client, server
        self.description = self.line.description

    @property
    def is_open(self) -> bool:
        return self.line.is_open

    async def open(self, timeout_s: float) -> None:
        await self.line.open(timeout_s)

    async def close(self) -> None:
        await self.line.close()

    async def request(self, apdu: bytes, timeout_s: float) -> bytes:
        if not self.line.is_open:
            raise DeviceUnavailable(f"{self.description}: not connected")
        deadline = time.monotonic() + timeout_s
        try:
            await self.line.write(wrapper.wrap(self.client, self.server, apdu))
            head = wrapper.parse_header(await self.line.read_exactly(wrapper.HEADER.size, deadline - time.monotonic()))
            body = await self.line.read_exactly(head.length, deadline - time.monotonic())
            if head.source != self.server or head.destination != self.client:
                raise ProtocolError(f"{self.description}: wrapper from wPort {head.source} to "
                                    f"{head.destination}, expected {self.server} to {self.client}")
            return body
        except TimeoutError as exc:
            await self.close()
            raise DeviceUnavailable(f"{self.description}: no reply within {timeout_s:g} s") from exc
        except (ConnectionError, OSError) as exc:
            await self.close()
            raise DeviceUnavailable(f"{self.description}: connection lost: {exc}") from exc
        except ProtocolError:
            await self.close()
            raise


class TcpByteLink(TcpLine):
    """HDLC frames on a TCP socket."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port, "dlms+hdlc+tcp")


class SerialByteLink(SerialPortLine):
    """A serial port at 8N1, direct HDLC (no IEC 62056-21 mode-E opening sequence)."""

    def __init__(self, port: str, baud: int) -> None:
        super().__init__(port, baud, "dlms+hdlc")


class HdlcTransport(Transport):
    """HDLC over a byte link: SNRM/UA (parameters negotiated), I-frames with segmentation both ways, DISC."""

    def __init__(self, link: SerialLine, client: int, server: hdlc.Address, max_info: int = 512) -> None:
        self.link, self.client, self.server = link, hdlc.Address(client), server
        self.description = link.description
        self.max_info = max_info
        self.reader = hdlc.FrameReader()
        self._frames: list[hdlc.Frame | DecodeError] = []
        self.vs = self.vr = 0
        self.max_tx = self.max_rx = hdlc.DEFAULT_MAX_INFO
        self._connected = False

    @property
    def is_open(self) -> bool:
        return self._connected and self.link.is_open

    async def open(self, timeout_s: float) -> None:
        await self.link.open(timeout_s)
        self.reader = hdlc.FrameReader()
        self._frames = []
        self.vs = self.vr = 0
        try:
            deadline = time.monotonic() + timeout_s
            await self._send(hdlc.SNRM, hdlc.negotiation(self.max_info, self.max_info))
            ua = await self._receive(deadline)
            if ua.kind != hdlc.UA:
                raise ProtocolError(f"{self.description}: SNRM answered with control 0x{ua.control:02x}, not UA")
            params = hdlc.parse_negotiation(ua.info)
        except BaseException:
            await self.link.close()
            raise
        # the meter's transmit limit is what we receive, its receive limit what we may send
        self.max_rx = params.get(0x05, hdlc.DEFAULT_MAX_INFO)
        self.max_tx = max(1, min(params.get(0x06, hdlc.DEFAULT_MAX_INFO), self.max_info))
        self._connected = True

    async def close(self) -> None:
        if self._connected and self.link.is_open:
            try:
                await self._send(hdlc.DISC)
                await self._receive(time.monotonic() + 0.5)  # UA or DM; a gone meter does not matter here
            except (DeviceUnavailable, ProtocolError, ConnectionError, OSError):
                pass
        self._connected = False
        await self.link.close()

    async def request(self, apdu: bytes, timeout_s: float) -> bytes:
        if not self.is_open:
            raise DeviceUnavailable(f"{self.description}: not connected")
        deadline = time.monotonic() + timeout_s
        try:
            return await self._exchange(hdlc.LLC_REQUEST + apdu, deadline)
        except (ProtocolError, DeviceUnavailable):
            self._connected = False
            await self.link.close()
            raise

    async def _exchange(self, data: bytes, deadline: float) -> bytes:
        chunks = [data[k:k + self.max_tx] for k in range(0, len(data), self.max_tx)]
        for k, chunk in enumerate(chunks):
            more = k < len(chunks) - 1
            await self._send(hdlc.i_control(self.vs, self.vr), chunk, segmented=more)
            self.vs = (self.vs + 1) % 8
            if more:
                ack = await self._receive(deadline)
                if ack.kind != 0x01 or ack.nr != self.vs:
                    raise ProtocolError(f"{self.description}: segment not acknowledged (control 0x{ack.control:02x})")
        response = bytearray()
        while True:
            frame = await self._receive(deadline)
            if frame.kind != 0:
                raise ProtocolError(f"{self.description}: expected an I-frame, got control 0x{frame.control:02x}")
            if frame.ns != self.vr:
                raise ProtocolError(f"{self.description}: I-frame N(S)={frame.ns}, expected {self.vr}")
            self.vr = (self.vr + 1) % 8
            response += frame.info
            if len(response) > MAX_RESPONSE:
                raise ProtocolError(f"{self.description}: response longer than {MAX_RESPONSE} octets")
            if not frame.segmented:
                break
            await self._send(hdlc.rr_control(self.vr))
        if not response.startswith(hdlc.LLC_RESPONSE):
            raise ProtocolError(f"{self.description}: response without the LLC header E6 E7 00")
        return bytes(response[len(hdlc.LLC_RESPONSE):])

    async def _send(self, control: int, info: bytes = b"", segmented: bool = False) -> None:
        try:
            await self.link.write(hdlc.Frame(self.server, self.client, control, info, segmented).encode())
        except (ConnectionError, OSError) as exc:
            raise DeviceUnavailable(f"{self.description}: {exc}") from exc

    async def _receive(self, deadline: float) -> hdlc.Frame:
        while True:
            while self._frames:
                frame = self._frames.pop(0)
                if isinstance(frame, DecodeError):
                    raise ProtocolError(f"{self.description}: {frame}")
                if frame.destination.upper != self.client.upper:
                    continue  # another client's frame on a shared line
                if frame.kind == hdlc.DM:
                    raise DeviceUnavailable(f"{self.description}: the meter is disconnected (DM)")
                if frame.kind == hdlc.FRMR:
                    raise ProtocolError(f"{self.description}: frame rejected by the meter (FRMR {frame.info.hex()})")
                return frame
            try:
                data = await self.link.read(deadline - time.monotonic())
            except TimeoutError as exc:
                raise DeviceUnavailable(f"{self.description}: no reply in time") from exc
            except (ConnectionError, OSError) as exc:
                raise DeviceUnavailable(f"{self.description}: {exc}") from exc
            self._frames += self.reader.feed(data)


# -- the association ----------------------------------------------------------------------------------------
class DlmsClient:
    """One association over a transport; callers serialise requests (the driver holds a lock)."""

    def __init__(self, transport: Transport, timeout_s: float, password: bytes | None = None,
                 max_pdu: int = CLIENT_MAX_PDU, proposed: int = PROPOSED) -> None:
        self.transport, self.timeout_s, self.password, self.max_pdu = transport, timeout_s, password, max_pdu
        self.proposed = proposed
        self.conformance = 0
        self.server_max_pdu = 0
        self._invoke = 0
        self.label = transport.description

    async def associate(self) -> A.Aare:
        await self.transport.open(self.timeout_s)
        try:
            reply = await self.transport.request(A.encode_aarq(self.proposed, self.max_pdu, self.password),
                                                 self.timeout_s)
            if reply[:1] == bytes([A.EXCEPTION_RESPONSE]):
                raise ProtocolError(f"{self.label}: AARQ answered with {exception_message(reply)}")
            aare = A.decode_aare(reply)
            if aare.result != A.AssociationResult.ACCEPTED:
                raise AssociationRefused(aare)
            if not aare.conformance & Conformance.GET:
                raise ProtocolError(f"{self.label}: the meter does not offer GET (conformance {aare.conformance:06x})")
        except BaseException:
            await self.transport.close()
            raise
        self.conformance, self.server_max_pdu = aare.conformance, aare.max_pdu_size
        return aare

    async def release(self) -> None:
        """RLRQ (best effort) and close the transport."""
        if self.transport.is_open:
            try:
                A.check_rlre(await self.transport.request(A.encode_rlrq(), min(self.timeout_s, 1.0)))
            except (DeviceUnavailable, ProtocolError):
                pass
        await self.transport.close()

    def _next_invoke(self) -> int:
        self._invoke = (self._invoke + 1) % 16
        return 0xC0 | self._invoke  # high priority, confirmed

    async def _request(self, apdu: bytes) -> bytes:
        reply = await self.transport.request(apdu, self.timeout_s)
        if reply[:1] == bytes([A.EXCEPTION_RESPONSE]):
            raise ProtocolError(f"{self.label}: {exception_message(reply)}")
        return reply

    async def _get_response(self, apdu: bytes, invoke: int) -> A.GetResponse:
        try:
            response = A.decode_get_response(await self._request(apdu))
        except DecodeError as exc:
            await self.transport.close()
            raise ProtocolError(f"{self.label}: {exc}") from exc
        if response.invoke != invoke:
            await self.transport.close()
            raise ProtocolError(f"{self.label}: response to invoke id {response.invoke & 0x0F}, "
                                f"expected {invoke & 0x0F}")
        return response

    async def _blocks(self, first: A.GetResponse, invoke: int, what: str) -> bytes:
        """Collect a block transfer that started with ``first``; returns the raw data."""
        raw, response = bytearray(), first
        expected = 1
        while True:
            if isinstance(response.raw, int):
                raise DataAccessError(what, response.raw)
            if response.kind != 2 or response.block != expected:
                await self.transport.close()
                raise ProtocolError(f"{self.label}: {what}: block {response.block}, expected {expected}")
            raw += response.raw
            if len(raw) > MAX_RESPONSE or expected > MAX_BLOCKS:
                await self.transport.close()
                raise ProtocolError(f"{self.label}: {what}: block transfer longer than {MAX_RESPONSE} octets")
            if response.last:
                return bytes(raw)
            invoke = self._next_invoke()
            response = await self._get_response(A.encode_get_next(invoke, expected), invoke)
            expected += 1

    async def get(self, ref: AttributeRef, selection: Selection | None = None) -> Data:
        what = f"{ref.class_id}/{axdr.obis_text(ref.ln)}/{ref.attribute}"
        invoke = self._next_invoke()
        response = await self._get_response(A.encode_get_normal(invoke, ref, selection), invoke)
        if response.kind == 1:
            result = response.result
        elif response.kind == 2:
            result = self._decode(axdr.decode_all, await self._blocks(response, invoke, what))
        else:
            raise ProtocolError(f"{self.label}: {what}: GET answered with choice {response.kind}")
        if not isinstance(result, Data):
            raise DataAccessError(what, int(result if result is not None else -1))
        return result

    async def get_many(self, refs: list[AttributeRef]) -> list[Result]:
        """Values or data-access-result codes, one per reference (GET with list when the meter offers it)."""
        if not refs:
            return []
        if not self.conformance & Conformance.MULTIPLE_REFERENCES:
            out: list[Result] = []
            for ref in refs:
                try:
                    out.append(await self.get(ref))
                except DataAccessError as exc:
                    out.append(exc.code)
            return out
        per_request = max(1, ((self.server_max_pdu or 0xFFFF) - 6) // 10)  # the meter's receive limit
        if len(refs) > per_request:
            out = []
            for k in range(0, len(refs), per_request):
                out += await self.get_many(refs[k:k + per_request])
            return out
        invoke = self._next_invoke()
        response = await self._get_response(A.encode_get_with_list(invoke, refs), invoke)
        if response.kind == 3:
            results = response.results
        elif response.kind == 2:
            results = self._decode(A.decode_list_body, await self._blocks(response, invoke, "GET with list"))
        else:
            raise ProtocolError(f"{self.label}: GET with list answered with choice {response.kind}")
        if len(results) != len(refs):
            raise ProtocolError(f"{self.label}: {len(results)} results for {len(refs)} attributes")
        return list(results)

    def _decode[T](self, fn: Callable[[bytes], T], raw: bytes) -> T:
        try:
            return fn(raw)
        except DecodeError as exc:
            raise ProtocolError(f"{self.label}: {exc}") from exc
