"""The part of HTTP/1.1 the Solar API needs, both sides, strict and bounded (no I/O beyond asyncio streams).

Server side: request head parsing (request line, headers, Host required for 1.1, no obsolete line folding),
malformed input -> :class:`HttpError` (the server answers 400 and closes). Client side: response parsing
with Content-Length, chunked transfer coding or read-to-close bodies, malformed input -> ProtocolError.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from devices.base import DeviceUnavailable, ProtocolError

MAX_HEAD = 16 * 1024
MAX_BODY = 4 * 1024 * 1024
MAX_HEADERS = 100
_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_VERSION = re.compile(rb"^HTTP/1\.[01]$")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 505: "HTTP Version Not Supported"}


class HttpError(Exception):
    """A request the server refuses at the HTTP level (status code and a short reason)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, last value wins."""
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.target).query, keep_blank_values=True).items()}

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return "close" not in conn if self.version == "HTTP/1.1" else "keep-alive" in conn


@dataclass(frozen=True)
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes


def _headers(lines: list[bytes], error: type[Exception]) -> dict[str, str]:
    if len(lines) > MAX_HEADERS:
        raise error(f"more than {MAX_HEADERS} header lines")
    out: dict[str, str] = {}
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise error("obsolete header line folding")
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN.match(name):
            raise error(f"malformed header line {line[:60]!r}")
        if any(c < 0x20 and c != 0x09 or c == 0x7F for c in value):
            raise error(f"control character in header {name.decode()!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _lines(head: bytes, error: type[Exception]) -> list[bytes]:
    if not head.endswith(b"\r\n\r\n"):
        raise error("head does not end with an empty line")
    return head[:-4].split(b"\r\n")


def parse_request_head(head: bytes) -> Request:
    """Request line and headers (``head`` ends with CRLF CRLF); HttpError(400/505) when malformed."""
    def bad(message: str) -> HttpError:
        return HttpError(400, message)

    lines = _lines(head, bad)
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise bad(f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if not _TOKEN.match(method):
        raise bad("malformed method")
    if not target.startswith(b"/") or any(c <= 0x20 or c >= 0x7F for c in target):
        raise bad("malformed request target")
    if not version.startswith(b"HTTP/"):
        raise bad("malformed HTTP version")
    if not _VERSION.match(version):
        raise HttpError(505, f"unsupported {version[:20]!r}")
    headers = _headers(lines[1:], bad)
    if version == b"HTTP/1.1" and "host" not in headers:
        raise bad("HTTP/1.1 request without Host header")
    if "transfer-encoding" in headers:
        raise bad("request bodies are not accepted")
    return Request(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), headers)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on a connection; None at a clean end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "connection closed in the middle of a request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(400, f"request head longer than {MAX_HEAD} bytes") from None
    request = parse_request_head(head)
    length = request.headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_HEAD:
        raise HttpError(400, "bad Content-Length")
    if int(length):
        await reader.readexactly(int(length))  # a GET needs no body: read it to keep the stream in step
    return request


def build_response(status: int, body: bytes, content_type: str = "application/json",
                   keep_alive: bool = True, extra: dict[str, str] | None = None) -> bytes:
    headers = {"Content-Type": content_type, "Content-Length": str(len(body)),
               "Connection": "keep-alive" if keep_alive else "close", **(extra or {})}
    head = f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def build_request(host: str, port: int, target: str) -> bytes:
    return (f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n"
            f"Connection: keep-alive\r\n\r\n").encode("ascii")


def parse_response_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = _lines(head, ProtocolError)
    version, _, rest = lines[0].partition(b" ")
    code, _, reason = rest.partition(b" ")
    if not _VERSION.match(version) or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"malformed HTTP status line {lines[0][:80]!r}")
    return int(code), reason.decode("latin-1"), _headers(lines[1:], ProtocolError)


def decode_chunked(data: bytes) -> tuple[bytes, int] | None:
    """Decode a complete chunked body at the start of ``data``: (body, bytes used), None if incomplete."""
    body, pos = bytearray(), 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return None
        size_text = data[pos:end].split(b";", 1)[0].strip()
        if not size_text or len(size_text) > 8 or any(c not in b"0123456789abcdefABCDEF" for c in size_text):
            raise ProtocolError(f"malformed chunk size {data[pos:end][:20]!r}")
        size = int(size_text, 16)
        pos = end + 2
        if size == 0:
            trailer_end = data.find(b"\r\n\r\n", pos - 2)
            if trailer_end < 0:
                return None
            return bytes(body), trailer_end + 4
        if len(body) + size > MAX_BODY:
            raise ProtocolError(f"chunked body larger than {MAX_BODY} bytes")
        if len(data) < pos + size + 2:
            return None
        if data[pos + size:pos + size + 2] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        body += data[pos:pos + size]
        pos += size + 2


async def read_response(reader: asyncio.StreamReader) -> Response:
    """One response; DeviceUnavailable if the connection ends before any byte, ProtocolError if malformed."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise DeviceUnavailable("connection closed before a response") from None
        raise ProtocolError(f"connection closed inside a response head ({len(exc.partial)} bytes)") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError(f"response head longer than {MAX_HEAD} bytes") from None
    status, reason, headers = parse_response_head(head)
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            data = b""
            while (done := decode_chunked(data)) is None:
                more = await reader.read(65536)
                if not more:
                    raise ProtocolError("connection closed inside a chunked body")
                data += more
                if len(data) > MAX_BODY + 65536:
                    raise ProtocolError(f"chunked body larger than {MAX_BODY} bytes")
            body = done[0]
        elif "content-length" in headers:
            text = headers["content-length"]
            if not text.isdigit() or int(text) > MAX_BODY:
                raise ProtocolError(f"bad Content-Length {text[:20]!r}")
            body = await reader.readexactly(int(text))
        else:  # no length given: the body ends with the connection
            body = b""
            while len(body) <= MAX_BODY and (more := await reader.read(65536)):
                body += more
            if len(body) > MAX_BODY:
                raise ProtocolError(f"body larger than {MAX_BODY} bytes")
    except asyncio.IncompleteReadError as exc:
        raise ProtocolError(f"connection closed inside a response body ({len(exc.partial)} bytes)") from None
    return Response(status, reason, headers, body)
