"""``$filter`` and ``$orderby`` expressions of the SensorThings API (OData subset of OGC 18-088 §9.3.3.5).

A real grammar, parsed by recursive descent into a small AST and compiled to DuckDB SQL with every literal bound
as a named parameter, so no text of the request ever becomes SQL. Property names are checked against the entity
set (:mod:`cosim.sta.schema`); operand types are checked before any SQL exists. Every problem is a
:class:`QueryError` (answered with 400), never a server error::

    expr     := or_expr
    or_expr  := and_expr ("or" and_expr)*
    and_expr := not_expr ("and" not_expr)*
    not_expr := "not" not_expr | cmp
    cmp      := sum (("eq"|"ne"|"gt"|"ge"|"lt"|"le") sum)?
    sum      := term (("add"|"sub") term)*
    term     := unary (("mul"|"div"|"mod") unary)*
    unary    := "-" unary | primary
    primary  := "(" expr ")" | literal | name "(" [expr ("," expr)*] ")" | path
    path     := name ("/" name)*            e.g. phenomenonTime, Datastream/Thing/properties/site
    literal  := number | 'string' ('' escapes a quote) | true | false | null
              | date-time (2019-06-15T00:00:00Z, offset or Z) | date (2019-06-15) | interval (t1/t2)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, cast

from .schema import ID, INTERVAL, JSON, NUM, RESULT, SETS, STR, TIME, EntitySet

MAX_FILTER_CHARS = 4000
MAX_DEPTH = 40
MAX_NODES = 400


class QueryError(ValueError):
    """A request the server cannot answer as asked (HTTP 400), with the reason."""


# ---------------------------------------------------------------------------------------------------- tokens
_DT = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})"
_TOKEN = re.compile(rf"""
    (?P<ws>\s+)
  | (?P<interval>{_DT}/{_DT})
  | (?P<datetime>{_DT})
  | (?P<date>\d{{4}}-\d{{2}}-\d{{2}}(?![\dT:]))
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<string>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_@][A-Za-z0-9_.@:]*)
  | (?P<punct>[()/,-])
""", re.VERBOSE)


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    pos: int


def tokenize(text: str) -> list[Tok]:
    if len(text) > MAX_FILTER_CHARS:
        raise QueryError(f"expression longer than {MAX_FILTER_CHARS} characters")
    out, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise QueryError(f"unexpected character {text[pos]!r} at position {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append(Tok(kind, m.group(), pos))
        pos = m.end()
    out.append(Tok("end", "", len(text)))
    return out


# ------------------------------------------------------------------------------------------------------ AST
@dataclass(frozen=True)
class Lit:
    kind: str  # num, str, bool, null, time, date, interval
    value: Any


@dataclass(frozen=True)
class Path:
    parts: tuple[str, ...]


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Op:
    op: str
    args: tuple[Any, ...]


_CMP = ("eq", "ne", "gt", "ge", "lt", "le")
_KEYWORDS = {"and", "or", "not", *_CMP, "add", "sub", "mul", "div", "mod", "true", "false", "null", "asc", "desc"}


def parse_time(text: str) -> datetime:
    """An ISO 8601 date-time with zone -> naive UTC datetime (how the stores keep time)."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise QueryError(f"invalid date-time {text!r}: {exc}") from None
    if t.tzinfo is None:
        raise QueryError(f"date-time {text!r} needs a zone (Z or +hh:mm)")
    return t.astimezone(UTC).replace(tzinfo=None)


class Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0

    def peek(self) -> Tok:
        return self.toks[self.i]

    def take(self) -> Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise QueryError(f"expected {text!r} at position {tok.pos}, found {tok.text or 'the end'!r}")

    def word(self, *words: str) -> str | None:
        tok = self.peek()
        if tok.kind == "name" and tok.text in words:
            self.i += 1
            return tok.text
        return None

    def _node(self) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise QueryError(f"expression has more than {MAX_NODES} parts")

    def parse(self) -> Any:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            raise QueryError(f"unexpected {tok.text!r} at position {tok.pos}")
        return node

    def expr(self) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"expression nested deeper than {MAX_DEPTH}")
        try:
            return self.or_expr()
        finally:
            self.depth -= 1

    def or_expr(self) -> Any:
        node = self.and_expr()
        while self.word("or"):
            self._node()
            node = Op("or", (node, self.and_expr()))
        return node

    def and_expr(self) -> Any:
        node = self.not_expr()
        while self.word("and"):
            self._node()
            node = Op("and", (node, self.not_expr()))
        return node

    def not_expr(self) -> Any:
        if self.word("not"):
            self._node()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"expression nested deeper than {MAX_DEPTH}")
            try:
                return Op("not", (self.not_expr(),))
            finally:
                self.depth -= 1
        return self.cmp()

    def cmp(self) -> Any:
        node = self.sum()
        op = self.word(*_CMP)
        if op:
            self._node()
            node = Op(op, (node, self.sum()))
            if self.peek().kind == "name" and self.peek().text in _CMP:
                raise QueryError(f"comparisons do not chain (position {self.peek().pos}): use 'and'")
        return node

    def sum(self) -> Any:
        node = self.term()
        while op := self.word("add", "sub"):
            self._node()
            node = Op(op, (node, self.term()))
        return node

    def term(self) -> Any:
        node = self.unary()
        while op := self.word("mul", "div", "mod"):
            self._node()
            node = Op(op, (node, self.unary()))
        return node

    def unary(self) -> Any:
        if self.peek().text == "-":
            self.take()
            self._node()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise QueryError(f"expression nested deeper than {MAX_DEPTH}")
            try:
                inner = self.unary()
            finally:
                self.depth -= 1
            if isinstance(inner, Lit) and inner.kind == "num":
                return Lit("num", -inner.value)
            return Op("neg", (inner,))
        return self.primary()

    def primary(self) -> Any:
        self._node()
        tok = self.take()
        if tok.text == "(":
            node = self.expr()
            self.expect(")")
            return node
        if tok.kind == "number":
            value = float(tok.text)
            if not math.isfinite(value):
                raise QueryError(f"number {tok.text!r} out of range")
            return Lit("num", value)
        if tok.kind == "string":
            return Lit("str", tok.text[1:-1].replace("''", "'"))
        if tok.kind == "datetime":
            return Lit("time", parse_time(tok.text))
        if tok.kind == "date":
            try:
                return Lit("date", date.fromisoformat(tok.text))
            except ValueError as exc:
                raise QueryError(f"invalid date {tok.text!r}: {exc}") from None
        if tok.kind == "interval":
            a, b = tok.text.split("/")
            start, end = parse_time(a), parse_time(b)
            if end < start:
                raise QueryError(f"interval {tok.text!r} ends before it starts")
            return Lit("interval", (start, end))
        if tok.kind == "name":
            low = tok.text
            if low in ("true", "false"):
                return Lit("bool", low == "true")
            if low == "null":
                return Lit("null", None)
            if low in _KEYWORDS:
                raise QueryError(f"unexpected keyword {tok.text!r} at position {tok.pos}")
            if self.peek().text == "(":
                self.take()
                args = []
                if self.peek().text != ")":
                    args.append(self.expr())
                    while self.peek().text == ",":
                        self.take()
                        args.append(self.expr())
                self.expect(")")
                return Call(tok.text.lower(), tuple(args))
            parts = [tok.text]
            while self.peek().text == "/":
                self.take()
                nxt = self.take()
                if nxt.kind != "name":
                    raise QueryError(f"expected a property name after '/' at position {nxt.pos}")
                parts.append(nxt.text)
            return Path(tuple(parts))
        raise QueryError(f"unexpected {tok.text or 'end of expression'!r} at position {tok.pos}")


def parse(text: str) -> Any:
    return Parser(text).parse()


# ------------------------------------------------------------------------------------------------- compiler
@dataclass
class Sql:
    sql: str
    kind: str  # num, str, bool, time, date, tod (time of day), interval, json, result, null
    extra: Any = None  # interval: (start_sql, end_sql); json: (column sql, json path); result: (num, text)


_STR_FUNCS = {"tolower": "lower", "toupper": "upper", "trim": "trim"}
_TIME_PARTS = {"year": "year", "month": "month", "day": "day", "hour": "hour", "minute": "minute",
               "second": "second"}
