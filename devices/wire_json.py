"""One bounded JSON decode for every network input (OCPP frames, SenML packs, HTTP bodies, API requests).

``json.loads`` alone lets a peer choose the cost of a message: 100 000 nested brackets end in RecursionError
(an exception no protocol handler expects), a huge integer literal costs quadratic time, and NaN/Infinity
pass as numbers. :func:`loads` checks size, nesting depth and number lengths *before* parsing, with one
linear scan that respects strings, and raises only :class:`WireDecodeError` whatever the bytes.
"""

from __future__ import annotations

import json
from typing import Any

MAX_BYTES = 1 << 20  # 1 MiB: far above any OCPP or SenML message the framework sends
MAX_DEPTH = 32  # OCPP 2.0.1's deepest message nests about 8 levels
MAX_NUMBER_CHARS = 64  # longer literals are never a meaningful measurement and cost int() quadratic time


class WireDecodeError(ValueError):
    """A network input that is not acceptable JSON; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _reject_constant(name: str) -> Any:
    raise WireDecodeError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise WireDecodeError(f"duplicate key {key!r}")
        out[key] = value
    return out


def check_shape(text: str, *, max_depth: int = MAX_DEPTH, max_number_chars: int = MAX_NUMBER_CHARS) -> None:
    """Raise WireDecodeError if ``text`` nests deeper than ``max_depth`` or has an over-long number literal.

    A linear scan that skips string contents (escapes included); it does not validate the JSON itself.
    """
    depth = 0
    in_string = escaped = False
    run = 0  # length of the current run of number characters outside strings
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch in "0123456789+-.eE":
            run += 1
            if run > max_number_chars:
                raise WireDecodeError(f"number literal longer than {max_number_chars} characters")
            continue
        run = 0
        if ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                raise WireDecodeError(f"nested deeper than {max_depth} levels")
        elif ch in "]}":
            depth -= 1


def loads(data: bytes | bytearray | memoryview | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
          max_number_chars: int = MAX_NUMBER_CHARS, reject_duplicates: bool = True) -> Any:
    """Decode one JSON document from the network within limits; WireDecodeError on any problem.

    Rejected: more than ``max_bytes`` (UTF-8), text that is not UTF-8, nesting deeper than ``max_depth``,
    number literals longer than ``max_number_chars``, NaN/Infinity, duplicate object keys (unless
    ``reject_duplicates=False``), and anything ``json`` itself refuses.
    """
    if isinstance(data, str):
        if len(data) > max_bytes or len(data.encode("utf-8", "surrogatepass")) > max_bytes:
            raise WireDecodeError(f"larger than {max_bytes} bytes")
        text = data
    else:
        if len(data) > max_bytes:
            raise WireDecodeError(f"larger than {max_bytes} bytes")
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise WireDecodeError("not UTF-8") from None
    check_shape(text, max_depth=max_depth, max_number_chars=max_number_chars)
    try:
        return json.loads(text, parse_constant=_reject_constant,
                          object_pairs_hook=_no_duplicates if reject_duplicates else None)
    except WireDecodeError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise WireDecodeError(f"not JSON: {exc}") from None


__all__ = ["MAX_BYTES", "MAX_DEPTH", "MAX_NUMBER_CHARS", "WireDecodeError", "check_shape", "loads"]
