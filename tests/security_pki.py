"""One PKI for the security tests: the identities every link needs, a revoked and an expired client, and a
second PKI whose certificates no server trusts ("wrong CA"). Session-scoped: keys are made once."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from devices import pki

SITE = "fur"
IDENTITIES = [
    ("broker", "broker", None), ("csms", "csms", None), ("device", "device", None), ("web", "web", None),
    (f"gw-{SITE}", "gateway", SITE), ("gw-skive", "gateway", "skive"), ("gesscon", "controller", None),
    (f"lessag-{SITE}", "controller", SITE),
    ("dwh", "reader", None), ("CP_1", "chargepoint", None), ("CP_2", "chargepoint", None), ("cosim", "cosim", None),
    ("gw-revoked", "gateway", SITE), ("CP_revoked", "chargepoint", None), ("ctl-revoked", "controller", None),
]


@dataclass
class Pkis:
    dir: Path        # the framework's PKI
    other: Path      # a PKI nobody trusts (same names)


def build(root: Path) -> Pkis:
    main, other = root / "pki", root / "other-pki"
    for d in (main, other):
        pki.init(d)
        for name, role, site in IDENTITIES:
            pki.issue(d, name, role, site=site)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    pki.issue(main, "gw-expired", "gateway", site=SITE, now=past, days=30)
    pki.issue(main, "CP_expired", "chargepoint", now=past, days=30)
    for name in ("gw-revoked", "CP_revoked", "ctl-revoked"):
        pki.revoke(main, name, reason="key_compromise")
    return Pkis(main, other)


@pytest.fixture(scope="session")
def pkis(tmp_path_factory) -> Pkis:
    return build(tmp_path_factory.mktemp("security"))


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, hostname: str = "localhost"):
    """A TLS handshake over a socket pair (no port); (server-side SSLSocket or the server's error, client error)."""
    a, b = socket.socketpair()
    result: dict = {}

    def serve() -> None:
        try:
            s = server.wrap_socket(a, server_side=True)
            result["server"] = s
            s.recv(1)  # TLS 1.3: the client certificate is checked after the client's Finished
        except (ssl.SSLError, OSError) as exc:
            result["server"] = exc

    t = threading.Thread(target=serve)
    t.start()
    client_error = None
    try:
        c = client.wrap_socket(b, server_hostname=hostname)
        c.sendall(b"x")
    except (ssl.SSLError, OSError) as exc:
        client_error = exc
    t.join(10)
    a.close()
    b.close()
    return result.get("server"), client_error
