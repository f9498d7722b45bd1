"""The study table: one flat row per finished variant -- axes, KPIs, targets met, economics -- and the search
results (one row per combination of the other axes)."""

from __future__ import annotations

from typing import Any



def flat_rows(runner: Any) -> list[dict[str, Any]]:
    study = runner.study
    rows = []
    for vid in runner.order or list(runner.results):
        res = runner.results.get(vid)
        if res is None:
            continue
        kpis = res.get("kpis") or {}
        row: dict[str, Any] = {"variant": vid, "origin": res.get("origin", "plan"), "status": res["status"],
                               "error": res.get("error")}
        row |= {a.name: res["axes"].get(a.name) for a in study.axes}
        row |= kpis
        verdicts = []
        for t in study.targets:
            ok = t.met(kpis.get(t.kpi)) if res["status"] == "complete" else None
            row[f"target.{t.name}"] = ok
            verdicts.append(ok)
        if study.targets:
            row["targets_met"] = None if any(v is None for v in verdicts) else all(verdicts)
        row["wall_s"] = res.get("wall_s")
        row["run_s"] = res.get("run_s")
        rows.append(row)
    if study.economics is not None:
        _economics(runner, rows)
    return rows


def _economics(runner: Any, rows: list[dict[str, Any]]) -> None:
    from cosim.study import economics as eco
    from cosim.study.post import assumptions, economics_case
    from cosim.study.selectors import selected
    from cosim.study.variants import document, economic_overrides

    spec = runner.study.economics.model_dump()
    cases: dict[str, tuple[Any, Any]] = {}
    for row in rows:
        if row["status"] != "complete":
            continue
        v = runner.variants.get(row["variant"])
        if v is None:
            continue
        doc = document(runner.ls, runner.base, v)
        ruls = [x for k, x in row.items() if k.startswith("lifetime.") and k.endswith(".rul_years") and x]
        a = assumptions(spec | economic_overrides(runner.ls, v), doc, min(ruls) if ruls else None)
        case = economics_case(doc, row, spec, breaks_grid=row.get("targets_met") is False)
        cases[row["variant"]] = (case, a)
        costs = eco.tco(case, a)
        row |= {"eco.case": case.kind, "eco.strengthening": case.strengthening,
                "eco.tco_dso_eur": costs["dso"], "eco.tco_households_eur": costs["households"],
                "eco.tco_community_eur": costs["community"]}
    ref = spec.get("reference")
    econ_axes = {a.name for a in runner.study.axes if any(k.startswith("economics.") for k in a.keys)}
    for row in rows:
        if row["variant"] not in cases or not ref:
            continue
        v = runner.variants[row["variant"]]
        # the reference under the same economic assumptions (same values of the economics.* axes)
        want = dict(ref) | {k: v.axes[k] for k in econ_axes if k not in ref}
        ref_id = next((vid for vid in cases if selected([want], runner.variants[vid])), None)
        if ref_id is not None:
            case, a = cases[row["variant"]]
            row |= {f"eco.{k}": x for k, x in eco.versus(case, cases[ref_id][0], a).items()}


def search_rows(runner: Any) -> list[dict[str, Any]]:
    s = runner.study.search
    out = []
    for b in runner.searches:
        probes = sorted(b.met.items())
        out.append({**b.combo, f"{s.find}_{s.axis}": b.answer, "done": b.done, "reason": b.reason,
                    "probes": len(probes), "tolerance": s.tolerance,
                    "probed": ", ".join(f"{x:g}:{'yes' if m else 'no' if m is False else 'failed'}"
                                        for x, m in probes)})
    return out


__all__ = ["flat_rows", "search_rows"]
