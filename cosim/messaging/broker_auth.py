"""The embedded broker's security: identity from the client certificate and the topic policy, as amqtt plugins.

Mosquitto does the same with ``require_certificate``, ``use_identity_as_username``, ``crlfile`` and an ACL
file (:mod:`cosim.security.broker_policy` writes both), so a test without Mosquitto checks the same rules:

* :class:`CertificateAuthPlugin` admits a client only with a verified certificate (the TLS context requires one
  and checks the CRL) whose name the policy knows, and makes that name the session's user name, whatever the
  client claimed in CONNECT (``use_identity_as_username``);
* :class:`TopicPolicyPlugin` lets that user publish, subscribe and receive only what the policy allows. A
  refused publication is dropped (amqtt speaks MQTT 3.1.1, which has no negative PUBACK), a refused
  subscription gets SUBACK 0x80.

amqtt passes a plugin only a dataclass of plain values, so the policy is registered here under a key
(:func:`register`) that the broker's configuration names. Refusals are counted in :data:`COUNTS` by key.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin

from devices.tls import peer_identity

_POLICIES: dict[str, Any] = {}
COUNTS: dict[str, Counter[str]] = {}
_keys = itertools.count(1)


def register(policy: Any) -> str:
    """Make ``policy`` (a :class:`cosim.security.broker_policy.BrokerPolicy`) available to the plugins."""
    key = f"policy-{next(_keys)}"
    _POLICIES[key] = policy
    COUNTS[key] = Counter()
    return key


def unregister(key: str) -> None:
    _POLICIES.pop(key, None)


class CertificateAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    @dataclass
    class Config:
        policy: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        policy = _POLICIES.get(self.config.policy)
        counts = COUNTS.setdefault(self.config.policy, Counter())
        ident = peer_identity(getattr(session, "ssl_object", None))
        if policy is None or ident is None:
            counts["refused_no_certificate"] += 1
            return False
        if not policy.known(ident.name):
            counts["refused_unknown_identity"] += 1
            return False
        session.username = ident.name  # the certificate says who it is, not the CONNECT packet
        counts["connected"] += 1
        return True


class TopicPolicyPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type information
    @dataclass
    class Config:
        policy: str = ""

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Action | None = None) -> bool:
        policy = _POLICIES.get(self.config.policy)
        if policy is None or session is None or topic is None:
            return False
        name = session.username
        if action == Action.PUBLISH:
            ok = policy.may_publish(name, topic)
        elif action == Action.SUBSCRIBE:
            ok = policy.may_subscribe(name, topic)
        elif action == Action.RECEIVE:
            ok = policy.may_receive(name, topic)
        else:
            ok = False
        if not ok:
            COUNTS.setdefault(self.config.policy, Counter())[f"refused_{getattr(action, 'value', action)}"] += 1
        return cast(bool, ok)
