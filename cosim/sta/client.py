"""Reading a SensorThings server as GESSCon did: which broker topics carry a site's field data and set-points.

Every Thing of a site carries in ``properties`` its Data-Broker and Control-Broker addresses and topics
(:mod:`cosim.sta.store`); ``site_topics(base_url, site)`` collects them. Plain ``urllib``: no dependency.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from devices.wire_json import loads


@dataclass
class SiteTopics:
    site: str
    data: list[str] = field(default_factory=list)  # Data-Broker topic filters of the site's Things
    control: list[str] = field(default_factory=list)  # Control-Broker topic filters
    schedules: list[str] = field(default_factory=list)  # schedule topics (GESSCon's day-ahead packs)
    brokers: dict[str, str] = field(default_factory=dict)  # role -> broker address
    things: dict[str, int] = field(default_factory=dict)  # device -> Thing id


def http_get_json(url: str, timeout_s: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        return loads(resp.read(), max_bytes=64 << 20, max_depth=16)


def site_topics(base_url: str, site: str, *, get: Callable[[str], Any] = http_get_json) -> SiteTopics:
    """The topics of every Thing whose ``properties/site`` is ``site`` (all pages)."""
    literal = site.replace("'", "''")
    flt = quote(f"properties/site eq '{literal}'", safe="")
    url: str | None = f"{base_url.rstrip('/')}/Things?$filter={flt}&$orderby=name&$top=1000"
    out = SiteTopics(site)
    while url:
        body = get(url)
        for thing in body.get("value", []):
            props = thing.get("properties") or {}
            data, control = props.get("dataBroker") or {}, props.get("controlBroker") or {}
            if data.get("topic"):
                out.data.append(data["topic"])
            if control.get("topic"):
                out.control.append(control["topic"])
            if control.get("scheduleTopic"):
                out.schedules.append(control["scheduleTopic"])
            for role, info in (("data", data), ("control", control)):
                if info.get("url"):
                    out.brokers.setdefault(role, info["url"])
            if "device" in props:
                out.things[props["device"]] = thing["@iot.id"]
        url = body.get("@iot.nextLink")
    return out
