"""How many link simulators carry a world's broker routes: as few as the data flow allows.

mosaik's scheduler pays per simulator and step (after every step it advances the progress of every simulator),
so each link simulator costs the whole world time even when it has nothing to publish. Routes are first grouped
by (role, source simulator, destination simulator) -- that grouping never closes a cycle mosaik would refuse --
and then groups of the same role that step at the same rate are merged, one after the other, whenever the merged
link closes no same-time cycle: no path of connections without a time shift leads from what the link feeds back
to what feeds it.

A link simulator is a mosaik device only: within a merged link each original group still publishes its own packs
and numbers its routes as before (``Route.pack``), so the messages on the wire are the same as with one link per
group. What changes is when a step's messages reach the DWH (all of a step's data in that step) and how many
subscriptions the links hold (the ``delivered`` counter).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class LinkGroup:
    """Routes one link simulator would carry: who feeds it, whom it feeds without a time shift."""

    key: tuple[str, int]  # (role, step): only groups with equal keys merge
    members: list[Any] = field(default_factory=list)  # the original groups' keys, in order
    sources: set[str] = field(default_factory=set)  # simulator ids whose outputs the routes publish
    same_time: set[str] = field(default_factory=set)  # destinations fed without a time shift


def merge_groups(groups: Iterable[LinkGroup], edges: Mapping[str, Iterable[str]]) -> list[LinkGroup]:
    """Merge groups with equal keys as long as no same-time cycle runs through a merged link.

    ``edges``: the world's other connections without a time shift, simulator id -> simulator ids it feeds.
    Groups keep their order (the first group of a merge gives the merged link its place)."""
    merged: list[LinkGroup] = []
    for group in groups:
        for i, other in enumerate(merged):
            if other.key != group.key:
                continue
            candidate = LinkGroup(other.key, other.members + group.members, other.sources | group.sources,
                                  other.same_time | group.same_time)
            if not _closes_cycle(candidate, [g for j, g in enumerate(merged) if j != i], edges):
                merged[i] = candidate
                break
        else:
            merged.append(group)
    return merged


def _closes_cycle(link: LinkGroup, others: list[LinkGroup], edges: Mapping[str, Iterable[str]]) -> bool:
    """Whether a same-time path leads from ``link``'s destinations back to one of its sources (through the
    world's connections and the other links)."""
    feeds: dict[str, set[str]] = {}  # node -> nodes it feeds at the same time; links are nodes "#<index>"
    for src, dsts in edges.items():
        feeds.setdefault(src, set()).update(dsts)
    for n, other in enumerate(others):
        node = f"#{n}"
        for src in other.sources:
            feeds.setdefault(src, set()).add(node)
        feeds.setdefault(node, set()).update(other.same_time)
    seen: set[str] = set()
    stack = list(link.same_time)
    while stack:
        node = stack.pop()
        if node in link.sources:
            return True
        if node not in seen:
            seen.add(node)
            stack.extend(feeds.get(node, ()))
    return False
