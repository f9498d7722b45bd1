"""How ``s4g bench stop`` reaches a running bench: ``RUN_DIR/bench.ctl`` names its process and control URL.

The bench writes the file when its control server listens and removes it when it has finished. The stop
command POSTs to ``/api/stop`` (the bench drives every device to its safe state and answers with the result
per device, then ends the run); if that fails it sends SIGTERM to the process, whose handler does the same.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

CTL_FILE = "bench.ctl"


def write_ctl(run_dir: Path, url: str, token: str | None = None) -> Path:
    path = Path(run_dir) / CTL_FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the token is a credential
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(json.dumps({"pid": os.getpid(), "url": url, "started": time.time(), "token": token}))
    tmp.replace(path)
    return path


def read_ctl(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / CTL_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def find_running(base: Path) -> list[Path]:
    """Run directories under ``base`` (or ``base`` itself) whose bench process is alive."""
    candidates = [base] if (base / CTL_FILE).is_file() else sorted(p.parent for p in base.glob(f"*/{CTL_FILE}"))
    out = []
    for run_dir in candidates:
        info = read_ctl(run_dir)
        if info and _alive(int(info.get("pid", 0))):
            out.append(run_dir)
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def request_stop(run_dir: Path, timeout_s: float = 30.0) -> dict[str, Any]:
    """Ask the bench of ``run_dir`` for an emergency stop; returns {"via": "http"|"signal", "safe": {...}}."""
    info = read_ctl(run_dir)
    if info is None:
        raise FileNotFoundError(f"{run_dir}: no {CTL_FILE}: no bench is running there")
    url = str(info.get("url", "")).rstrip("/") + "/api/stop"
    try:
        headers = {"Content-Type": "application/json"}
        if info.get("token"):
            headers["Authorization"] = f"Bearer {info['token']}"
        req = urllib.request.Request(url, data=b"{}", method="POST", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout_s) as reply:
            body = json.loads(reply.read().decode())
        return {"via": "http", "safe": body.get("safe", {})}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        pid = int(info.get("pid", 0))
        if not _alive(pid):
            raise ProcessLookupError(f"{run_dir}: the bench process {pid} is gone ({exc})") from None
        os.kill(pid, signal.SIGTERM)
        return {"via": "signal", "safe": {}, "pid": pid, "http_error": str(exc)}
