"""The ``messaging:`` section of a scenario (``MessagingSpec``) and broker addresses.

    messaging:
      default: embedded                    # broker of every role not listed below
      roles:
        smx: embedded
        "smx:skive": mosquitto://127.0.0.1:1883
        data: mosquitto://127.0.0.1:1883
        control: direct
      faults:
        data: {delay: 5s, loss: 0.02}
        control: {delay: {dist: uniform, low: 0, high: 60}, loss: 0.1, topic: "s4g/+/control/+/schedule/#"}
      publish_acl: {control: [controller]}
      qos: 1
      timeout_s: 10
      namespace: ""

Broker addresses: ``direct`` (no broker, in memory), ``embedded`` (the broker the bus starts),
``mosquitto://[user[:password]@]host[:port]`` or ``mqtt://...`` (any MQTT 3.1.1 broker, port 1883 by default),
``mqtts://...`` (TLS, port 8883 by default). Query parameters: ``ca=PATH`` (CA bundle), ``certfile=PATH`` and
``keyfile=PATH`` (client certificate), ``insecure=1`` (no host name check), ``v=5`` (MQTT 5: the broker's refusal
of a publish is reported instead of silently dropped), ``password_env=VAR`` (read the password from the
environment instead of the scenario file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Annotated, Any, Literal, cast
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from cosim.durations import seconds

from .errors import TopicError
from .topics import ROLES, parse_role_key, validate_filter

# the framework's one duration grammar (cosim/durations.py): simulated seconds >= 0, e.g. 5, "250ms", "2min"
parse_seconds = seconds

Duration = Annotated[float, BeforeValidator(parse_seconds)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ broker address
@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker address. ``kind`` is ``direct``, ``embedded`` or ``mqtt`` (a real broker)."""

    kind: Literal["direct", "embedded", "mqtt"]
    host: str = ""
    port: int = 0
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    crl: str | None = None  # the broker's certificate is checked against this CRL
    insecure: bool = False
    protocol: int = 3  # 3 = MQTT 3.1.1, 5 = MQTT 5

    @property
    def label(self) -> str:
        """The address without credentials (for logs and error messages)."""
        if self.kind != "mqtt":
            return self.kind
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker_url(url: str) -> BrokerAddress:
    """``direct`` | ``embedded`` | ``mosquitto://`` / ``mqtt://`` / ``mqtts://[user[:pw]@]host[:port][?...]``."""
    if not isinstance(url, str):
        raise ValueError("a broker address is a string: direct, embedded, mosquitto://host:port or mqtts://host:port")
    text = url.strip()
    if text in ("direct", "embedded"):
        return BrokerAddress(kind=text)  # type: ignore[arg-type]
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme not in ("mosquitto", "mqtt", "mqtts", "mosquitto+tls"):
        raise ValueError(f"unknown broker address {url!r}: expected direct, embedded, mosquitto://host:port, "
                         "mqtt://host:port or mqtts://host:port")
    tls = scheme in ("mqtts", "mosquitto+tls")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker address {url!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"broker address {url!r} has no host")
    if parts.path not in ("", "/"):
        raise ValueError(f"broker address {url!r}: unexpected path {parts.path!r}")
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    known = {"ca", "certfile", "keyfile", "crl", "pki", "identity", "insecure", "v", "password_env"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise ValueError(f"broker address {url!r}: unknown parameter(s) {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(known))})")
    password = unquote(parts.password) if parts.password is not None else None
    if "password_env" in query:
        var = query["password_env"]
        if var not in os.environ:
            raise ValueError(f"broker address {url!r}: environment variable {var!r} is not set")
        password = os.environ[var]
    version = query.get("v", "3") or "3"
    if version not in ("3", "4", "5"):
        raise ValueError(f"broker address {url!r}: v must be 3 (MQTT 3.1.1) or 5 (MQTT 5)")
    if "certfile" in query and "keyfile" not in query:
        raise ValueError(f"broker address {url!r}: certfile needs keyfile")
    if "pki" in query:  # ca, certificate of identity=, key and CRL from a PKI directory (s4g pki)
        from devices.tls import TlsConfigError, TlsFiles

        try:
            files = TlsFiles.from_pki(query["pki"], query.get("identity") or None)
        except TlsConfigError as exc:
            raise ValueError(f"broker address {url!r}: {exc}") from None
        for key, value in (("ca", files.ca), ("certfile", files.cert), ("keyfile", files.key), ("crl", files.crl)):
            if value is not None:
                query.setdefault(key, str(value))
    elif "identity" in query:
        raise ValueError(f"broker address {url!r}: identity= needs pki=DIR")
    return BrokerAddress(
        kind="mqtt", host=parts.hostname, port=port or (8883 if tls else 1883),
        tls=tls or "ca" in query or "crl" in query,
        username=unquote(parts.username) if parts.username else None, password=password,
        ca=query.get("ca") or None, certfile=query.get("certfile") or None, keyfile=query.get("keyfile") or None,
        crl=query.get("crl") or None,
        insecure=query.get("insecure", "0").lower() in ("1", "true", "yes"),
        protocol=5 if version == "5" else 3,
    )


def _check_url(value: Any) -> str:
    parse_broker_url(value)
    return cast(str, value.strip())


BrokerURL = Annotated[str, BeforeValidator(_check_url)]


def _check_role_key(value: Any) -> str:
    try:
        parse_role_key(value)
    except TopicError as exc:
        raise ValueError(str(exc)) from None
    return cast(str, value)


RoleKey = Annotated[str, BeforeValidator(_check_role_key)]


# ------------------------------------------------------------------------------------------------- faults
class DelaySpec(_Strict):
    """A message delay in simulated seconds: fixed, or drawn per message from a seeded distribution.

    ``fixed`` (``s``), ``uniform`` (``low``..``high``), ``exponential`` (``mean``), ``normal`` (``mean``,
    ``std``, negative draws become 0). ``max`` caps every draw.
    """

    dist: Literal["fixed", "uniform", "exponential", "normal"] = "fixed"
    s: Duration = 0.0
    low: Duration = 0.0
    high: Duration = 0.0
    mean: Duration = 0.0
    std: Duration = 0.0
    max: Duration | None = None

    @model_validator(mode="after")
    def _params(self) -> DelaySpec:
        if self.dist == "uniform" and self.high < self.low:
            raise ValueError("uniform delay needs low <= high")
        if self.dist == "exponential" and self.mean <= 0:
            raise ValueError("exponential delay needs mean > 0")
        return self

    @property
    def is_zero(self) -> bool:
        return self.dist == "fixed" and self.s == 0


def _delay(value: Any) -> Any:
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return {"dist": "fixed", "s": value}
    return value


class FaultSpec(_Strict):
    """Faults injected on one role: delay, loss and corruption (probabilities), on the topics matching ``topic``."""

    delay: Annotated[DelaySpec, BeforeValidator(_delay)] = DelaySpec()
    loss: float = Field(0.0, ge=0.0, le=1.0, description="probability that a message is lost")
    corrupt: float = Field(0.0, ge=0.0, le=1.0, description="probability that a payload is truncated on the wire")
    topic: str = Field("#", description="MQTT filter of the topics the faults apply to")

    @field_validator("topic")
    @classmethod
    def _filter(cls, v: str) -> str:
        try:
            return validate_filter(v)
        except TopicError as exc:
            raise ValueError(str(exc)) from None

    @property
    def active(self) -> bool:
        return not self.delay.is_zero or self.loss > 0 or self.corrupt > 0


# ------------------------------------------------------------------------------------------------ the spec
class MessagingSpec(_Strict):
    """Which broker each S4G role uses, faults per role, and who may publish where."""

    default: BrokerURL = Field("embedded", description="broker of every role not listed in 'roles'")
    roles: dict[RoleKey, BrokerURL] = Field(default_factory=dict,
                                            description="role (smx, aggregator, data, control, smx:<site>) -> broker")
    faults: dict[RoleKey, FaultSpec] = Field(default_factory=dict, description="faults per role")
    publish_acl: dict[RoleKey, list[str]] = Field(
        default_factory=lambda: {"control": ["controller"]},
        description="role -> sender kinds or sender name patterns allowed to publish (roles not listed: anyone)")
    qos: Literal[0, 1, 2] = Field(1, description="MQTT QoS of the bus's publications")
    subscribe_qos: Literal[0, 1, 2] | None = Field(None, description="QoS of the bus's subscriptions (default: qos)")
    timeout_s: float = Field(10.0, gt=0, description="wall-clock seconds to wait for a broker round trip")
    namespace: str = Field("", description="topic prefix on the wire (isolates runs sharing one real broker)")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        v = v.strip("/")
        if v and ("+" in v or "#" in v or v.startswith("$")):
            raise ValueError("namespace must not contain wildcards or start with '$'")
        return v

    @field_validator("publish_acl")
    @classmethod
    def _acl(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for key in v:
            if ":" in key:
                raise ValueError(f"publish_acl is per role ({', '.join(ROLES)}), not per site: {key!r}")
        return v

    def broker_for(self, role_key: str) -> str:
        """The broker address of a role key (``smx:h1`` falls back to ``smx``, then to ``default``)."""
        if role_key in self.roles:
            return self.roles[role_key]
        base, _ = parse_role_key(role_key)
        return self.roles.get(base, self.default)

    def faults_for(self, role_key: str) -> FaultSpec | None:
        if role_key in self.faults:
            return self.faults[role_key]
        base, _ = parse_role_key(role_key)
        return self.faults.get(base)
