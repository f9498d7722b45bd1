"""The S4G broker roles and the MQTT topic layout (docs/messaging.md).

Four broker roles, as in the Storage4Grid architecture:

==============  ==========  ====================================================================================
role            segment     carries
==============  ==========  ====================================================================================
``smx``         ``smx``     local traffic of one site's SMX broker: device measurements to local agents
                            (``s4g/{site}/smx/{device}/meas/{quantity}``) and local set-points back
                            (``s4g/{site}/smx/{device}/set/{quantity}``); one SMX broker per site. A device
                            family's own topic names (``Family.topics``) live below
                            ``s4g/{site}/smx/{device}/native/`` (one or more levels), its own command
                            names (``Family.commands``) below ``s4g/{site}/smx/{device}/cmd/``: apart, so
                            an ACL can let a gateway write telemetry without letting it command
``aggregator``  ``agg``     site-level aggregates between a site's local agent and the aggregation layer
                            (``s4g/{site}/agg/up/{quantity}``, requests ``s4g/{site}/agg/down/{quantity}``)
``data``        ``data``    field data going up to the cloud: ``s4g/{site}/data/{device}/{quantity}``
``control``     ``control`` set-points and schedules coming down: ``s4g/{site}/control/{device}/{quantity}``,
                            schedules ``s4g/{site}/control/{device}/schedule/{quantity}``; only control
                            components may publish here
==============  ==========  ====================================================================================

A *role key* selects a broker: ``smx``, ``aggregator``, ``data``, ``control``, or ``smx:{site}`` to give one
site its own SMX broker. Path segments (site, device, quantity) are SenML-name-safe tokens, so the SenML base
name of a device, ``{site}/{device}/``, can be built from the topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import TopicError

ROOT = "s4g"
ROLES: tuple[str, ...] = ("smx", "aggregator", "data", "control")
SEGMENT: dict[str, str] = {"smx": "smx", "aggregator": "agg", "data": "data", "control": "control"}
ROLE_OF_SEGMENT: dict[str, str] = {v: k for k, v in SEGMENT.items()}
MAX_TOPIC_CHARS = 512  # the layout's topics are far shorter; MQTT would allow 65535 bytes

_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*\Z")
_ROLE_KEY_RE = re.compile(r"(smx|aggregator|data|control)(?::([A-Za-z0-9][A-Za-z0-9_.:\-]*))?\Z")


def check_token(value: str, what: str = "segment") -> str:
    """A site, device or quantity name: letters, digits, ``_ . : -``, starting with a letter or digit."""
    if not isinstance(value, str) or not _TOKEN_RE.match(value):
        raise TopicError(f"invalid {what} {value!r}: use letters, digits, '_', '.', ':', '-' "
                         "and start with a letter or digit")
    return value


# ------------------------------------------------------------------------------------------ topic builders
def data_topic(site: str, device: str, quantity: str) -> str:
    """Field data up (Data Broker): ``s4g/{site}/data/{device}/{quantity}``."""
    return (f"{ROOT}/{check_token(site, 'site')}/data/{check_token(device, 'device')}"
            f"/{check_token(quantity, 'quantity')}")


def control_topic(site: str, device: str, quantity: str) -> str:
    """A set-point down (Control Broker): ``s4g/{site}/control/{device}/{quantity}``."""
    return (f"{ROOT}/{check_token(site, 'site')}/control/{check_token(device, 'device')}/"
            f"{check_token(quantity, 'quantity')}")


def schedule_topic(site: str, device: str, quantity: str = "p_w") -> str:
    """A schedule down (Control Broker), e.g. GESSCon's 24 hourly ESS set-points in one SenML pack."""
    return (f"{ROOT}/{check_token(site, 'site')}/control/{check_token(device, 'device')}/schedule/"
            f"{check_token(quantity, 'quantity')}")


def smx_meas_topic(site: str, device: str, quantity: str) -> str:
    """A device measurement on its site's SMX broker: ``s4g/{site}/smx/{device}/meas/{quantity}``."""
    return (f"{ROOT}/{check_token(site, 'site')}/smx/{check_token(device, 'device')}/meas/"
            f"{check_token(quantity, 'quantity')}")


