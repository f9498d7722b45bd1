"""Query options of a SensorThings request: ``$filter $select $expand $orderby $top $skip $count`` (OGC 18-088 §9.3).

Values are decoded as RFC 3986 percent-encoding; a ``+`` is a space (as HTML forms and many HTTP libraries send
it) except in a time-zone offset such as ``+02:00``. Nested ``$expand`` options are separated by ``;`` inside
parentheses: ``$expand=Datastreams($select=name;$expand=Observations($top=1;$orderby=phenomenonTime desc))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from .filter import QueryError, parse
from .schema import SETS, EntitySet

DEFAULT_TOP = 100
MAX_TOP = 10_000
MAX_EXPAND_DEPTH = 6
KNOWN = ("$filter", "$select", "$expand", "$orderby", "$top", "$skip", "$count", "$resultFormat")


@dataclass
class Options:
    select: list[str] | None = None
    expand: list[Expand] = field(default_factory=list)
    filter: Any = None
    orderby: list[tuple[Any, bool]] = field(default_factory=list)  # (expression, descending)
    top: int = DEFAULT_TOP
    skip: int = 0
    count: bool = False
    raw: dict[str, str] = field(default_factory=dict)  # the options as given (for @iot.nextLink)


@dataclass
class Expand:
    nav: str
    options: Options


_PLUS = re.compile(r"\+(?!\d{2}:\d{2})")


def split_query(query: str) -> list[tuple[str, str]]:
    out = []
    for part in query.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        out.append((unquote(_PLUS.sub(" ", key)), unquote(_PLUS.sub(" ", value))))
    return out


def split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside parentheses and quoted strings."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise QueryError(f"unbalanced ')' in {text!r}")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth or quoted:
        raise QueryError(f"unbalanced parentheses or quotes in {text!r}")
    parts.append(text[start:])
    return parts


def _int(name: str, value: str, limit: int | None = None) -> int:
    if not value.isascii() or not value.isdigit() or len(value) > 12:
        raise QueryError(f"{name} must be a non-negative integer, got {value!r}")
    n = int(value)
    if limit is not None and n > limit:
        raise QueryError(f"{name} must be at most {limit}, got {n}")
    return n


def parse_options(pairs: list[tuple[str, str]] | dict[str, str], es: EntitySet, depth: int = 0) -> Options:
    items = list(pairs.items()) if isinstance(pairs, dict) else pairs
    opts = Options()
    seen: set[str] = set()
    for key, value in items:
        if not key.startswith("$"):
            continue  # other parameters are not ours to judge
        if key not in KNOWN:
            raise QueryError(f"unknown query option {key!r} (known: {', '.join(KNOWN)})")
        if key in seen:
            raise QueryError(f"query option {key} given twice")
        seen.add(key)
        opts.raw[key] = value
        if key == "$top":
            opts.top = _int(key, value, MAX_TOP)
        elif key == "$skip":
            opts.skip = _int(key, value)
        elif key == "$count":
            if value not in ("true", "false"):
                raise QueryError(f"$count must be true or false, got {value!r}")
            opts.count = value == "true"
        elif key == "$filter":
            opts.filter = parse(value)
        elif key == "$orderby":
            opts.orderby = [_order_item(item) for item in split_top(value, ",")]
        elif key == "$select":
            opts.select = _select(value, es)
        elif key == "$expand":
            opts.expand = _expand(value, es, depth)
        elif key == "$resultFormat":
            raise QueryError("$resultFormat (dataArray) is not supported by this server")
    return opts


def _order_item(item: str) -> tuple[Any, bool]:
    text = item.strip()
    desc = False
    m = re.search(r"\s+(asc|desc)$", text)
    if m:
        desc = m.group(1) == "desc"
        text = text[: m.start()]
    if not text:
        raise QueryError("empty $orderby item")
    return parse(text), desc


def _select(value: str, es: EntitySet) -> list[str]:
    names = []
    for raw in value.split(","):
        name = raw.strip()
        if name in ("@iot.id", "iot.id"):
            name = "id"
        if name in ("@iot.selfLink", "selfLink"):
            name = "selfLink"
        elif es.prop(name) is None and es.nav(name) is None:
            raise QueryError(f"$select: {es.singular} has no property {name!r}")
        names.append(name)
    return names


def _expand(value: str, es: EntitySet, depth: int) -> list[Expand]:
    """``Nav1/Nav2(opts),Nav3`` -> a tree of Expand; a path expands every navigation on it, and the same navigation
    named twice is expanded once with everything asked below it."""
    if depth >= MAX_EXPAND_DEPTH:
        raise QueryError(f"$expand nested deeper than {MAX_EXPAND_DEPTH}")
    tree: dict[str, Any] = {}  # nav -> {"options": Options | None, "children": {...}}
    for item in split_top(value, ","):
        item = item.strip()
        inner = None
        if item.endswith(")") and "(" in item:
            head, _, rest = item.partition("(")
            inner, item = rest[:-1], head.strip()
        path = item.split("/")
        cur_es, level = es, tree
        for i, nav_name in enumerate(path):
            nav = cur_es.nav(nav_name)
            if nav is None:
                raise QueryError(f"$expand: {cur_es.singular} has no navigation property {nav_name!r}")
            if depth + i + 1 > MAX_EXPAND_DEPTH:
                raise QueryError(f"$expand nested deeper than {MAX_EXPAND_DEPTH}")
            target = SETS[nav.target]
            node = level.setdefault(nav_name, {"options": None, "children": {}})
            if i == len(path) - 1 and inner is not None:
                pairs = []
                for opt in split_top(inner, ";"):
                    k, eq, v = opt.strip().partition("=")
                    if not eq:
                        raise QueryError(f"$expand option {opt!r}: expected $name=value")
                    pairs.append((k.strip(), v))
                node["options"] = parse_options(pairs, target, depth + i + 1)
            cur_es, level = target, node["children"]
    return _build(tree)


def _build(tree: dict[str, Any]) -> list[Expand]:
    out = []
    for nav, node in tree.items():
        opts = node["options"] or Options()
        extra = _build(node["children"])
        known = {e.nav for e in opts.expand}
        opts.expand = opts.expand + [e for e in extra if e.nav not in known]
        out.append(Expand(nav, opts))
    return out
