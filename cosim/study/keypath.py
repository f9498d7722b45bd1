"""Key paths into a scenario document: ``devices[id=libal].config.battery.capacity_wh``.

A key path is a dot-separated list of mapping keys, each optionally followed by selectors on a list:
``[3]`` (index), ``[*]`` (every element), ``[id=libal]`` (every element whose ``id`` is ``libal``; any key works,
e.g. ``[family=pv_battery]``). :func:`parse` checks the grammar, :func:`targets` finds what a path points at in a
document, :func:`assign` writes a value there. A selector that matches nothing is an error, never a silent no-op:
a typo in a device id must not give a study whose axis changes nothing.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

_KEY = r"[A-Za-z_][A-Za-z0-9_\-]*"
_SEGMENT = re.compile(rf"^(?P<key>{_KEY})(?P<sel>(\[[^\[\]]+\])*)$")
_SELECTOR = re.compile(r"\[([^\[\]]+)\]")


class KeyPathError(ValueError):
    """A key path that is malformed or does not match the document; ``str()`` says which part and why."""


@dataclass(frozen=True)
class Step:
    key: str | None = None  # a mapping key
    index: int | None = None  # a list index
    every: bool = False  # [*]
    match: tuple[str, str] | None = None  # [field=value]

    def __str__(self) -> str:
        if self.key is not None:
            return self.key
        if self.index is not None:
            return f"[{self.index}]"
        if self.every:
            return "[*]"
        assert self.match is not None  # a step is a key, an index, [*] or [field=value]
        return f"[{self.match[0]}={self.match[1]}]"


def parse(path: str) -> tuple[Step, ...]:
    """The steps of ``path``; KeyPathError naming the bad segment otherwise."""
    if not isinstance(path, str) or not path.strip():
        raise KeyPathError("expected a key path such as devices[id=libal].config.battery.capacity_wh")
    steps: list[Step] = []
    for segment in _split_dots(path):
        m = _SEGMENT.match(segment)
        if not m:
            raise KeyPathError(f"segment {segment!r} of {path!r}: expected key, key[N], key[*] or key[field=value]")
        steps.append(Step(key=m["key"]))
        for sel in _SELECTOR.findall(m["sel"]):
            sel = sel.strip()
            if sel == "*":
                steps.append(Step(every=True))
            elif re.fullmatch(r"-?\d+", sel):
                steps.append(Step(index=int(sel)))
            elif "=" in sel:
                field, value = (s.strip() for s in sel.split("=", 1))
                if not re.fullmatch(_KEY, field) or not value:
                    raise KeyPathError(f"selector [{sel}] of {path!r}: expected [field=value]")
                steps.append(Step(match=(field, value)))
            else:
                raise KeyPathError(f"selector [{sel}] of {path!r}: expected [N], [*] or [field=value]")
    return tuple(steps)


def _split_dots(path: str) -> list[str]:
    """Split on dots outside brackets (a selector value may contain dots: ``sites[id=LV4.101 Load 1]``)."""
    parts, depth, cur = [], 0, ""
    for ch in path:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "." and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def targets(doc: Any, path: str, *, create: bool = True) -> list[tuple[Any, Any, tuple[str | int, ...]]]:
    """Every (container, key, location) the path points at. Missing mapping keys are allowed at the last step
    (and created as empty mappings on the way when ``create``), list selectors must match."""
    steps = parse(path)
    found: list[tuple[Any, Any, tuple[str | int, ...]]] = [(None, None, ())]
    current: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    for n, step in enumerate(steps):
        last = n == len(steps) - 1
        nxt: list[tuple[Any, tuple[str | int, ...]]] = []
        found = []
        for node, loc in current:
            where = _render(loc) or "<top>"
            if step.key is not None:
                if not isinstance(node, dict):
                    raise KeyPathError(f"{path}: {where} is not a mapping, cannot take key {step.key!r}")
                if step.key not in node and not last:
                    if not create:
                        raise KeyPathError(f"{path}: {where} has no key {step.key!r}")
                    node[step.key] = {}
                found.append((node, step.key, loc + (step.key,)))
                if step.key in node:
                    nxt.append((node[step.key], loc + (step.key,)))
                continue
            if not isinstance(node, list):
                raise KeyPathError(f"{path}: {where} is not a list, cannot select {step}")
            if step.index is not None:
                if not -len(node) <= step.index < len(node):
                    raise KeyPathError(f"{path}: {where} has {len(node)} element(s), no index {step.index}")
                picks = [step.index % len(node)]
            elif step.every:
                picks = list(range(len(node)))
            else:
                assert step.match is not None  # a step is a key, an index, [*] or [field=value]
                field, value = step.match
                picks = [i for i, item in enumerate(node) if isinstance(item, dict) and str(item.get(field)) == value]
            if not picks:
                raise KeyPathError(f"{path}: no element of {where} matches {step}")
            for i in picks:
                found.append((node, i, loc + (i,)))
                nxt.append((node[i], loc + (i,)))
        current = nxt
    return found


def _render(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def assign(doc: dict[str, Any], path: str, value: Any) -> list[tuple[str | int, ...]]:
    """Write ``value`` at every place ``path`` points at (in place); the locations written.

    ``None`` on list elements (``devices[id=libal]: null``) removes them: a variant without that device.
    """
    locs = []
    found = targets(doc, path)
    removals = [(c, k) for c, k, _ in found if value is None and isinstance(c, list)]
    for container, key in sorted(removals, key=lambda ck: ck[1], reverse=True):
        del container[key]
    for container, key, loc in found:
        if not (value is None and isinstance(container, list)):
            container[key] = copy.deepcopy(value)
        locs.append(loc)
    return locs


def patched(doc: dict[str, Any], assignments: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of ``doc`` with every ``{path: value}`` written, in order."""
    out = copy.deepcopy(doc)
    for path, value in assignments.items():
        assign(out, path, value)
    return out


__all__ = ["KeyPathError", "Step", "assign", "parse", "patched", "targets"]