def smx_set_topic(site: str, device: str, quantity: str) -> str:
    """A local set-point on the site's SMX broker: ``s4g/{site}/smx/{device}/set/{quantity}``."""
    return (f"{ROOT}/{check_token(site, 'site')}/smx/{check_token(device, 'device')}/set/"
            f"{check_token(quantity, 'quantity')}")


def smx_native_topic(site: str, device: str, name: str) -> str:
    """A device's telemetry under its own topic name (e.g. ``EnergyRouterInverter/MMXN1.Watt.instMag.f``, one or
    more levels) on its site's SMX broker: ``s4g/{site}/smx/{device}/native/{name}``."""
    levels = [check_token(level, "topic name level") for level in name.split("/")]
    return f"{ROOT}/{check_token(site, 'site')}/smx/{check_token(device, 'device')}/native/{'/'.join(levels)}"


def smx_cmd_topic(site: str, device: str, name: str) -> str:
    """A command to a device under its own command name (e.g. ``EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f``)
    on its site's SMX broker: ``s4g/{site}/smx/{device}/cmd/{name}``; only control components publish here."""
    levels = [check_token(level, "topic name level") for level in name.split("/")]
    return f"{ROOT}/{check_token(site, 'site')}/smx/{check_token(device, 'device')}/cmd/{'/'.join(levels)}"


def smx_cmd_filter(site: str, device: str) -> str:
    """Every command topic of one device: ``s4g/{site}/smx/{device}/cmd/#``."""
    return f"{ROOT}/{check_token(site, 'site')}/smx/{check_token(device, 'device')}/cmd/#"


def agg_up_topic(site: str, quantity: str) -> str:
    """A site aggregate to the aggregator: ``s4g/{site}/agg/up/{quantity}``."""
    return f"{ROOT}/{check_token(site, 'site')}/agg/up/{check_token(quantity, 'quantity')}"


def agg_down_topic(site: str, quantity: str) -> str:
    """A request from the aggregator to a site: ``s4g/{site}/agg/down/{quantity}``."""
    return f"{ROOT}/{check_token(site, 'site')}/agg/down/{check_token(quantity, 'quantity')}"


# ------------------------------------------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class TopicInfo:
    """A parsed S4G topic. ``device`` is None for aggregator topics; ``kind`` is meas/set/schedule/up/down or
    None (plain data or control topic)."""

    topic: str
    site: str
    role: str
    device: str | None
    kind: str | None
    quantity: str

    @property
    def base_name(self) -> str:
        """SenML base name of the records on this topic: ``{site}/{device}/`` (``{site}/`` without a device)."""
        return f"{self.site}/{self.device}/" if self.device else f"{self.site}/"


def parse_topic(topic: str) -> TopicInfo:
    """Split an S4G topic into its parts; raise ``TopicError`` for anything outside the layout."""
    if not isinstance(topic, str):
        raise TopicError("a topic must be a non-empty string")
    if len(topic) > MAX_TOPIC_CHARS:  # before the cache: a flood of long foreign topics must not fill memory
        raise TopicError(f"topic longer than {MAX_TOPIC_CHARS} characters ({topic[:60]!r}...)")
    return _parse_topic(topic)


@lru_cache(maxsize=8192)
def _parse_topic(topic: str) -> TopicInfo:
    validate_topic(topic)
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != ROOT:
        raise TopicError(f"topic {topic!r} is not in the S4G layout 's4g/{{site}}/{{role}}/...'")
    site, seg = parts[1], parts[2]
    role = ROLE_OF_SEGMENT.get(seg)
    if role is None:
        raise TopicError(f"topic {topic!r}: unknown role segment {seg!r} (expected one of {sorted(ROLE_OF_SEGMENT)})")
    rest = parts[3:]
    if role == "smx" and len(rest) >= 3 and rest[1] in ("native", "cmd"):  # a family's own names: the levels below
        for level in rest[2:]:
            check_token(level, "topic name level")
        return _info(topic, site, role, rest[0], rest[1], "/".join(rest[2:]), check_quantity=False)
    shapes = {
        "data": ((2, None),),
        "control": ((2, None), (3, "schedule")),
        "smx": ((3, "meas"), (3, "set")),
        "aggregator": ((2, "up"), (2, "down")),
    }[role]
    for length, kind in shapes:
        if len(rest) != length:
            continue
        if role == "aggregator":
            if rest[0] == kind:
                return _info(topic, site, role, None, kind, rest[1])
        elif kind is None:
            if role == "control" and rest[0] == "schedule":
                continue
            return _info(topic, site, role, rest[0], None, rest[1])
        elif rest[1] == kind:
            return _info(topic, site, role, rest[0], kind, rest[2])
    raise TopicError(f"topic {topic!r} does not fit the {role} layout ({_layout_hint(role)})")


