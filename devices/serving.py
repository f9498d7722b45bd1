"""What every `s4g device serve <family>` command shares: config files, signal handling, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Mapping

import yaml
from pydantic import BaseModel


def read_config_file(path: str | None, model: type[BaseModel]) -> dict[str, Any]:
    """The raw mapping of a family config in a YAML or JSON file ({} without a file); validated by the caller."""
    if not path:
        return {}
    text = Path(path).read_text(encoding="utf-8")
    raw = json.loads(text) if path.endswith(".json") else (yaml.safe_load(text) or {})
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of {model.__name__} fields")
    return raw


def load_config_file(path: str | None, model: type[BaseModel], overrides: Mapping[str, Any] | None = None) -> BaseModel:
    """A family config from a YAML or JSON file (or defaults), with command-line values applied on top."""
    return model.model_validate({**read_config_file(path, model), **(overrides or {})})


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


def run_served(serve: Callable[[argparse.Namespace], Awaitable[None]], args: argparse.Namespace) -> int:
    """Run a serve coroutine; a port in use or a bad config is a message and exit code 2, not a traceback."""
    try:
        asyncio.run(serve(args))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
