"""SenML (RFC 8428) JSON codec: parse, validate, resolve, and encode compact packs.

Two record types:

* ``RawRecord`` -- a record as it appears in a pack, with base fields (bn, bt, bu, bv, bs, bver) and regular
  fields (n, u, v, vs, vb, vd, s, t, ut), all optional.
* ``Record`` -- a *resolved* record (RFC 8428 §4.6): full name, unit, exactly one value (or a sum) and an
  absolute time in seconds since the Unix epoch.

``decode(payload, now=...)`` = ``resolve(parse(payload), now=...)``; ``encode(records)`` writes a compact pack
(base name, base unit and base time factored out where that is lossless). Every problem with a payload raises
``SenMLError`` with a ``reason`` -- never another exception type, whatever the bytes.

Time resolution: a resolved time (bt + t) of 2**28 or more is absolute (seconds since the epoch); a smaller
one is relative to "now" (RFC 8428 §4.5.3). The caller supplies ``now`` in epoch seconds; the message bus
passes the *send* time of the message (scenario start + simulated send time), so a relative time means the
same instant in every run and with every broker, whatever the wall clock or the injected delay. Without
``now`` the wall clock is used, as the RFC intends for live data.

Validation (profile "S4G SenML", docs/messaging.md):
* the pack is a non-empty JSON array of objects, decoded by the one bounded decoder of network JSON
  (``devices.wire_json.loads``): payloads over ``MAX_PAYLOAD_BYTES``, not UTF-8, nested deeper than
  ``MAX_DEPTH``, with over-long number literals, duplicate keys or NaN/Infinity are rejected, and so are
  non-finite numbers and numbers given as strings or booleans;
* a resolved time (bt + t, after relative times are resolved) lies within ``MIN_TIME_S .. MAX_TIME_S``
  (1978..2106); ``ut`` within 0 .. ``MAX_TIME_S``;
* the concatenated name bn+n is not empty, uses only ``A-Z a-z 0-9 - : . / _`` and starts with a letter or
  digit (§4.5.1);
* at most one value field (v, vs, vb, vd), and a value or a sum (s) must be present (§4.2);
* units come from the SenML units registry, the RFC 8798 secondary units or the S4G extensions
  (``units.KNOWN_UNITS``; ``strict_units=False`` accepts any non-empty unit);
* ``vd`` is base64url without padding, ``ut`` is not negative, ``bver`` is a positive integer not above 10 and
  the same in every record that carries it;
* fields ending in ``_`` (must-understand extensions) are rejected; other unknown fields are ignored (§4.4).
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import time as _time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from devices import wire_json

from . import units as _units
from .errors import SenMLError

__all__ = [
    "ABSOLUTE_TIME_THRESHOLD", "MAX_PAYLOAD_BYTES", "MAX_TIME_S", "MIN_TIME_S", "SENML_VERSION", "RawRecord", "Record",
    "SenMLError",
    "decode", "encode", "is_valid_name", "parse", "resolve", "to_raw",
]

SENML_VERSION = 10
ABSOLUTE_TIME_THRESHOLD = 2**28  # resolved times below this are relative to "now"
# The sane window of resolved times (epoch seconds): 1978-07-04 .. 2106-02-07. A time outside it is no
# measurement of this era (``"t": 1e300`` overflows every datetime) and is rejected, like any malformed field.
MIN_TIME_S = float(ABSOLUTE_TIME_THRESHOLD)
MAX_TIME_S = float(2**32)
MAX_PAYLOAD_BYTES = 1 << 20
MAX_DEPTH = 4  # a pack is an array of flat objects: two levels; a little slack for ignored extension fields

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*\Z")
_B64URL_RE = re.compile(r"[A-Za-z0-9_\-]*\Z")

# label -> JSON type class; the order is the order fields are written in
_FIELDS: dict[str, str] = {
    "bn": "str", "bt": "num", "bu": "str", "bv": "num", "bs": "num", "bver": "int",
    "n": "str", "u": "str", "v": "num", "vs": "str", "vb": "bool", "vd": "str", "s": "num", "t": "num",
    "ut": "num",
}


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record of a pack as written: every field optional, base fields not yet applied."""

    bn: str | None = None
    bt: float | None = None
    bu: str | None = None
    bv: float | None = None
    bs: float | None = None
    bver: int | None = None
    n: str | None = None
    u: str | None = None
    v: float | None = None
    vs: str | None = None
    vb: bool | None = None
    vd: str | None = None
    s: float | None = None
    t: float | None = None
    ut: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in _FIELDS if getattr(self, k) is not None}