_MATH = {"round": "round", "floor": "floor", "ceiling": "ceil"}
_SQL_CMP = {"eq": "=", "ne": "<>", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_SQL_ARITH = {"add": "+", "sub": "-", "mul": "*", "div": "/", "mod": "%"}


class Compiler:
    """Compiles one expression against an entity set; ``params`` collects the bound literals."""

    def __init__(self, entity_set: EntitySet, alias: str, params: dict[str, Any], now: datetime | None = None) -> None:
        self.root = entity_set
        self.alias = alias
        self.params = params
        self.now = now or datetime.now(UTC).replace(tzinfo=None)
        self._n = 0
        self._exists: list[tuple[str, str, str]] = []  # to-many joins of the comparison being compiled
        self._in_to_one = 0

    def bind(self, value: Any) -> str:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return f"${name}"

    def _alias(self) -> str:
        self._n += 1
        return f"{self.alias}_{self._n}"

    # -- entry points -------------------------------------------------------------------------------------
    def condition(self, node: Any) -> str:
        out = self._bool(node)
        return out.sql

    def order_key(self, node: Any) -> str:
        out = self.compile(node)
        if self._exists:
            raise QueryError("$orderby cannot go through a to-many navigation property")
        if out.kind == "interval":
            return cast(str, out.extra[0])
        if out.kind == "result":
            return cast(str, out.extra[0])
        if out.kind == "json":
            return f"json_extract_string({out.extra[0]}, {self.bind(out.extra[1])})"
        if out.kind == "bool":
            return f"({out.sql})"
        return out.sql

    # -- nodes --------------------------------------------------------------------------------------------
    def _bool(self, node: Any) -> Sql:
        outer = self._exists
        self._exists = []
        try:
            out = self.compile(node)
            if out.kind != "bool":
                raise QueryError(f"expected a condition, found a {out.kind} value")
            if self._exists:  # "any" over the to-many navigation(s) the expression went through
                tables = ", ".join(f"{t} {a}" for t, a, _ in self._exists)
                conds = " AND ".join(c for _, _, c in self._exists)
                out = Sql(f"EXISTS (SELECT 1 FROM {tables} WHERE {conds} AND ({out.sql}))", "bool")
            return out
        finally:
            self._exists = outer

    def compile(self, node: Any) -> Sql:
        if isinstance(node, Lit):
            return self._lit(node)
        if isinstance(node, Path):
            return self._path(node.parts)
        if isinstance(node, Op):
            return self._op(node)
        if isinstance(node, Call):
            return self._call(node)
        raise QueryError(f"unexpected expression {node!r}")

    def _lit(self, node: Lit) -> Sql:
        if node.kind == "null":
            return Sql("NULL", "null")
        if node.kind == "bool":
            return Sql("TRUE" if node.value else "FALSE", "bool")
        if node.kind == "num":
            return Sql(f"CAST({self.bind(float(node.value))} AS DOUBLE)", "num")
        if node.kind == "str":
            return Sql(f"CAST({self.bind(node.value)} AS VARCHAR)", "str")
        if node.kind == "time":
            return Sql(f"CAST({self.bind(node.value)} AS TIMESTAMP)", "time")
        if node.kind == "date":
            return Sql(f"CAST({self.bind(node.value)} AS DATE)", "date")
        start, end = node.value
        s = f"CAST({self.bind(start)} AS TIMESTAMP)"
        e = f"CAST({self.bind(end)} AS TIMESTAMP)"
        return Sql(s, "interval", (s, e))

    def _path(self, parts: tuple[str, ...]) -> Sql:
        es, alias = self.root, self.alias
        for i, part in enumerate(parts):
            nav = es.nav(part)
            if nav is not None:
                target = SETS[nav.target]
                child = self._alias()
                cond = nav.cond.format(c=child, p=alias)
                if i == len(parts) - 1:
                    raise QueryError(f"{'/'.join(parts)}: a navigation property is not a value; name one of its "
                                     f"properties (e.g. {part}/id)")
                if nav.many:
                    if self._in_to_one:
                        raise QueryError(f"{'/'.join(parts)}: a to-many navigation after a to-one navigation is "
                                         "not supported")
                    self._exists.append((target.table, child, cond))
                    es, alias = target, child
                    continue
                self._in_to_one += 1
                try:
                    rest = self._path_in(target, child, parts[i + 1:])
                finally:
                    self._in_to_one -= 1
                return Sql(f"(SELECT {rest.sql} FROM {target.table} {child} WHERE {cond})", rest.kind,
                           _wrap_extra(rest, target.table, child, cond))
            return self._path_in(es, alias, parts[i:])
        raise QueryError(f"empty property path {'/'.join(parts)!r}")

    def _path_in(self, es: EntitySet, alias: str, parts: tuple[str, ...]) -> Sql:
        head = parts[0]
        if head in ("@iot.id", "iot.id"):
            head = "id"
        if es.nav(head) is not None:
            return self._path_sub(es, alias, parts)
        prop = es.prop(head)
        if prop is None:
            known = ", ".join([p.name for p in es.props] + [n.name for n in es.navs])
            raise QueryError(f"{es.singular} has no property {head!r} (known: {known})")
        if prop.kind == JSON:
            path = "$" + "".join(f'."{_json_key(k)}"' for k in parts[1:])
            return Sql(f"{alias}.{prop.column}", "json", (f"{alias}.{prop.column}", path))
        if len(parts) > 1:
            raise QueryError(f"{es.singular}/{head} has no sub-properties ({'/'.join(parts)})")
        if prop.kind == INTERVAL:
            a, b = prop.column.split(",")
            return Sql(f"{alias}.{a}", "interval", (f"{alias}.{a}", f"{alias}.{b}"))
        if prop.kind == RESULT:
            a, b = prop.column.split(",")
            return Sql(f"{alias}.{a}", "result", (f"{alias}.{a}", f"{alias}.{b}"))
        kind = {ID: "num", NUM: "num", STR: "str", TIME: "time"}[prop.kind]
        return Sql(f"{alias}.{prop.column}", kind)

    def _path_sub(self, es: EntitySet, alias: str, parts: tuple[str, ...]) -> Sql:
        saved_root, saved_alias = self.root, self.alias
        self.root, self.alias = es, alias
        try:
            return self._path(parts)
        finally:
            self.root, self.alias = saved_root, saved_alias

    def _op(self, node: Op) -> Sql:
        op = node.op
        if op in ("and", "or"):
            a, b = self._bool(node.args[0]), self._bool(node.args[1])
            return Sql(f"({a.sql} {op.upper()} {b.sql})", "bool")
        if op == "not":
            a = self._bool(node.args[0])
            return Sql(f"(NOT COALESCE({a.sql}, FALSE))", "bool")
        if op == "neg":
            num = self._num(self.compile(node.args[0]))
            return Sql(f"(-{num})", "num")
        if op in _SQL_ARITH:
            a, b = self.compile(node.args[0]), self.compile(node.args[1])
            return Sql(f"({self._num(a)} {_SQL_ARITH[op]} {self._num(b)})", "num")
        return self._compare(op, self.compile(node.args[0]), self.compile(node.args[1]))

    def _num(self, x: Sql) -> str:
        if x.kind == "num":
            return x.sql
        if x.kind == "result":
            return cast(str, x.extra[0])
        if x.kind == "json":
            return f"TRY_CAST(json_extract_string({x.extra[0]}, {self.bind(x.extra[1])}) AS DOUBLE)"
        raise QueryError(f"expected a number, found a {x.kind} value")

    def _as(self, x: Sql, kind: str) -> str:
        """``x`` as a value of ``kind`` (json and result values take the type of what they are compared with)."""
        if x.kind == kind:
            return x.sql
        if kind == "num":
            return self._num(x)
        if x.kind == "json":
            text = f"json_extract_string({x.extra[0]}, {self.bind(x.extra[1])})"
            cast = {"str": "VARCHAR", "time": "TIMESTAMP", "date": "DATE", "bool": "BOOLEAN"}.get(kind)
            if cast is None:
                raise QueryError(f"cannot compare a JSON property with a {kind} value")
            return text if kind == "str" else f"TRY_CAST({text} AS {cast})"
        if x.kind == "result":
            text = f"json_extract_string({x.extra[1]}, '$')"
            cast = {"str": "VARCHAR", "bool": "BOOLEAN"}.get(kind)
            if cast is None:
                raise QueryError(f"cannot compare result with a {kind} value")
            return text if kind == "str" else f"TRY_CAST({text} AS BOOLEAN)"
        if x.kind == "time" and kind == "date":
            return f"CAST({x.sql} AS DATE)"
        raise QueryError(f"cannot compare a {x.kind} value with a {kind} value")

    def _compare(self, op: str, a: Sql, b: Sql) -> Sql:
        sql_op = _SQL_CMP[op]
        if a.kind == "null" or b.kind == "null":
            other = b if a.kind == "null" else a
            if op not in ("eq", "ne"):
                raise QueryError(f"null can only be compared with eq or ne, not {op}")
            if other.kind == "null":
                return Sql("TRUE" if op == "eq" else "FALSE", "bool")
            col = other.extra[0] if other.kind in ("result", "interval") else (
                f"json_extract({other.extra[0]}, {self.bind(other.extra[1])})" if other.kind == "json" else other.sql)
            if other.kind == "result":
                col = f"COALESCE(CAST({other.extra[0]} AS VARCHAR), {other.extra[1]})"
            return Sql(f"({col} IS {'' if op == 'eq' else 'NOT '}NULL)", "bool")
        if a.kind == "interval" or b.kind == "interval":
            return self._compare_interval(op, a, b)
        kinds = {a.kind, b.kind}
        flexible = {"json", "result"}
        if a.kind == b.kind and a.kind not in flexible:
            if a.kind == "bool" and op not in ("eq", "ne"):
                raise QueryError(f"booleans compare with eq or ne only, not {op}")
            return Sql(f"({a.sql} {sql_op} {b.sql})", "bool")
        if kinds <= flexible:  # both untyped: compare as text
            return Sql(f"({self._as(a, 'str')} {sql_op} {self._as(b, 'str')})", "bool")
        if kinds == {"time", "date"}:
            return Sql(f"({self._as(a, 'date')} {sql_op} {self._as(b, 'date')})", "bool")
        target = b.kind if a.kind in flexible else a.kind
        if a.kind not in flexible and b.kind not in flexible:
            raise QueryError(f"cannot compare a {a.kind} value with a {b.kind} value")
        return Sql(f"({self._as(a, target)} {sql_op} {self._as(b, target)})", "bool")

    def _compare_interval(self, op: str, a: Sql, b: Sql) -> Sql:
        """An interval compared with an instant or interval: lt = ends before, gt = starts after, eq = same."""
        def ends(x: Sql) -> tuple[str, str]:
            if x.kind == "interval":
                return cast("tuple[str, str]", x.extra)
            if x.kind == "time":
                return x.sql, x.sql
            raise QueryError(f"cannot compare a time interval with a {x.kind} value")
        (a0, a1), (b0, b1) = ends(a), ends(b)
        sql = {"eq": f"({a0} = {b0} AND {a1} = {b1})", "ne": f"NOT ({a0} = {b0} AND {a1} = {b1})",
               "lt": f"({a1} < {b0})", "le": f"({a1} <= {b0})", "gt": f"({a0} > {b1})", "ge": f"({a0} >= {b1})"}[op]
        return Sql(sql, "bool")

    def _call(self, node: Call) -> Sql:
        name, args = node.name, node.args

        def arity(*n: int) -> None:
            if len(args) not in n:
                raise QueryError(f"{name}() takes {' or '.join(map(str, n))} argument(s), got {len(args)}")

        def text(i: int) -> str:
            return self._as(self.compile(args[i]), "str")

        def when(i: int) -> str:
            x = self.compile(args[i])
            if x.kind == "interval":
                return cast(str, x.extra[0])
            return self._as(x, "time")

        if name in ("substringof", "contains"):
            arity(2)
            a, b = text(0), text(1)
            return Sql(f"contains({b}, {a})" if name == "substringof" else f"contains({a}, {b})", "bool")
        if name in ("startswith", "endswith"):
            arity(2)
            return Sql(f"{'starts_with' if name == 'startswith' else 'ends_with'}({text(0)}, {text(1)})", "bool")
        if name == "length":
            arity(1)
            return Sql(f"CAST(length({text(0)}) AS DOUBLE)", "num")
        if name == "indexof":
            arity(2)
            return Sql(f"CAST(instr({text(0)}, {text(1)}) - 1 AS DOUBLE)", "num")
        if name == "substring":
            arity(2, 3)
            s = text(0)
            start = f"CAST(greatest(floor({self._num(self.compile(args[1]))}), 0) + 1 AS BIGINT)"
            if len(args) == 3:
                n = f"CAST(greatest(floor({self._num(self.compile(args[2]))}), 0) AS BIGINT)"
                return Sql(f"substring({s}, {start}, {n})", "str")
            return Sql(f"substring({s}, {start})", "str")
        if name in _STR_FUNCS:
            arity(1)
            return Sql(f"{_STR_FUNCS[name]}({text(0)})", "str")
        if name == "concat":
            arity(2)
            return Sql(f"concat({text(0)}, {text(1)})", "str")
        if name in _TIME_PARTS:
            arity(1)
            return Sql(f"CAST(date_part('{_TIME_PARTS[name]}', {when(0)}) AS DOUBLE)", "num")
        if name == "fractionalseconds":
            arity(1)
            return Sql(f"(CAST(date_part('microsecond', {when(0)}) % 1000000 AS DOUBLE) / 1e6)", "num")
        if name == "date":
            arity(1)
            return Sql(f"CAST({when(0)} AS DATE)", "date")
        if name == "time":
            arity(1)
            return Sql(f"CAST({when(0)} AS TIME)", "tod")
        if name == "totaloffsetminutes":
            arity(1)
            when(0)
            return Sql("CAST(0 AS DOUBLE)", "num")  # the stores keep UTC
        if name == "now":
            arity(0)
            return Sql(f"CAST({self.bind(self.now)} AS TIMESTAMP)", "time")
        if name in ("mindatetime", "maxdatetime"):
            arity(1)
            x = self.compile(args[0])
            if x.kind == "interval":
                return Sql(x.extra[0] if name == "mindatetime" else x.extra[1], "time")
            return Sql(self._as(x, "time"), "time")
        if name in _MATH:
            arity(1)
            return Sql(f"{_MATH[name]}({self._num(self.compile(args[0]))})", "num")
        if name in ("before", "after", "meets", "during", "overlaps", "starts", "finishes"):
            arity(2)
            return self._temporal(name, self.compile(args[0]), self.compile(args[1]))
        if name.startswith(("geo.", "st_")):
            raise QueryError(f"geospatial function {name}() is not supported by this server")
        raise QueryError(f"unknown function {name}()")

    def _temporal(self, name: str, a: Sql, b: Sql) -> Sql:
        def ends(x: Sql) -> tuple[str, str]:
            if x.kind == "interval":
                return cast("tuple[str, str]", x.extra)
            t = self._as(x, "time")
            return t, t
        (a0, a1), (b0, b1) = ends(a), ends(b)
        sql = {"before": f"({a1} < {b0})", "after": f"({a0} > {b1})", "meets": f"({a1} = {b0} OR {b1} = {a0})",
               "during": f"({a0} >= {b0} AND {a1} <= {b1})", "overlaps": f"({a0} < {b1} AND {a1} > {b0})",
               "starts": f"({a0} = {b0})", "finishes": f"({a1} = {b1})"}[name]
        return Sql(sql, "bool")


def _json_key(key: str) -> str:
    if '"' in key or "\\" in key:
        raise QueryError(f"invalid property name {key!r}")
    return key


def _wrap_extra(rest: Sql, table: str, alias: str, cond: str) -> Any:
    """A to-one path's interval/json/result parts, each as its own scalar sub-query."""
    if rest.kind in ("interval", "result"):
        return tuple(f"(SELECT {x} FROM {table} {alias} WHERE {cond})" for x in rest.extra)
    if rest.kind == "json":
        return (f"(SELECT {rest.extra[0]} FROM {table} {alias} WHERE {cond})", rest.extra[1])
    return rest.extra
