"""What every `s4g device serve <family>` command shares: option types, config files, signal handling, exit codes.

An invalid input is exit code 2 with a message naming the option or file, never a traceback and never a
device that runs on nonsense: option values go through the argparse types below (a port 0..65535, a finite
model step > 0, ...), ``--config`` files through the strict YAML reader (:mod:`devices.yaml_file`) or the
bounded JSON decoder (:mod:`devices.wire_json`) and then the family's config model, and a port already in
use is reported by :func:`run_served`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import re
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from collections.abc import Callable, Coroutine, Iterator, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ValidationError

from devices import yaml_file
from devices.wire_json import WireDecodeError, loads


# -- option types (argparse ``type=``): a bad value is "argument --port: expected ... (found '99999')", exit 2
def number(low: float = -math.inf, high: float = math.inf, *, above: bool = False) -> Callable[[str], float]:
    """A finite number in [low, high] (or (low, high] with ``above``)."""
    lower = "" if low == -math.inf else f" {'>' if above else '>='} {low:g}"
    upper = "" if high == math.inf else f"{' and' if lower else ''} <= {high:g}"
    expected = f"a finite number{lower}{upper}"

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"expected {expected} (found {text!r})")
        return value

    convert.__name__ = "number"
    return convert


finite = number()
positive = number(0, above=True)
non_negative = number(0)
fraction = number(0, 1)
#: a model step or a period in wall-clock seconds: > 0, at most an hour (0 would spin the CPU at 100 %)
step_s = number(0, 3600, above=True)
#: how long to serve: > 0, at most a year of wall-clock time
duration_s = number(0, 366 * 86400, above=True)


def integer(low: int, high: int, what: str, note: str = "") -> Callable[[str], int]:
    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} {low}..{high}{note} (found {text!r})")
        return value

    convert.__name__ = "integer"
    return convert


port = integer(0, 65535, "a TCP port", ", 0 = any free port")
modbus_unit = integer(1, 247, "a Modbus unit id")

_CLOCK = re.compile(r"^(?:[01]\d|2[0-3]):[0-5]\d$")


def daily_window(text: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """``HH:MM-HH:MM`` in local time (00:00 .. 23:59; the window may wrap past midnight)."""
    a, sep, b = text.partition("-")
    if not sep or not _CLOCK.match(a.strip()) or not _CLOCK.match(b.strip()):
        raise argparse.ArgumentTypeError(f"expected HH:MM-HH:MM with times 00:00..23:59, e.g. 18:45-07:20 "
                                         f"(found {text!r})")
    start, end = (tuple(int(x) for x in t.strip().split(":")) for t in (a, b))
    return start, end  # type: ignore[return-value]


def websocket_url(text: str) -> str:
    """``ws://host[:port]/path`` or ``wss://...``."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port outside 0..65535
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected a websocket URL ws://HOST[:PORT]/PATH or wss://... "
                                         f"(found {text!r})")
    return text


_IDENTITY = re.compile(r"^[^\s/?#%\x00-\x1f\x7f]{1,48}$")


def identity(text: str) -> str:
    """An OCPP charge point identity: 1..48 characters, the last segment of the CSMS URL."""
    if not _IDENTITY.match(text):
        raise argparse.ArgumentTypeError(f"expected a charge point id of 1..48 characters without spaces, / ? # % "
                                         f"or control characters (found {text!r})")
    return text


# -- config files ---------------------------------------------------------------------------------------------
class ConfigError(ValueError):
    """A ``--config`` file (or option) that does not give a valid family config; ``str()`` says where and why."""


def read_config_file(path: str | None, model: type[BaseModel]) -> dict[str, Any]:
    """The raw mapping of a family config in a YAML or JSON file ({} without a file); validated by the caller."""
    if not path:
        return {}
    try:
        if path.endswith(".json"):
            raw = loads(Path(path).read_bytes())
        else:
            raw = yaml_file.read(path).data or {}
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read the file ({exc.strerror or exc})") from None
    except WireDecodeError as exc:
        raise ConfigError(f"--config {path}: not valid JSON: {exc.reason}") from None
    except yaml_file.YamlInputError as exc:
        raise ConfigError("\n".join(f"--config {path}:{p.line or ''}: {_where(p.loc)}{p.message}"
                                    for p in exc.problems)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: expected a mapping of {model.__name__} fields (found "
                          f"{type(raw).__name__})")
    return raw


def _where(loc: tuple[str | int, ...]) -> str:
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc).lstrip(".")
    return f"{path}: " if path else ""


def validate_config[M: BaseModel](model: type[M], raw: Mapping[str, Any], source: str) -> M:
    """``model`` from ``raw``; ConfigError listing each field's key path, expectation and value found."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        lines = [f"{source}: {_where(tuple(e['loc']))}{e['msg'].removeprefix('Value error, ')}"
                 + (f" (found {e['input']!r})" if e["type"] != "missing" and not isinstance(e.get("input"), dict)
                    else "") for e in exc.errors()]
        raise ConfigError("\n".join(lines)) from None


def load_config_file[M: BaseModel](path: str | None, model: type[M],
                                   overrides: Mapping[str, Any] | None = None) -> M:
    """A family config from a YAML or JSON file (or defaults), with command-line values applied on top."""
    return validate_config(model, {**read_config_file(path, model), **(overrides or {})},
                           f"--config {path}" if path else model.__name__)


# -- running ----------------------------------------------------------------------------------------------------
@contextmanager
def stop_on_signals(loop: asyncio.AbstractEventLoop) -> Iterator[asyncio.Event]:
    """An event set by SIGINT or SIGTERM, so a served device shuts down cleanly (sockets released)."""
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_served(serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: argparse.Namespace) -> int:
    """Run a serve coroutine; a port in use or a bad config is a message and exit code 2, not a traceback."""
    try:
        asyncio.run(serve(args))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