@dataclass(frozen=True, slots=True)
class Record:
    """A resolved SenML record. Exactly one of value/string/boolean/data is set, or none of them and ``sum``.

    ``time`` is in seconds since the epoch for the codec; the message bus hands records to components with
    ``time`` in simulated seconds from the scenario start (see ``cosim.messaging.bus``). ``time=None`` when
    encoding means "now" (the field is left out).
    """

    name: str
    value: float | None = None
    unit: str | None = None
    time: float | None = None
    string: str | None = None
    boolean: bool | None = None
    data: str | None = None
    sum: float | None = None
    update_time: float | None = None

    @property
    def kind(self) -> str:
        """The SenML label of the value this record carries: ``v``, ``vs``, ``vb``, ``vd`` or ``s``."""
        if self.value is not None:
            return "v"
        if self.string is not None:
            return "vs"
        if self.boolean is not None:
            return "vb"
        if self.data is not None:
            return "vd"
        return "s"

    @property
    def result(self) -> float | str | bool | None:
        """The record's value, whatever its type (the sum when there is no value)."""
        kind = self.kind
        return {"v": self.value, "vs": self.string, "vb": self.boolean, "vd": self.data, "s": self.sum}[kind]

    def data_bytes(self) -> bytes:
        """The ``vd`` value decoded from base64url (no padding)."""
        if self.data is None:
            raise SenMLError(f"record {self.name!r} has no data value")
        return _b64url_decode(self.data)


# ---------------------------------------------------------------------------------------------- helpers
def is_valid_name(name: str) -> bool:
    """RFC 8428 §4.5.1: non-empty, ``A-Z a-z 0-9 - : . / _`` only, starting with a letter or digit."""
    return isinstance(name, str) and _NAME_RE.match(name) is not None


def _b64url_decode(text: str) -> bytes:
    if not _B64URL_RE.match(text) or len(text) % 4 == 1:
        raise SenMLError("vd is not base64url without padding")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise SenMLError(f"vd is not base64url: {exc}") from None


