"""The login the GUIs use: the framework's shared web access control (:mod:`cosim.security.webauth`).

The app depends only on ``gate(method, path, headers, body, host=..., need=role)``, which returns either a
``Reply`` to send (login, logout, who-am-I, 401/403) or the ``Principal`` (``user``, ``role``, ``site``,
``sees_site(site)``). ``gui_auth(users)`` is what ``s4g sta serve`` uses: login against a users file (``s4g``'s
users file, made with ``cosim.security.webauth.add_user``), or without one open access as the local engineer
(the server binds 127.0.0.1 by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from cosim.security.webauth import RESIDENT, Principal, Reply, User, WebAuth, hash_password

__all__ = ["RESIDENT", "Gate", "Principal", "Reply", "User", "WebAuth", "gui_auth", "hash_password"]


class Gate(Protocol):
    def gate(self, method: str, path: str, headers: Any, body: bytes, *, host: Any, need: str | None,
             action: str | None = None, peer: str = "") -> Any: ...


def gui_auth(users: str | Path | None, audit_log: str | Path | None = None) -> WebAuth:
    if users:
        return WebAuth(users, audit_log=audit_log)
    return WebAuth.open_access("engineer", audit_log=audit_log)
