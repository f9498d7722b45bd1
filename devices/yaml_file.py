"""YAML files people write (scenarios, device configurations): read strictly and within bounds.

PyYAML alone lets through what a person did not mean, or what ends the process: a repeated key silently
keeps the last value; 5000 nested brackets overflow its recursive composer (RecursionError); a few aliases
expand to billions of values, or refer to themselves; ``.inf`` and ``.nan`` pass as numbers; a Latin-1 byte,
``2019-02-30`` or a 5000-digit integer raise exceptions nobody catches. :func:`read` and :func:`parse`
report each of these as a :class:`YamlProblem` with its line and key path -- all of them at once -- and
raise only :class:`YamlInputError`. Depth is checked on the parser's event stream, which is iterative,
before anything is composed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml

MAX_BYTES = 4 << 20  # 4 MiB: a pilot scenario with 28 sites is 10 kB; profiles live in their own files
MAX_DEPTH = 64  # the scenario schema nests about 6 levels
MAX_NODES = 200_000  # values after alias expansion ("billion laughs" stops here)
# libyaml's parser when PyYAML was built with it (6x faster: a pilot scenario in 45 ms, not 290); same events,
# nodes and marks. Its composer recurses in C, which is safe because depth is checked on the events first.
LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_FLOAT = "tag:yaml.org,2002:float"
_MERGE = "tag:yaml.org,2002:merge"


@dataclass(frozen=True)
class YamlProblem:
    message: str
    line: int | None = None
    loc: tuple[str | int, ...] = ()  # key path, e.g. ("devices", 0, "config")


class YamlInputError(ValueError):
    """A YAML text that cannot be accepted; ``problems`` lists every reason found, with lines."""

    def __init__(self, problems: list[YamlProblem]) -> None:
        self.problems = sorted(problems, key=lambda p: p.line or 0)
        super().__init__("; ".join(_describe(p) for p in self.problems))


def _describe(p: YamlProblem) -> str:
    where = f"line {p.line}: " if p.line else ""
    path = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in p.loc).lstrip(".")
    return f"{where}{path + ': ' if path else ''}{p.message}"


@dataclass(frozen=True)
class YamlDocument:
    text: str
    root: yaml.Node | None  # the composed node tree (for line numbers of later problems)
    data: Any


def decode(raw: bytes) -> str:
    """UTF-8 text of a file's bytes, or a problem naming the line of the first byte that is not UTF-8."""
    if len(raw) > MAX_BYTES:
        raise YamlInputError([YamlProblem(f"the file is larger than {MAX_BYTES >> 20} MiB")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise YamlInputError([YamlProblem(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
                                          line)]) from None


def read(path: str | Path) -> YamlDocument:
    """Read and parse a YAML file; OSError if it cannot be read, YamlInputError if it is not acceptable."""
    with open(path, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    return parse(decode(raw))


def parse(text: str) -> YamlDocument:
    """Parse one YAML document; raise YamlInputError with every problem found."""
    loader = None
    try:
        loader = LOADER(text)
        _check_depth(text)
        root = loader.get_single_node()
        if root is None:
            return YamlDocument(text, None, None)
        problems = _check_graph(root)
        if not problems:
            problems = _check_values(root, loader)
        if problems:
            raise YamlInputError(problems)
        return YamlDocument(text, root, loader.construct_document(root))
    except yaml.YAMLError as exc:
        raise YamlInputError([_yaml_problem(exc, text)]) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, text: str) -> YamlProblem:
    if isinstance(exc, yaml.reader.ReaderError):  # a control character: no mark, a position
        line = text[:exc.position].count("\n") + 1 if isinstance(exc.position, int) else None
        return YamlProblem(f"not valid YAML: character #x{exc.character:04x} is not allowed", line)
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    return YamlProblem(f"not valid YAML: {context + ': ' if context else ''}{problem}", mark.line + 1 if mark else None)


def _too_deep(line: int | None) -> YamlInputError:
    return YamlInputError([YamlProblem(f"nested deeper than the {MAX_DEPTH} levels allowed", line)])


def _check_depth(text: str) -> None:
    depth = 0
    try:
        for event in yaml.parse(text, Loader=LOADER):
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise _too_deep(event.start_mark.line + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.MarkedYAMLError as exc:  # libyaml stops deep flow nesting itself (at 1000): the same refusal
        if "nesting depth" not in (exc.problem or ""):
            raise
        raise _too_deep(exc.problem_mark.line + 1 if exc.problem_mark else None) from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_graph(root: yaml.Node) -> list[YamlProblem]:
    """Aliases make the node tree a graph: refuse cycles, and trees that expand too deep or too large."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order: an expanded tree may be far deeper than the recursion limit
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = min(1 + sum(size[id(c)] for c in kids), MAX_NODES + 1)
            depth[key] = 1 + max((depth[id(c)] for c in kids), default=0)
            continue
        if key in size:
            continue
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                return [YamlProblem("an alias (*name) refers to a value that contains it",
                                    child.start_mark.line + 1)]
            if id(child) not in size:
                stack.append((child, False))
    if size[id(root)] > MAX_NODES:
        return [YamlProblem(f"more than {MAX_NODES} values once its aliases (*name) are expanded")]
    if depth[id(root)] > MAX_DEPTH + 1:
        return [YamlProblem(f"nested deeper than {MAX_DEPTH} levels once its aliases (*name) are expanded")]
    return []


def _check_values(root: yaml.Node, loader: yaml.constructor.SafeConstructor) -> list[YamlProblem]:
    """Repeated keys, scalars that cannot be read (2019-02-30, a 5000-digit integer), infinite numbers."""
    problems: list[YamlProblem] = []
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[str | int, ...]]] = [(root, ())]
    while stack:
        node, loc = stack.pop()
        if id(node) in seen:  # an aliased value is checked once, where its anchor is
            continue
        seen.add(id(node))
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            first: dict[tuple[str, Any], int] = {}
            for key, value in node.value:
                if key.tag == _MERGE:
                    stack.append((value, loc))
                    continue
                name = key.value if isinstance(key, yaml.ScalarNode) else f"<key on line {key.start_mark.line + 1}>"
                ident = (key.tag, key.value) if isinstance(key, yaml.ScalarNode) else (key.tag, id(key))
                if ident in first:
                    problems.append(YamlProblem(f"duplicate key (first on line {first[ident]}); YAML would keep "
                                                "only the last one", key.start_mark.line + 1, (*loc, name)))
                else:
                    first[ident] = key.start_mark.line + 1
                stack.append((key, (*loc, name)))
                stack.append((value, (*loc, name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, (*loc, i)) for i, child in enumerate(node.value))
        elif isinstance(node, yaml.ScalarNode):
            try:
                value = loader.construct_object(node)
            except Exception as exc:  # the scalar's own constructor (datetime, int, base64 ...) refused it
                reason = str(exc).split(";")[0]
                problems.append(YamlProblem(f"cannot read {node.value[:40]!r}: {reason}", line, loc))
                continue
            if node.tag == _FLOAT and not math.isfinite(value):
                problems.append(YamlProblem(f"expected a finite number (found {node.value})", line, loc))
    return problems


def dump(data: Any, **options: Any) -> str:
    """YAML text of plain data (safe types only), with libyaml's emitter when PyYAML has it."""
    return cast(str, yaml.dump(data, Dumper=DUMPER, allow_unicode=True, **options))


__all__ = ["DUMPER", "LOADER", "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "YamlDocument", "YamlInputError",
           "YamlProblem", "decode", "dump", "parse", "read"]