def _number(label: str, value: Any, index: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SenMLError(f"field {label!r} must be a number, got {type(value).__name__}", index)
    try:
        out = float(value)
    except OverflowError:
        raise SenMLError(f"field {label!r} is too large", index) from None
    if not math.isfinite(out):
        raise SenMLError(f"field {label!r} is not finite", index)
    return out


def _field(label: str, value: Any, index: int) -> Any:
    kind = _FIELDS[label]
    if kind == "num":
        return _number(label, value, index)
    if kind == "str":
        if not isinstance(value, str):
            raise SenMLError(f"field {label!r} must be a string, got {type(value).__name__}", index)
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            raise SenMLError(f"field {label!r} must be true or false, got {type(value).__name__}", index)
        return value
    # bver: a positive integer
    number = _number(label, value, index)
    if number != int(number) or number < 1:
        raise SenMLError(f"bver must be a positive integer, got {value!r}", index)
    return int(number)


# ------------------------------------------------------------------------------------------------ parse
def parse(payload: bytes | bytearray | memoryview | str, *, max_bytes: int = MAX_PAYLOAD_BYTES) -> list[RawRecord]:
    """Bytes or text -> raw records. Checks JSON syntax and field types only (``resolve`` does the rest)."""
    if isinstance(payload, str):
        if len(payload) > max_bytes:
            raise SenMLError(f"larger than {max_bytes} bytes")
        text = payload
    elif isinstance(payload, (bytes, bytearray, memoryview)):
        if len(payload) > max_bytes:
            raise SenMLError(f"larger than {max_bytes} bytes")
        try:
            text = bytes(payload).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SenMLError(f"payload is not UTF-8: {exc.reason} at byte {exc.start}") from None
    else:
        raise SenMLError(f"payload must be bytes or str, got {type(payload).__name__}")
    if not text.strip():
        raise SenMLError("empty payload")
    try:  # the one bounded decode of network JSON: size, nesting depth, number length, NaN, duplicate keys
        obj = wire_json.loads(text, max_bytes=max_bytes, max_depth=MAX_DEPTH)
    except wire_json.WireDecodeError as exc:
        raise SenMLError(exc.reason) from None
    if not isinstance(obj, list):
        raise SenMLError(f"a SenML pack is a JSON array of records, got a JSON {type(obj).__name__}")
    if not obj:
        raise SenMLError("empty pack")
    return [_raw_from_json(item, i) for i, item in enumerate(obj)]


def _raw_from_json(item: Any, index: int) -> RawRecord:
    if not isinstance(item, dict):
        raise SenMLError(f"a record is a JSON object, got {type(item).__name__}", index)
    fields: dict[str, Any] = {}
    for label, value in item.items():
        if label not in _FIELDS:
            if label.endswith("_"):
                raise SenMLError(f"unsupported must-understand field {label!r}", index)
            continue  # unknown optional extension field: ignored (RFC 8428 §4.4)
        fields[label] = _field(label, value, index)
    return RawRecord(**fields)


# ---------------------------------------------------------------------------------------------- resolve
def resolve(records: Iterable[RawRecord], *, now: float | None = None, strict_units: bool = True) -> list[Record]:
    """Apply base fields and relative times; validate every resolved record (see the module docstring)."""
    out: list[Record] = []
    bn, bt, bu, bv, bs = "", 0.0, None, None, None
    version: int | None = None
    now_s: float | None = None if now is None else float(now)
    for i, r in enumerate(records):
        if r.bver is not None:
            if r.bver > SENML_VERSION:
                raise SenMLError(f"SenML version {r.bver} is newer than the supported {SENML_VERSION}", i)
            if version is not None and r.bver != version:
                raise SenMLError(f"bver {r.bver} differs from bver {version} of an earlier record", i)
            version = r.bver
        if r.bn is not None:
            bn = r.bn
        if r.bt is not None:
            bt = r.bt
        if r.bu is not None:
            bu = r.bu
        if r.bv is not None:
            bv = r.bv
        if r.bs is not None:
            bs = r.bs
        value = r.v if (r.v is None or bv is None) else r.v + bv
        total = r.s if (r.s is None or bs is None) else r.s + bs
        t = bt + (r.t if r.t is not None else 0.0)
        if not math.isfinite(t):
            raise SenMLError("time is not finite", i)
        if t < ABSOLUTE_TIME_THRESHOLD:
            if now_s is None:
                now_s = _time.time()
            t = now_s + t
        if not MIN_TIME_S <= t <= MAX_TIME_S:
            raise SenMLError(f"time {t:.6g} s is outside the sane window {MIN_TIME_S:.0f}..{MAX_TIME_S:.0f} s "
                             "(1978..2106)", i)
        rec = Record(name=bn + (r.n or ""), value=value, unit=r.u if r.u is not None else bu, time=t,
                     string=r.vs, boolean=r.vb, data=r.vd, sum=total, update_time=r.ut)
        _check(rec, i, strict_units)
        out.append(rec)
    if not out:
        raise SenMLError("empty pack")
    return out


def _check(rec: Record, index: int, strict_units: bool) -> None:
    """Validate one resolved (or to-be-encoded) record."""
    if not isinstance(rec.name, str) or not rec.name:
        raise SenMLError("record has no name (neither bn nor n)", index)
    if not _NAME_RE.match(rec.name):
        raise SenMLError(f"invalid name {rec.name!r}: use A-Z a-z 0-9 - : . / _ and start with a letter or digit",
                         index)
    present = [k for k, x in (("v", rec.value), ("vs", rec.string), ("vb", rec.boolean), ("vd", rec.data))
               if x is not None]
    if len(present) > 1:
        raise SenMLError(f"more than one value field ({', '.join(present)})", index)
    if not present and rec.sum is None:
        raise SenMLError("record has no value (v, vs, vb, vd) and no sum (s)", index)
    for label, x in (("v", rec.value), ("s", rec.sum), ("t", rec.time), ("ut", rec.update_time)):
        if x is not None:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise SenMLError(f"{label} must be a number, got {type(x).__name__}", index)
            if not math.isfinite(x):
                raise SenMLError(f"{label} is not finite", index)
    if rec.string is not None and not isinstance(rec.string, str):
        raise SenMLError("vs must be a string", index)
    if rec.boolean is not None and not isinstance(rec.boolean, bool):
        raise SenMLError("vb must be true or false", index)
    if rec.data is not None:
        if not isinstance(rec.data, str):
            raise SenMLError("vd must be a base64url string", index)
        try:
            _b64url_decode(rec.data)
        except SenMLError as exc:
            raise SenMLError(exc.reason, index) from None
    if rec.time is not None and abs(rec.time) > MAX_TIME_S:  # absolute beyond 2106, or a relative offset as large
        raise SenMLError(f"time {rec.time:.6g} s is outside the sane window (|t| <= {MAX_TIME_S:.0f} s)", index)
    if rec.update_time is not None and not 0 <= rec.update_time <= MAX_TIME_S:
        raise SenMLError(f"ut (update time) must be within 0..{MAX_TIME_S:.0f} s", index)
    if rec.unit is not None:
        if not isinstance(rec.unit, str) or not rec.unit:
            raise SenMLError("unit must be a non-empty string", index)
        if strict_units and not _units.is_known(rec.unit):
            raise SenMLError(f"unknown unit {rec.unit!r} (not in the SenML units registries nor the S4G extensions)",
                             index)


def decode(payload: bytes | bytearray | memoryview | str, *, now: float | None = None, strict_units: bool = True,
           max_bytes: int = MAX_PAYLOAD_BYTES) -> list[Record]:
    """Payload -> resolved, validated records (raises ``SenMLError`` with a reason)."""
    return resolve(parse(payload, max_bytes=max_bytes), now=now, strict_units=strict_units)


# ----------------------------------------------------------------------------------------------- encode
def _common_base_name(names: Sequence[str]) -> str:
    prefix = os.path.commonprefix(list(names))  # noqa: RUF071 - by character on purpose; cut at a separator below
    cut = max(prefix.rfind("/"), prefix.rfind(":"))
    return prefix[: cut + 1] if cut >= 0 else ""


def _pack(records: Sequence[Record], base_name: str | None, compact: bool, strict_units: bool) -> list[dict[str, Any]]:
    if not records:
        raise SenMLError("empty pack")
    for i, rec in enumerate(records):
        if not isinstance(rec, Record):
            raise SenMLError(f"expected a Record, got {type(rec).__name__}", i)
        _check(rec, i, strict_units)
    many = len(records) > 1
    if base_name is None:
        base_name = _common_base_name([r.name for r in records]) if (compact and many) else ""
    cut = len(base_name)
    for i, rec in enumerate(records):
        if not rec.name.startswith(base_name):
            raise SenMLError(f"name {rec.name!r} does not start with the base name {base_name!r}", i)
    base_unit = None
    base_time = None
    if compact and many:
        unit0 = records[0].unit
        if unit0 is not None and all(r.unit == unit0 for r in records):
            base_unit = unit0
        t0 = records[0].time
        if t0 is not None and all(r.time is not None and (r.time - t0) + t0 == r.time for r in records):
            base_time = t0
    out: list[dict[str, Any]] = []
    for i, r in enumerate(records):
        d: dict[str, Any] = {}
        if i == 0:
            if base_name:
                d["bn"] = base_name
            if base_time is not None:
                d["bt"] = base_time
            if base_unit is not None:
                d["bu"] = base_unit
        if len(r.name) > cut:
            d["n"] = r.name[cut:]
        if r.unit is not None and base_unit is None:
            d["u"] = r.unit
        if r.value is not None:
            d["v"] = r.value
        elif r.string is not None:
            d["vs"] = r.string
        elif r.boolean is not None:
            d["vb"] = r.boolean
        elif r.data is not None:
            d["vd"] = r.data
        if r.sum is not None:
            d["s"] = r.sum
        if r.time is not None:
            t = r.time if base_time is None else r.time - base_time
            if base_time is None or t != 0:
                d["t"] = t
        if r.update_time is not None:
            d["ut"] = r.update_time
        out.append(d)
    return out


def to_raw(records: Sequence[Record], *, base_name: str | None = None, compact: bool = True,
           strict_units: bool = True) -> list[RawRecord]:
    """Resolved records -> the raw records of a pack, with base fields where that is lossless.

    ``base_name``: written as ``bn`` (every record name must start with it); None picks the longest common
    prefix ending in ``/`` or ``:`` when ``compact``. ``bu`` is used when all records share a unit, ``bt``
    when all records have a time and ``(t - bt) + bt == t`` holds exactly for every record (so decoding gives
    back the same floats). Base value and base sum are never written (they could round).
    """
    return [RawRecord(**d) for d in _pack(records, base_name, compact, strict_units)]


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def encode(records: Sequence[Record], *, base_name: str | None = None, compact: bool = True,
           strict_units: bool = True) -> bytes:
    """Resolved records -> SenML JSON bytes (compact form, see ``to_raw``). Deterministic byte for byte."""
    return _ENCODER.encode(_pack(records, base_name, compact, strict_units)).encode("ascii")
