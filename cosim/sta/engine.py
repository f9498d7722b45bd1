"""Answers SensorThings resource paths with query options over a :class:`cosim.sta.store.Store`.

``Engine.get(path, query, base_url)`` returns ``(status, body, content_type)`` for ``/v1.1/<path>``:
collections (``Things``), entities (``Things(1)``), navigation (``Things(1)/Datastreams``, ``Datastreams(1)/Thing``),
properties (``Things(1)/name``, ``.../name/$value``) and references (``.../$ref``), with ``$filter``, ``$select``,
``$expand`` (nested), ``$orderby``, ``$top``, ``$skip``, ``$count`` and ``@iot.nextLink`` paging. JSON follows
OGC 18-088: ``@iot.id``, ``@iot.selfLink``, ``<Nav>@iot.navigationLink``, ``@iot.count``, ``@iot.nextLink``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import duckdb

from .filter import Compiler, QueryError
from .options import Expand, Options, parse_options, split_query
from .schema import INTERVAL, JSON, RESULT, SETS, TIME, EntitySet, Nav
from .store import Store

VERSION = "v1.1"
_SEGMENT = re.compile(r"^([A-Za-z]+)(?:\((?:(\d{1,18})|'([^']*)')\))?$")


class NotFound(LookupError):
    """The path names nothing (HTTP 404)."""


@dataclass
class Step:
    es: EntitySet
    nav: Nav | None  # how this step was reached from the previous one
    id: int | None


def iso(t: datetime | None) -> str | None:
    if t is None:
        return None
    text = t.isoformat(timespec="milliseconds" if t.microsecond else "seconds")
    return text + "Z"


def _json(value: Any) -> Any:
    if value is None or not isinstance(value, str):
        return value
    return json.loads(value)


class Engine:
    def __init__(self, store: Store) -> None:
        self.store = store

    # -- entry point --------------------------------------------------------------------------------------
    def get(self, path: str, query: str, base: str) -> tuple[int, Any, str]:
        """``path`` below ``/v1.1/`` (no leading slash), the raw query string and the service root URL."""
        segments = [s for s in path.split("/") if s]
        if not segments:
            return 200, self.root(base), "application/json"
        steps, tail = self._resolve(segments)
        final = steps[-1]
        pairs = split_query(query)
        opts = parse_options(pairs, final.es)
        cur = self.store.cursor()
        try:
            self._check_parents(cur, steps)
            single = final.id is not None or (final.nav is not None and not final.nav.many)
            if tail and tail[0] not in ("$ref",):  # a property
                row = self._one(cur, steps, final.es)
                name = tail[0]
                if final.es.prop(name) is None and name not in ("id", "@iot.id"):
                    raise NotFound(f"{final.es.singular} has no property {name!r}")
                entity = self._render(final.es, row, base, Options(select=[name if name != "@iot.id" else "id"]))
                value = next(iter(entity.values())) if entity else None
                if len(tail) > 1:
                    if tail[1] != "$value" or len(tail) > 2:
                        raise NotFound(f"unexpected path segment {tail[1]!r}")
                    if value is None:
                        return 204, "", "text/plain"
                    text = value if isinstance(value, str) else json.dumps(value)
                    return 200, text, "text/plain; charset=utf-8"
                return 200, entity, "application/json"
            ref = bool(tail) and tail[0] == "$ref"
            if ref and len(tail) > 1:
                raise NotFound(f"unexpected path segment {tail[1]!r}")
            if single:
                row = self._one(cur, steps, final.es, opts)
                if ref:
                    return 200, {"@iot.selfLink": f"{base}/{final.es.name}({row['id']})"}, "application/json"
                entity = self._render(final.es, row, base, opts)
                self._expand(cur, final.es, [(row, entity)], opts.expand, base)
                return 200, entity, "application/json"
            return 200, self._collection(cur, steps, opts, base, pairs, ref), "application/json"
        except duckdb.Error as exc:  # e.g. a value out of range for its type: the query, not the server, is wrong
            raise QueryError(f"the query could not be evaluated: {str(exc).splitlines()[0]}") from None
        finally:
            cur.close()

    def root(self, base: str) -> dict[str, Any]:
        return {
            "value": [{"name": name, "url": f"{base}/{name}"} for name in SETS],
            "serverSettings": {"conformance": [
                "http://www.opengis.net/spec/iot_sensing/1.1/req/datamodel",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/resource-path/resource-path-to-entities",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/request-data",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/create-observations-via-mqtt/observations-creation",
                "http://www.opengis.net/spec/iot_sensing/1.1/req/receive-updates-via-mqtt/receive-updates",
            ], **self.mqtt_settings()},
        }

    def mqtt_settings(self) -> dict[str, Any]:
        return {}

    # -- paths --------------------------------------------------------------------------------------------
    def _resolve(self, segments: list[str]) -> tuple[list[Step], list[str]]:
        m = _SEGMENT.match(segments[0])
        if not m or m.group(1) not in SETS:
            raise NotFound(f"no entity set {segments[0]!r} (known: {', '.join(SETS)})")
        steps = [Step(SETS[m.group(1)], None, self._seg_id(m))]
        i = 1
        while i < len(segments):
            seg = segments[i]
            prev = steps[-1]
            m = _SEGMENT.match(seg)
            nav = prev.es.nav(m.group(1)) if m else None
            if nav is None or (prev.id is None and (prev.nav is None or prev.nav.many)):
                break
            ident = self._seg_id(m) if m else None
            if ident is not None and not nav.many:
                raise NotFound(f"{seg}: {nav.name} is a single entity, it takes no id")
            steps.append(Step(SETS[nav.target], nav, ident))
            i += 1
        tail = segments[i:]
        last = steps[-1]
        if tail:
            single = last.id is not None or (last.nav is not None and not last.nav.many)
            if tail[0] == "$ref":
                pass
            elif not single:
                raise NotFound(f"{tail[0]!r}: properties are read from one entity, e.g. {last.es.name}(1)/name")
            elif last.es.prop(tail[0]) is None and tail[0] not in ("id", "@iot.id"):
                raise NotFound(f"{last.es.singular} has no property or navigation {tail[0]!r}")
        return steps, tail

    @staticmethod
    def _seg_id(m: re.Match[str] | None) -> int | None:
        if m is None:
            return None
        if m.group(2) is not None:
            return int(m.group(2))
        if m.group(3) is not None:
            text = m.group(3)
            if text.isdigit() and len(text) < 19:
                return int(text)
            raise NotFound(f"no entity with id '{text}' (ids are integers)")
        return None

    def _where(self, steps: list[Step], alias: str, params: dict[str, Any]) -> list[str]:
        """Conditions on the last step's alias that follow the path from the first step."""
        k = len(steps) - 1
        conds = []
        if steps[k].id is not None:
            params[f"id{k}"] = steps[k].id
            conds.append(f"{alias}.id = $id{k}")
        up = self._parent_cond(steps, k, alias, params)
        if up:
            conds.append(up)
        return conds

    def _parent_cond(self, steps: list[Step], j: int, child: str, params: dict[str, Any]) -> str | None:
        if j == 0:
            return None
        nav, parent, pa = steps[j].nav, steps[j - 1], f"q{j - 1}"
        assert nav is not None
        inner = [nav.cond.format(c=child, p=pa)]
        if parent.id is not None:
            params[f"id{j - 1}"] = parent.id
            inner.append(f"{pa}.id = $id{j - 1}")
        up = self._parent_cond(steps, j - 1, pa, params)
        if up:
            inner.append(up)
        return f"EXISTS (SELECT 1 FROM {parent.es.table} {pa} WHERE {' AND '.join(inner)})"

    def _check_parents(self, cur: duckdb.DuckDBPyConnection, steps: list[Step]) -> None:
        for k in range(len(steps) - 1):
            if steps[k].id is None:
                continue
            params: dict[str, Any] = {}
            conds = self._where(steps[: k + 1], "a", params)
            row = cur.execute(f"SELECT 1 FROM {steps[k].es.table} a WHERE {' AND '.join(conds)}", params).fetchone()
            if row is None:
                raise NotFound(f"no {steps[k].es.singular} with id {steps[k].id} here")

    def _one(self, cur: duckdb.DuckDBPyConnection, steps: list[Step], es: EntitySet,
             opts: Options | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        conds = self._where(steps, "a", params)
        if opts is not None and opts.filter is not None:
            conds.append(Compiler(es, "a", params).condition(opts.filter))
        sql = f"SELECT a.* FROM {es.table} a" + (f" WHERE {' AND '.join(conds)}" if conds else "") + " LIMIT 1"
        res = cur.execute(sql, params)
        row = res.fetchone()
        if row is None:
            what = f"{es.singular} {steps[-1].id}" if steps[-1].id is not None else f"{es.singular} here"
            raise NotFound(f"no {what}")
        return dict(zip([d[0] for d in res.description], row, strict=True))

    # -- collections --------------------------------------------------------------------------------------
    def _collection(self, cur: duckdb.DuckDBPyConnection, steps: list[Step], opts: Options, base: str,
                    pairs: list[tuple[str, str]], ref: bool) -> dict[str, Any]:
        es = steps[-1].es
        params: dict[str, Any] = {}
        conds = self._where(steps, "a", params)
        comp = Compiler(es, "a", params)
        if opts.filter is not None:
            conds.append(comp.condition(opts.filter))
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        order = [f"{comp.order_key(e)} {'DESC' if d else 'ASC'} NULLS LAST" for e, d in opts.orderby] + ["a.id ASC"]
        body: dict[str, Any] = {}
        if opts.count:
            n = cur.execute(f"SELECT count(*) FROM {es.table} a{where}", params).fetchone()
            body["@iot.count"] = int(n[0]) if n else 0
        params["lim"], params["off"] = opts.top + 1, opts.skip
        res = cur.execute(f"SELECT a.* FROM {es.table} a{where} ORDER BY {', '.join(order)} "
                          f"LIMIT $lim OFFSET $off", params)
        names = [d[0] for d in res.description]
        rows = [dict(zip(names, r, strict=True)) for r in res.fetchall()]
        more = len(rows) > opts.top
        rows = rows[: opts.top]
        if more:
            body["@iot.nextLink"] = self._next_link(base, steps, pairs, opts)
        if ref:
            body["value"] = [{"@iot.selfLink": f"{base}/{es.name}({r['id']})"} for r in rows]
            return body
        entities = [self._render(es, r, base, opts) for r in rows]
        self._expand(cur, es, list(zip(rows, entities, strict=True)), opts.expand, base)
        body["value"] = entities
        return body

    def _next_link(self, base: str, steps: list[Step], pairs: list[tuple[str, str]], opts: Options) -> str:
        path = "/".join(self._step_text(s) for s in steps)
        kept = [(k, v) for k, v in pairs if k not in ("$top", "$skip")]
        kept += [("$top", str(opts.top)), ("$skip", str(opts.skip + opts.top))]
        query = "&".join(f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in kept)
        return f"{base}/{path}?{query}"

    @staticmethod
    def _step_text(step: Step) -> str:
        name = step.nav.name if step.nav else step.es.name
        return f"{name}({step.id})" if step.id is not None else name

    # -- $expand ------------------------------------------------------------------------------------------
    def _expand(self, cur: duckdb.DuckDBPyConnection, es: EntitySet, items: list[tuple[dict[str, Any], dict[str, Any]]],
                expands: list[Expand], base: str) -> None:
        if not items or not expands:
            return
        ids = [row["id"] for row, _ in items]
        for exp in expands:
            nav = es.nav(exp.nav)
            assert nav is not None
            target = SETS[nav.target]
            o = exp.options
            params: dict[str, Any] = {"ids": ids}
            comp = Compiler(target, "c", params)
            conds = ["list_contains($ids, p.id)"]
            if o.filter is not None:
                conds.append(comp.condition(o.filter))
            order = [f"{comp.order_key(e)} {'DESC' if d else 'ASC'} NULLS LAST" for e, d in o.orderby] + ["c.id ASC"]
            top = o.top if nav.many else 1
            skip = o.skip if nav.many else 0
            params["lo"], params["hi"] = skip + 1, skip + top + 1
            sql = (f"SELECT c.*, p.id AS __parent, count(*) OVER (PARTITION BY p.id) AS __count "
                   f"FROM {target.table} c JOIN {es.table} p ON {nav.cond.format(c='c', p='p')} "
                   f"WHERE {' AND '.join(conds)} "
                   f"QUALIFY row_number() OVER (PARTITION BY p.id ORDER BY {', '.join(order)}) "
                   f"BETWEEN $lo AND $hi ORDER BY __parent, row_number() OVER (PARTITION BY p.id ORDER BY "
                   f"{', '.join(order)})")
            res = cur.execute(sql, params)
            names = [d[0] for d in res.description]
            by_parent: dict[int, list[dict[str, Any]]] = {}
            counts: dict[int, int] = {}
            for r in res.fetchall():
                row = dict(zip(names, r, strict=True))
                parent = row.pop("__parent")
                counts[parent] = int(row.pop("__count"))
                by_parent.setdefault(parent, []).append(row)
            children: list[tuple[dict[str, Any], dict[str, Any]]] = []
            for prow, entity in items:
                kids = by_parent.get(prow["id"], [])
                if nav.many:
                    more = len(kids) > top
                    kids = kids[:top]
                    rendered = [self._render(target, k, base, o) for k in kids]
                    entity[nav.name] = rendered
                    if o.count:
                        entity[f"{nav.name}@iot.count"] = counts.get(prow["id"], 0)
                    if more:
                        link = f"{base}/{es.name}({prow['id']})/{nav.name}"
                        kept = [(k, v) for k, v in o.raw.items() if k not in ("$top", "$skip")]
                        kept += [("$top", str(top)), ("$skip", str(skip + top))]
                        entity[f"{nav.name}@iot.nextLink"] = link + "?" + "&".join(
                            f"{quote(k, safe='$')}={quote(v, safe='')}" for k, v in kept)
                    children += list(zip(kids, rendered, strict=True))
                elif kids:
                    rendered1 = self._render(target, kids[0], base, o)
                    entity[nav.name] = rendered1
                    children.append((kids[0], rendered1))
                entity.pop(f"{nav.name}@iot.navigationLink", None)
            self._expand(cur, target, children, o.expand, base)

    # -- JSON ---------------------------------------------------------------------------------------------
    def _render(self, es: EntitySet, row: dict[str, Any], base: str, opts: Options) -> dict[str, Any]:
        select = opts.select
        self_link = f"{base}/{es.name}({row['id']})"
        out: dict[str, Any] = {}
        if select is None or "id" in select:
            out["@iot.id"] = row["id"]
        if select is None or "selfLink" in select:
            out["@iot.selfLink"] = self_link
        for prop in es.props:
            if prop.name == "id" or (select is not None and prop.name not in select):
                continue
            if prop.kind == TIME:
                value: Any = iso(row[prop.column])
            elif prop.kind == INTERVAL:
                a, b = prop.column.split(",")
                value = f"{iso(row[a])}/{iso(row[b])}" if row[a] is not None else None
            elif prop.kind == RESULT:
                num, text = prop.column.split(",")
                value = row[num] if row[num] is not None else _json(row[text])
            elif prop.kind == JSON:
                value = _json(row[prop.column])
            else:
                value = row[prop.column]
            if value is None and prop.name in ("observedArea", "resultTime", "parameters", "properties") \
                    and es.name != "Observations":
                continue
            out[prop.name] = value
        for nav in es.navs:
            if select is None or nav.name in select:
                out[f"{nav.name}@iot.navigationLink"] = f"{self_link}/{nav.name}"
        return out

    def render_observation(self, row: dict[str, Any], base: str) -> dict[str, Any]:
        return self._render(SETS["Observations"], row, base, Options())
