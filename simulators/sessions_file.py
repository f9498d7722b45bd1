"""Reading the EV fleet's sessions file (``sessions.jsonl`` or ``.parquet``) written by simulators/ev_fleet.py.

The writer appends one line per ended session and flushes it; a crash can leave the last line cut short. That line
is a record that never finished: it is dropped, counted (``SessionsRead.truncated``) and reported with a
``TruncatedSessionsWarning``, and every complete record is kept. Anything else that does not parse (a bad line with
more lines after it, a complete line that is not a record) is corruption, not a crash: ``SessionsFileError``
names the file and the line.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


class SessionsFileError(ValueError):
    """The sessions file is corrupt before its last line (or a line is not a session/site record)."""


class TruncatedSessionsWarning(UserWarning):
    """The sessions file ends in a cut-short record (the writer stopped mid-line); the record was dropped."""


@dataclass
class SessionsRead:
    sessions: list[dict] = field(default_factory=list)
    sites: list[dict] = field(default_factory=list)
    truncated: int = 0  # cut-short records dropped at the end of the file (0 or 1)


def scan_sessions(path: str | Path) -> SessionsRead:
    """Every complete record of a sessions file, and how many cut-short ones were dropped."""
    path = Path(path)
    out = SessionsRead()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        out.sessions = [r for r in table.to_pylist() if r.get("record") == "session"]
        out.sites = json.loads(meta.get(b"s4g_sites", b"[]"))
        return out
    data = path.read_bytes()
    lines = data.split(b"\n")
    ends_complete = data.endswith(b"\n") or not data
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = number == len(lines)  # only a line without its newline can be cut short
        try:
            record = json.loads(raw.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            if last and not ends_complete:
                out.truncated += 1
                continue
            raise SessionsFileError(f"{path}: line {number} is not JSON ({exc})") from None
        kind = record.get("record") if isinstance(record, dict) else None
        if kind == "session":
            out.sessions.append(record)
        elif kind == "site":
            out.sites.append(record)
        else:
            raise SessionsFileError(f"{path}: line {number} is not a session or site record: {raw[:80]!r}")
    if out.truncated:
        message = (f"{path}: the last record is cut short (the writer stopped mid-line); dropped it and kept "
                   f"{len(out.sessions)} sessions")
        log.warning(message)
        warnings.warn(message, TruncatedSessionsWarning, stacklevel=3)
    return out


def read_sessions(path: str | Path) -> tuple[list[dict], list[dict]]:
    """(sessions, site summaries) from a sessions file written by the fleet simulator (see :func:`scan_sessions`)."""
    got = scan_sessions(path)
    return got.sessions, got.sites
