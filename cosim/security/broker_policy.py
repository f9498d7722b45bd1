"""Who may read and write which topics on the S4G brokers, from the topic map and the PKI's identities.

The rules follow the topic layout (:mod:`cosim.messaging.topics`) and the certificate role of the client:

| role (site S) | SMX broker | Aggregator | Data Broker | Control Broker |
|---|---|---|---|---|
| gateway | write s4g/S/smx/+/meas/#, +/native/#; read +/set/#, +/cmd/# | write s4g/S/agg/up/#, read s4g/S/agg/down/# | write s4g/S/data/# | read s4g/S/control/# |
| controller | – | read s4g/+/agg/up/#, write s4g/+/agg/down/# | read s4g/+/data/# | read+write s4g/+/control/# |
| controller of site S | read s4g/S/smx/+/meas/#, +/native/#; write +/set/#, +/cmd/# | write up, read down of S | read s4g/S/data/# | read+write s4g/S/control/# |
| reader (of site S) | read s4g/+ (S)/smx/# | read s4g/+ (S)/agg/# | read s4g/+ (S)/data/# | read s4g/+ (S)/control/# |
| cosim | read+write s4g/# of the broker's role | same | same | same |
| broker, csms, device, web, chargepoint | – | – | – | – |

So an SMX gateway publishes only its own site's measurements and reads the set-points and commands for its
devices (it cannot command a device: a family's command topics live below ``cmd/``, its telemetry below
``native/``, so an ACL without deny rules can tell them apart), only control components publish on the Control
Broker, and readers read only what their role (and site) allows. ``cosim`` is the co-simulation's bus: one
client per broker that carries every simulated component of a scenario (inside the process, the bus's own
``publish_acl`` separates them). Anything not allowed is denied (``$SYS`` included).

The same policy is written as a Mosquitto ACL (:func:`mosquitto_acl`, with ``use_identity_as_username``: the
certificate's CN is the user) and enforced by the embedded amqtt broker's plugins
(:mod:`cosim.messaging.broker_auth`), so CI without Mosquitto tests the same rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Iterable, Mapping

from cosim.messaging import topics
from devices import tls

ROOT = topics.ROOT


@dataclass(frozen=True)
class Rules:
    """The filters one identity may read (subscribe to and receive) and write (publish to)."""

    read: tuple[str, ...] = ()
    write: tuple[str, ...] = ()

    def __add__(self, other: Rules) -> Rules:
        return Rules(tuple(dict.fromkeys(self.read + other.read)), tuple(dict.fromkeys(self.write + other.write)))


def rules(role: str | None, site: str | None, broker_role: str, namespace: str = "") -> Rules:
    """What an identity of ``role`` (bound to ``site`` or not) may do on a broker of ``broker_role``."""
    seg = topics.SEGMENT[broker_role]
    p = f"{namespace}/" if namespace else ""
    s = site or "+"
    both: Callable[[str], Rules] = lambda f: Rules((p + f,), (p + f,))  # noqa: E731
    read: Callable[..., Rules] = lambda *f: Rules(tuple(p + x for x in f), ())  # noqa: E731
    write: Callable[..., Rules] = lambda *f: Rules((), tuple(p + x for x in f))  # noqa: E731
    if role == "cosim":
        return both(f"{ROOT}/+/{seg}/#")
    if role == "reader":
        return read(f"{ROOT}/{s}/{seg}/#")
    up = (f"{ROOT}/{site}/smx/+/meas/#", f"{ROOT}/{site}/smx/+/native/#")  # measurements, from the devices
    down = (f"{ROOT}/{site}/smx/+/set/#", f"{ROOT}/{site}/smx/+/cmd/#")  # set-points and commands, to them
    if role == "gateway":
        if site is None:
            return Rules()
        return {"smx": write(*up) + read(*down),
                "aggregator": write(f"{ROOT}/{site}/agg/up/#") + read(f"{ROOT}/{site}/agg/down/#"),
                "data": write(f"{ROOT}/{site}/data/#"),
                "control": read(f"{ROOT}/{site}/control/#")}[broker_role]
    if role == "controller":
        return {"smx": read(*up) + write(*down) if site else Rules(),
                "aggregator": read(f"{ROOT}/{s}/agg/up/#") + write(f"{ROOT}/{s}/agg/down/#"),
                "data": read(f"{ROOT}/{s}/data/#"),
                "control": both(f"{ROOT}/{s}/control/#")}[broker_role]
    return Rules()


@dataclass(frozen=True)
class Identity:
    name: str
    role: str
    site: str | None = None


class BrokerPolicy:
    """Rules per identity name for a broker serving ``broker_roles`` (the embedded broker serves all four)."""

    def __init__(self, identities: Iterable[Identity], broker_roles: Iterable[str] = topics.ROLES,
                 namespace: str = "") -> None:
        self.broker_roles = tuple(broker_roles)
        self.namespace = namespace
        self.identities = {i.name: i for i in identities}
        self.rules: dict[str, Rules] = {}
        for ident in self.identities.values():
            combined = Rules()
            for br in self.broker_roles:
                combined = combined + rules(ident.role, ident.site, br, namespace)
            self.rules[ident.name] = combined

    @classmethod
    def from_pki(cls, pki: str | Path, broker_roles: Iterable[str] = topics.ROLES,
                 namespace: str = "") -> BrokerPolicy:
        """Every active certificate of the PKI (revoked ones are left out; the CRL refuses them anyway)."""
        from devices.pki import load_inventory

        return cls((Identity(e.name, e.role, e.site) for e in load_inventory(pki).issued if e.active),
                   broker_roles, namespace)

    def known(self, name: str | None) -> bool:
        return name is not None and name in self.rules

    def may_publish(self, name: str | None, topic: str) -> bool:
        r = self.rules.get(name or "")
        return r is not None and any(topics.matches(f, topic) for f in r.write)

    def may_receive(self, name: str | None, topic: str) -> bool:
        r = self.rules.get(name or "")
        return r is not None and any(topics.matches(f, topic) for f in r.read)

    def may_subscribe(self, name: str | None, topic_filter: str) -> bool:
        """Only to filters entirely inside what the identity may read."""
        r = self.rules.get(name or "")
        return r is not None and any(covers(f, topic_filter) for f in r.read)


def covers(allowed: str, wanted: str) -> bool:
    """Every topic matching filter ``wanted`` also matches filter ``allowed``."""
    a, w = allowed.split("/"), wanted.split("/")
    for i, level in enumerate(a):
        if level == "#":
            return True
        if i >= len(w):
            return False
        if w[i] == "#":
            return False
        if level != "+" and level != w[i]:
            return False
    return len(a) == len(w)


def mosquitto_acl(policy: BrokerPolicy) -> str:
    """The ACL file (``acl_file``): one ``user`` block per identity; nothing else is allowed."""
    lines = ["# generated by s4g from the topic map and the PKI inventory; certificate CN = user",
             f"# broker roles: {', '.join(policy.broker_roles)}", ""]
    for name, r in sorted(policy.rules.items()):
        if not (r.read or r.write):
            continue
        lines.append(f"user {name}")
        for f in r.read:
            lines.append(f"topic {'readwrite' if f in r.write else 'read'} {f}")
        for f in r.write:
            if f not in r.read:
                lines.append(f"topic write {f}")
        lines.append("")
    return "\n".join(lines)


def mosquitto_conf(pki: str | Path, *, port: int, acl_file: str | Path, host: str = "127.0.0.1",
                   identity: str = "broker", extra: Mapping[str, str] | None = None) -> str:
    """A Mosquitto 2 configuration for one broker: a TLS listener that requires a client certificate from the
    PKI, takes the identity from it, checks the CRL, and applies the ACL file; no anonymous access."""
    files = tls.TlsFiles.from_pki(pki, identity)
    conf = {"per_listener_settings": "false", "allow_anonymous": "false", "acl_file": str(acl_file),
            "persistence": "false"}
    conf.update(extra or {})
    lines = [f"{k} {v}" for k, v in conf.items()]
    lines += [f"listener {port} {host}", f"cafile {files.ca}", f"certfile {files.cert}", f"keyfile {files.key}",
              "require_certificate true", "use_identity_as_username true", "tls_version tlsv1.2"]
    if files.crl is not None:
        lines.append(f"crlfile {files.crl}")
    return "\n".join(lines) + "\n"
