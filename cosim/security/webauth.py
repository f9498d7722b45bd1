"""Login, roles, sessions, CSRF and an audit log for every web page and API of the framework.

Framework-neutral: a server hands each request to :meth:`WebAuth.gate` (method, path, headers, body) and either
sends the :class:`Reply` it gets back or serves the request as the :class:`Principal` it gets. The bench monitor
applies it in a few lines; a FastAPI/Starlette GUI calls the same ``gate`` from a middleware.

* Users and roles: ``viewer`` < ``operator`` < ``engineer`` < ``admin`` (each may what the ones before may), and
  ``resident``, who sees only their own ``site``. Users live in a JSON file (:func:`add_user` writes it) with
  scrypt password hashes, or are given in code (tests, a bench's one-off operator).
* ``POST /auth/login`` (JSON ``{"user", "password"}``) starts a session: an HttpOnly, SameSite=Strict cookie
  with a random token, valid ``session_s`` (default 8 h) and ended by ``POST /auth/logout``; ``GET /auth/me``
  tells the page who is logged in and its CSRF token. ``Authorization: Bearer <token>`` works for scripts.
* Every state-changing request (POST, PUT, PATCH, DELETE) needs the session's CSRF token in ``X-CSRF-Token``
  and, when the browser sends one, an ``Origin`` equal to the server's own; otherwise 403. A page another site
  serves cannot read the token, so it cannot stop the bench.
* :meth:`WebAuth.require` says which role a route needs; every control action is written to the audit log
  (JSON lines: time, user, role, action, result, peer), refused ones included.
* Login failures are slowed down per user (1 s after 5 failures in a row) and never say which part was wrong.
* Without a users file (:meth:`WebAuth.open_access`, a bench on its own loopback) nobody logs in: every request
  is the local ``operator``, but state-changing requests still need the server's CSRF token (from
  ``/auth/me``, which another site's page cannot read) and a matching Origin. Bearer tokens (scripts such as
  ``s4g bench stop``) are not sent by browsers on their own, so they need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from collections.abc import Callable, Mapping

ROLES = ("viewer", "operator", "engineer", "admin")
RESIDENT = "resident"
ALL_ROLES = (*ROLES, RESIDENT)
COOKIE = "s4g_session"
SESSION_S = 8 * 3600
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
MAX_LOGIN_BODY = 4096
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    return hmac.compare_digest(hash_password(password, bytes.fromhex(salt)).split("$")[2], digest)


@dataclass(frozen=True)
class User:
    name: str
    role: str
    password_hash: str
    site: str | None = None  # residents only

    def __post_init__(self) -> None:
        if self.role not in ALL_ROLES:
            raise ValueError(f"role {self.role!r}: expected one of {', '.join(ALL_ROLES)}")
        if (self.role == RESIDENT) != (self.site is not None):
            raise ValueError("a resident needs a site, and only a resident has one")


def add_user(path: str | Path, name: str, role: str, password: str, site: str | None = None) -> None:
    """Add or replace a user in a users file (created 0600)."""
    path = Path(path)
    users = json.loads(path.read_text()) if path.exists() else {}
    User(name, role, "x", site)  # validates
    users[name] = {"role": role, "password": hash_password(password), **({"site": site} if site else {})}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(users, f, indent=1)


def load_users(path: str | Path) -> list[User]:
    raw = json.loads(Path(path).read_text())
    return [User(n, u["role"], u["password"], u.get("site")) for n, u in raw.items()]


@dataclass
class Principal:
    """Who is making a request."""

    user: str
    role: str
    site: str | None = None
    csrf: str = ""

    def at_least(self, role: str) -> bool:
        if self.role == RESIDENT:
            return role in (RESIDENT, "viewer")
        return ROLES.index(self.role) >= ROLES.index(role) if role in ROLES else False

    def sees_site(self, site: str | None) -> bool:
        return self.role != RESIDENT or site == self.site


@dataclass
class Reply:
    """An answer the server sends as it is (status, JSON body, extra headers)."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def bytes(self) -> bytes:
        return json.dumps(self.body).encode()


@dataclass
class _Session:
    principal: Principal
    expires: float


