"""The one validator for names that become paths, and for the paths the command line writes to.

A scenario's ``name``, its variant names and the ids of its sites, devices, controllers and fleets end up as
file and directory names (``runs/<name>-<stamp>/``, ``io/<device>.parquet``): each must be one harmless path
component, so ``name: ../../outside`` cannot put a run directory outside ``runs/``. Output paths given on the
command line are checked before anything runs, so a mistyped ``--out`` fails in a second with exit code 2,
not with a traceback after the simulation.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

MAX_NAME = 100
# one path component without surprises on any file system: no separators, no control or reserved characters
_FORBIDDEN = re.compile(r'[/\\<>:"|?*\x00-\x1f\x7f]')
NAME_RULE = (f"a name of 1..{MAX_NAME} characters without / \\ < > : \" | ? * or control characters, "
             "not starting with '.' or a space")


def check_name(value: Any) -> str:
    """A name that is used as a file or directory name; ValueError saying the rule otherwise."""
    if not isinstance(value, str):
        raise ValueError(f"expected {NAME_RULE}")
    bad = _FORBIDDEN.search(value)
    if bad:
        raise ValueError(f"expected {NAME_RULE}; this one contains {bad.group()!r}")
    if not value or len(value) > MAX_NAME or value[0] in ". " or value[-1] == " ":
        raise ValueError(f"expected {NAME_RULE}")
    return value


class OutputPathError(ValueError):
    """An output path the command line cannot write to; ``str()`` names the option and the reason."""


def output_dir(path: str | Path, option: str = "--out") -> Path:
    """Check that the directory ``path`` exists or can be created and written to; OutputPathError naming
    ``option`` otherwise. Folders created to find out are removed again: a run that then refuses to start
    (an unreachable bench device) leaves nothing behind."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputPathError(f"{option} {p}: exists and is not a directory (expected a directory to write into)")
    missing = []  # deepest first
    probe = p
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        p.mkdir(parents=True, exist_ok=True)  # the only reliable test (root may write where os.access says no)
        writable = os.access(p, os.W_OK | os.X_OK)
    except OSError as exc:
        raise OutputPathError(f"{option} {p}: cannot create the directory ({exc.strerror or exc})") from None
    finally:
        for folder in missing:
            try:
                folder.rmdir()
            except OSError:
                break
    if not writable:
        raise OutputPathError(f"{option} {p}: the directory is not writable")
    return p


def output_file(path: str | Path, option: str) -> Path:
    """Check that the file ``path`` can be written (its folder exists and is writable, it is no directory)."""
    p = Path(path)
    if p.is_dir():
        raise OutputPathError(f"{option} {p}: is a directory (expected a file name)")
    folder = p.parent
    if not folder.is_dir():
        raise OutputPathError(f"{option} {p}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise OutputPathError(f"{option} {p}: not writable")
    return p


__all__ = ["MAX_NAME", "NAME_RULE", "OutputPathError", "check_name", "output_dir", "output_file"]