def _info(topic: str, site: str, role: str, device: str | None, kind: str | None, quantity: str,
          check_quantity: bool = True) -> TopicInfo:
    check_token(site, "site")
    if device is not None:
        check_token(device, "device")
    if check_quantity:
        check_token(quantity, "quantity")
    return TopicInfo(topic, site, role, device, kind, quantity)


def _layout_hint(role: str) -> str:
    return {
        "data": "s4g/{site}/data/{device}/{quantity}",
        "control": "s4g/{site}/control/{device}/{quantity} or s4g/{site}/control/{device}/schedule/{quantity}",
        "smx": "s4g/{site}/smx/{device}/meas|set/{quantity} or s4g/{site}/smx/{device}/native|cmd/{name...}",
        "aggregator": "s4g/{site}/agg/up|down/{quantity}",
    }[role]


def role_of(topic: str) -> str:
    """The base role a topic belongs to (``data`` for ``s4g/fur/data/h1/p_w``)."""
    return parse_topic(topic).role


# ---------------------------------------------------------------------------------------------- role keys
def parse_role_key(key: str) -> tuple[str, str | None]:
    """``"smx:h1"`` -> ("smx", "h1"); ``"data"`` -> ("data", None). Only SMX may be split by site."""
    if not isinstance(key, str):
        raise TopicError(f"invalid role {key!r}: expected one of {', '.join(ROLES)} or 'smx:<site>'")
    return _parse_role_key(key)


@lru_cache(maxsize=4096)
def _parse_role_key(key: str) -> tuple[str, str | None]:
    m = _ROLE_KEY_RE.match(key)
    if m is None:
        raise TopicError(f"invalid role {key!r}: expected one of {', '.join(ROLES)} or 'smx:<site>'")
    role, site = m.group(1), m.group(2)
    if site is not None and role != "smx":
        raise TopicError(f"invalid role {key!r}: only the SMX role has one broker per site ('smx:<site>')")
    return role, site


def role_filter(key: str) -> str:
    """The MQTT filter covering every topic of a role key (what its broker client subscribes to)."""
    role, site = parse_role_key(key)
    return f"{ROOT}/{site or '+'}/{SEGMENT[role]}/#"


# ------------------------------------------------------------------------------------------ MQTT matching
def validate_topic(topic: str) -> str:
    """A topic name one may publish to: non-empty, no wildcards, no NUL, at most 65535 UTF-8 bytes."""
    if not isinstance(topic, str) or not topic:
        raise TopicError("a topic must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise TopicError(f"topic {topic!r} contains a wildcard; wildcards are for subscriptions only")
    if "\x00" in topic or len(topic.encode("utf-8")) > 65535:
        raise TopicError(f"topic {topic!r} contains NUL or is too long")
    return topic


def validate_filter(topic_filter: str) -> str:
    """An MQTT topic filter: ``+`` fills a whole level, ``#`` only as the last level."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise TopicError("a topic filter must be a non-empty string")
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise TopicError(f"filter {topic_filter!r}: '#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise TopicError(f"filter {topic_filter!r}: '+' must be a whole level")
    if "\x00" in topic_filter:
        raise TopicError(f"filter {topic_filter!r} contains NUL")
    return topic_filter


def matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 §4.7 matching (wildcards do not match topics starting with ``$`` at the first level)."""
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    if topic.startswith("$") and f_levels[0] in ("+", "#"):
        return False
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
