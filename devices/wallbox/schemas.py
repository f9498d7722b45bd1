"""OCPP message validation against the official JSON schemas shipped with the ``ocpp`` package.

Every message we send or receive is checked (compiled with fastjsonschema: about 20x faster than the
package's interpreted jsonschema path, same schemas). A violation becomes an :class:`OcppFault` carrying the
version's own error code (1.6 "FormationViolation" / 2.0.1 "FormatViolation", ...). Date-times are checked
too (the package does not): an ISO 8601 date and time with seconds, the offset optional (read as UTC, as
many chargers send it), a real calendar date.
"""

from __future__ import annotations

import functools
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from collections.abc import Callable, Mapping

import fastjsonschema
import ocpp
from ocpp.messages import MessageType
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201

KNOWN_ACTIONS = {"1.6": frozenset(a.value for a in Action16), "2.0.1": frozenset(a.value for a in Action201)}
# 1.6 spells two codes differently from 2.0.1
_V16_CODES = {"FormatViolation": "FormationViolation", "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}
_V201_CODES = {v: k for k, v in _V16_CODES.items()}

_DATE_TIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.\d{1,9})?(?:[Zz]|[+-](\d\d):(\d\d))?\Z")


class OcppFault(Exception):
    """Raised by a handler (or the validator) to answer with a CALLERROR of a given code."""

    def __init__(self, code: str, description: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(description)
        self.code, self.description, self.details = code, description, dict(details or {})


def error_code(code: str, version: str) -> str:
    """The version's spelling of an error code."""
    return _V16_CODES.get(code, code) if version == "1.6" else _V201_CODES.get(code, code)


def is_date_time(value: Any) -> bool:
    """An ISO 8601 date-time as OCPP uses it: ``YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]``, a real instant."""
    m = _DATE_TIME.match(value) if isinstance(value, str) else None
    if m is None:
        return False
    y, mo, d, h, mi, s, oh, om = (int(g) if g is not None else 0 for g in m.groups())
    try:
        datetime(y, mo, d, h, mi, s)
    except ValueError:
        return False
    return y >= 1 and oh <= 23 and om <= 59


def _code_for(rule: str, version: str) -> str:
    if rule in ("type", "format"):  # a date-time that is not one is a value of the wrong data type
        return "TypeConstraintViolation"
    if rule in ("additionalProperties", "additionalItems"):
        return error_code("FormatViolation", version)
    if rule == "required":
        return "ProtocolError" if version == "1.6" else "OccurrenceConstraintViolation"
    if rule in ("minItems", "maxItems"):
        return error_code("OccurrenceConstraintViolation", version)
    return "PropertyConstraintViolation"  # enum, maxLength, minimum, maximum, multipleOf...


@functools.cache
def schema(message_type: int, action: str, version: str) -> dict[str, Any]:
    """The ``ocpp`` package's schema file (the official OCPP JSON schema) of a request or response."""
    name = action + ("Response" if message_type == MessageType.CallResult else
                     "Request" if version != "1.6" else "")
    path = Path(ocpp.__file__).parent / f"v{version.replace('.', '')}" / "schemas" / f"{name}.json"
    return cast("dict[Any, Any]", json.loads(path.read_text(encoding="utf-8-sig")))


@functools.cache
def _compiled(message_type: int, action: str, version: str) -> Callable[[Any], Any]:
    # defaults are not filled in; "date-time" is the only format the OCPP schemas use
    return fastjsonschema.compile(schema(message_type, action, version), use_default=False,
                                  formats={"date-time": is_date_time})


def validate(message_type: int, action: str, payload: Any, version: str) -> None:
    """Raise :class:`OcppFault` if ``payload`` violates the action's schema (request or response)."""
    if action not in KNOWN_ACTIONS.get(version, ()):  # also keeps a crafted action name out of the file system
        raise OcppFault("NotImplemented", f"{str(action)[:60]!r} is not an OCPP {version} action")
    try:
        check = _compiled(message_type, action, version)
    except (OSError, ValueError) as exc:
        raise OcppFault("NotImplemented", f"no schema for {action}") from exc
    try:
        check(payload)
    except fastjsonschema.JsonSchemaValueException as exc:
        where = "/".join(str(p) for p in (exc.path or [])[1:]) or "payload"
        raise OcppFault(_code_for(str(exc.rule), version), f"{where}: {exc.message}"[:500]) from None


__all__ = ["KNOWN_ACTIONS", "OcppFault", "error_code", "is_date_time", "schema", "validate"]
