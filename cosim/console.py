"""What every ``s4g`` command prints through, how it exits, and how its options are read.

Exit codes: 0 success, 1 a run failed, 2 the scenario or another input is invalid, 130 interrupted.
"""

from __future__ import annotations

import argparse
from typing import Any
from collections.abc import Callable

from rich.console import Console

# Piped output (CI logs, files) gets a wide console so KPI tables do not wrap.
console = Console(soft_wrap=True, width=None if Console().is_terminal else 160)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def option[T](parse: Callable[[Any], T]) -> Callable[[str], T]:
    """``parse`` as an argparse ``type=``: its ValueError message, not "invalid value", reaches the user
    (``s4g run: error: argument --until: a duration is at most 3650d (ten years) (found '1e9d')``, exit 2)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{exc} (found {text!r})") from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_INVALID", "EXIT_OK", "console", "err_console", "option"]
