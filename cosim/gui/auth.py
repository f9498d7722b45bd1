"""The login the GUIs depend on, as a small interface (``Gate``) the shared web-auth module plugs into.

The GUIs call ``auth.gate(method, path, headers, body, host=..., need=role)`` for every request and either send the
``Reply`` it returns or serve the request as the returned principal (``.user .role .site``, ``at_least(role)``,
``sees_site(site)``). That is the interface of the security work's ``WebAuth`` (roles viewer < operator <
engineer < admin, and resident who sees only their own site; sessions, CSRF); until it is on main,
:class:`LocalAuth` implements the same interface: scrypt-hashed users, an HttpOnly SameSite=Strict session cookie,
``/auth/login``, ``/auth/logout``, ``/auth/me``. Pass ``WebAuth(...)`` instead and nothing else changes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any, Protocol

ROLES = ("viewer", "operator", "engineer", "admin")
RESIDENT = "resident"
COOKIE = "s4g_session"


@dataclass
class Principal:
    user: str
    role: str
    site: str | None = None
    csrf: str = ""

    def at_least(self, role: str) -> bool:
        if self.role == RESIDENT:
            return role in (RESIDENT, "viewer")
        return role in ROLES and ROLES.index(self.role) >= ROLES.index(role)

    def sees_site(self, site: str | None) -> bool:
        return self.role != RESIDENT or site == self.site


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Gate(Protocol):
    def gate(self, method: str, path: str, headers: Any, body: bytes, *, host: Any, need: str | None,
             action: str | None = None, peer: str = "") -> Reply | Any: ...


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def _verify(password: str, stored: str) -> bool:
    try:
        _, salt, digest = stored.split("$")
        return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)).split("$")[2], digest)
    except ValueError:
        return False


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str
    site: str | None = None

    def __post_init__(self) -> None:
        if self.role not in (*ROLES, RESIDENT):
            raise ValueError(f"role {self.role!r}: expected one of {', '.join((*ROLES, RESIDENT))}")
        if (self.role == RESIDENT) != (self.site is not None):
            raise ValueError("a resident needs a site, and only a resident has one")


def load_users(path: str) -> list[User]:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return [User(n, u["role"], u["password"], u.get("site")) for n, u in raw.items()]


class LocalAuth:
    """Sessions for one server; ``users=None`` is open access (loopback): everyone is the local ``engineer``."""

    def __init__(self, users: list[User] | None) -> None:
        self.users = {u.name: u for u in users} if users is not None else None
        self._sessions: dict[str, Principal] = {}
        self._lock = threading.Lock()

    def _principal(self, headers: Any) -> Principal | None:
        if self.users is None:
            return Principal("local", "engineer")
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:
            return None
        token = cookie[COOKIE].value if COOKIE in cookie else None
        with self._lock:
            return self._sessions.get(token) if token else None

    def gate(self, method: str, path: str, headers: Any, body: bytes, *, host: Any, need: str | None,
             action: str | None = None, peer: str = "") -> Reply | Principal:
        if path == "/auth/login" and method == "POST":
            try:
                data = json.loads(body[:4096] or b"{}")
                name, password = str(data["user"]), str(data["password"])
            except (ValueError, KeyError, TypeError):
                return Reply(400, {"error": 'expected JSON {"user": ..., "password": ...}'})
            user = (self.users or {}).get(name)
            ok = _verify(password, user.password_hash if user else hash_password("x"))
            if not ok or user is None:
                return Reply(401, {"error": "wrong user or password"})
            token = secrets.token_urlsafe(32)
            who = Principal(user.name, user.role, user.site, secrets.token_urlsafe(16))
            with self._lock:
                self._sessions[token] = who
            return Reply(200, {"user": who.user, "role": who.role, "site": who.site},
                         {"Set-Cookie": f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"})
        if path == "/auth/logout" and method == "POST":
            return Reply(200, {"ok": True}, {"Set-Cookie": f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"})
        who = self._principal(headers)
        if path == "/auth/me":
            if who is None:
                return Reply(401, {"error": "not logged in"})
            return Reply(200, {"user": who.user, "role": who.role, "site": who.site, "csrf": who.csrf})
        if need is None:
            return who or Principal("anonymous", "anonymous")
        if who is None:
            return Reply(401, {"error": "login required"})
        if not who.at_least(need):
            return Reply(403, {"error": f"this needs the {need} role (you are {who.role})"})
        return who