class WebAuth:
    """Sessions and checks for one server. ``users``: User objects or a users file."""

    def __init__(self, users: list[User] | str | Path, *, audit_log: str | Path | None = None,
                 session_s: float = SESSION_S, clock: Callable[[], float] = time.time) -> None:
        self.users = {u.name: u for u in (load_users(users) if isinstance(users, (str, Path)) else users)}
        self.audit_path = Path(audit_log) if audit_log else None
        self.audit_entries: list[dict[str, Any]] = []
        self.session_s = session_s
        self.clock = clock
        self._sessions: dict[str, _Session] = {}
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()
        self._open: Principal | None = None
        self._bearer: set[str] = set()

    @classmethod
    def open_access(cls, role: str = "operator", **kw: Any) -> WebAuth:
        """No login: everyone who reaches the server is ``role`` (loopback benches); CSRF and Origin still hold."""
        auth = cls([], **kw)
        auth._open = Principal("local", role, csrf=secrets.token_urlsafe(24))
        return auth

    def service_token(self, name: str, role: str) -> str:
        """A bearer token for a local program (``s4g bench stop``); valid as long as the server runs."""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[token] = _Session(Principal(name, role, csrf=secrets.token_urlsafe(24)), float("inf"))
        return token

    # -- sessions --------------------------------------------------------------------------------------------
    def login(self, name: str, password: str) -> tuple[str, Principal] | None:
        user = self.users.get(name)
        # the same work whether or not the user exists: the answer time tells nothing
        ok = verify_password(password, user.password_hash if user else hash_password("x"))
        with self._lock:
            if not ok or user is None:
                self._failures[name] = self._failures.get(name, 0) + 1
                return None
            self._failures.pop(name, None)
            token = secrets.token_urlsafe(32)
            principal = Principal(user.name, user.role, user.site, csrf=secrets.token_urlsafe(24))
            self._sessions[token] = _Session(principal, self.clock() + self.session_s)
            self._sessions = {t: s for t, s in self._sessions.items() if s.expires > self.clock()}
            return token, principal

    def logout(self, token: str) -> None:
        with self._lock:
            self._sessions.pop(token, None)

    def principal(self, headers: Mapping[str, str]) -> tuple[str | None, Principal | None]:
        """The session token and its principal from the cookie or a bearer token (None: not logged in)."""
        token = None
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
            with self._lock:
                session = self._sessions.get(token)
                if session is not None and session.expires > self.clock():
                    self._bearer.add(token)
                    return token, session.principal
            return None, None
        elif "cookie" in headers:
            cookie = SimpleCookie()
            try:
                cookie.load(headers["cookie"])
            except Exception:  # a malformed cookie header is no session
                return None, None
            if COOKIE in cookie:
                token = cookie[COOKIE].value
        if not token:
            return None, self._open
        with self._lock:
            session = self._sessions.get(token)
            if session is None or session.expires <= self.clock():
                self._sessions.pop(token, None)
                return None, self._open
            return token, session.principal

    # -- the gate ------------------------------------------------------------------------------------------
    def gate(self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, host: str | tuple[str, ...],
             need: str | None, action: str | None = None, peer: str = "") -> Reply | Principal:
        """Answer the /auth/ routes; otherwise check the session, the role ``need`` (None: public), and for
        state-changing methods the Origin and the CSRF token. ``action`` names a control action for the audit
        log. ``headers`` have lower-case names; ``host`` is what the server is reached at (host:port)."""
        if path == "/auth/login" and method == "POST":
            return self._login(headers, body, host)
        if path == "/auth/logout" and method == "POST":
            token, _ = self.principal(headers)
            if token:
                self.logout(token)
            return Reply(200, {"ok": True}, {"Set-Cookie": f"{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"})
        token, who = self.principal(headers)
        if path == "/auth/me":
            if who is None:
                return Reply(401, {"error": "not logged in"})
            return Reply(200, {"user": who.user, "role": who.role, "site": who.site, "csrf": who.csrf})
        if need is None:
            return who or Principal("anonymous", "anonymous")
        if who is None:
            self.audit(action, None, "refused: not logged in", peer) if action else None
            return Reply(401, {"error": "login required"})
        if method in UNSAFE:
            problem = self._unsafe_problem(headers, host, who, bearer=token is not None and token in self._bearer)
            if problem:
                self.audit(action, who, f"refused: {problem}", peer) if action else None
                return Reply(403, {"error": problem})
        if not who.at_least(need):
            self.audit(action, who, f"refused: needs role {need}", peer) if action else None
            return Reply(403, {"error": f"this needs the {need} role (you are {who.role})"})
        return who

    def _login(self, headers: Mapping[str, str], body: bytes, host: str | tuple[str, ...]) -> Reply:
        if not _same_origin(headers, host):
            return Reply(403, {"error": "cross-origin login refused"})
        try:
            data = json.loads(body[:MAX_LOGIN_BODY] or b"{}")
            name, password = str(data["user"]), str(data["password"])
        except (ValueError, KeyError, TypeError):
            return Reply(400, {"error": 'expected JSON {"user": ..., "password": ...}'})
        if self._failures.get(name, 0) >= 5:
            time.sleep(1.0)  # slows down guessing; the server handles logins off its event loop
        got = self.login(name, password)
        if got is None:
            self.audit("login", Principal(name, "?"), "refused: wrong user or password", "")
            return Reply(401, {"error": "wrong user or password"})
        token, who = got
        self.audit("login", who, "ok", "")
        cookie = f"{COOKIE}={token}; Path=/; Max-Age={int(self.session_s)}; HttpOnly; SameSite=Strict"
        return Reply(200, {"user": who.user, "role": who.role, "site": who.site, "csrf": who.csrf,
                           "token": token}, {"Set-Cookie": cookie})

    @staticmethod
    def _unsafe_problem(headers: Mapping[str, str], host: str | tuple[str, ...], who: Principal, *,
                        bearer: bool) -> str | None:
        if not _same_origin(headers, host):
            return "cross-origin request refused"
        if not bearer and not hmac.compare_digest(headers.get("x-csrf-token", ""), who.csrf):
            return "missing or wrong CSRF token"
        return None

    # -- audit -----------------------------------------------------------------------------------------------
    def audit(self, action: str | None, who: Principal | None, result: str, peer: str) -> None:
        entry = {"t": time.time(), "user": who.user if who else None, "role": who.role if who else None,
                 "action": action, "result": result, "peer": peer}
        with self._lock:
            self.audit_entries.append(entry)
            if self.audit_path is not None:
                with self.audit_path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")


def _same_origin(headers: Mapping[str, str], host: str | tuple[str, ...]) -> bool:
    """No Origin (not a browser, or a same-origin GET) is fine; a browser's Origin must be this server (one of
    the names it is reached at)."""
    origin = headers.get("origin")
    if origin is None:
        return True
    hosts = (host,) if isinstance(host, str) else host
    return any(origin in (f"http://{h}", f"https://{h}") for h in hosts)


def server_auth(users: str | Path | None, audit_log: str | Path | None = None) -> WebAuth:
    """What a page server uses: login against ``users`` (a users file), or open access as the local operator."""
    if users:
        return WebAuth(users, audit_log=audit_log)
    return WebAuth.open_access(audit_log=audit_log)
