"""The co-simulation's commands: ``s4g run``, ``validate``, ``report``, ``compare``, ``schema``.

:func:`register` adds them to the command line, which is assembled above every package (:mod:`s4g.cli`).
Exit codes: see :mod:`cosim.console`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cosim.console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, console, err_console, option
from cosim.durations import positive_whole_seconds
from cosim.paths import output_dir, output_file

if TYPE_CHECKING:
    from cosim.run import RunResult
    from cosim.scenario import LoadedScenario


def load_scenario(path: str, until: int | None = None, seed: int | None = None,
                  variant: str | None = None) -> LoadedScenario:
    """Load a scenario with the command line's overrides (``--until`` already parsed by :data:`DURATION`)."""
    from cosim.scenario import load

    overrides: dict[str, Any] = {}
    if until is not None:
        overrides["duration"] = until
    if seed is not None:
        overrides["seed"] = seed
    return load(path, overrides, variant=variant)


def _run_one(loaded: LoadedScenario, out: Path, args: argparse.Namespace) -> int:
    import time

    from cosim import kpi
    from cosim.kpi_format import duration
    from cosim.run import run

    sc = loaded.scenario
    variant = f" ({loaded.variant})" if getattr(loaded, "variant", None) else ""
    console.print(f"[bold]{sc.name}[/]{variant}: {duration(sc.duration)} at {duration(sc.step)} steps, "
                  f"{len(sc.sites)} sites, {len(sc.devices)} devices, {len(sc.controllers)} controllers")
    t0 = time.perf_counter()
    result = run(loaded, out, progress=not args.no_progress and console.is_terminal, report=not args.no_report)
    total_s = time.perf_counter() - t0
    if result.status == "failed":
        where = f"at step {result.steps + 1}" if result.steps else "before the first step"
        err_console.print(f"[red bold]run failed[/] {where}: {result.error}")
        if (out / "error.log").is_file():
            err_console.print(f"traceback: {out / 'error.log'}")
    elif result.kpis is not None and result.steps:
        console.print(kpi.table(result.kpis, sites=args.sites))
    console.print(_timing_line(result, out, total_s))
    console.print(f"run directory: {out}")
    page = out / "report" / "report.html"
    if page.is_file() and result.steps:
        console.print(f"report: {page}")
    if result.status == "failed":
        return EXIT_FAILED
    return EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_OK


def _timing_line(result: RunResult, out: Path, total_s: float) -> str:
    """"complete: 1440 steps (1 d simulated) in 34.5 s wall time (start-up 20.1 s, simulation 12.3 s, KPIs and
    report 2.1 s)" — start-up from meta.json, which the world builder writes when the world is built."""
    from cosim.kpi_format import duration

    meta = json.loads((out / "meta.json").read_text(encoding="utf-8")) if (out / "meta.json").is_file() else {}
    build_s = meta.get("build_s")
    sim = result.steps * meta["step_s"] if "step_s" in meta else None
    parts = []
    if build_s is not None:
        parts.append(f"start-up {duration(build_s)}")
        parts.append(f"simulation {duration(max(result.wall_s - build_s, 0.0))}")
    parts.append(f"KPIs and report {duration(max(total_s - result.wall_s, 0.0))}")
    simulated = f" ({duration(sim)} simulated)" if sim else ""
    return f"{result.status}: {result.steps} steps{simulated} in {duration(total_s)} wall time ({', '.join(parts)})"


def run_dir_option(out: str | None, loaded: LoadedScenario, suffix: str = "") -> Path:
    """``--out``, or ``runs/<name>-<timestamp><suffix>``, checked now: a path that cannot be written to is
    exit code 2 before the run, not a traceback after it."""
    from cosim.run import default_run_dir

    if out:
        return output_dir(out, "--out")
    default = default_run_dir(loaded)
    return output_dir(default.with_name(default.name + suffix), "the run directory")


def cmd_run(args: argparse.Namespace) -> int:
    if args.variant != "all":
        loaded = load_scenario(args.scenario, args.until, args.seed, args.variant)
        return _run_one(loaded, run_dir_option(args.out, loaded), args)
    base = load_scenario(args.scenario, args.until, args.seed)
    if not base.variants:
        err_console.print(f"{args.scenario}: the file defines no variants")
        return EXIT_INVALID
    # validate every variant before running any: a typo in the last one should not cost the first runs
    variants = [load_scenario(args.scenario, args.until, args.seed, v) for v in base.variants]
    from cosim import compare

    root = run_dir_option(args.out, base)
    dirs = [root / cast(str, v.variant) for v in variants]  # each was loaded by its variant's name
    for loaded, out in zip(variants, dirs):
        code = _run_one(loaded, out, args)
        if code != EXIT_OK:
            return code
    console.print(compare.rich_table(compare.table(dirs)))
    console.print(f"compare again or plot: s4g compare {' '.join(str(d) for d in dirs)}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = load_scenario(args.scenario)
    sc = loaded.scenario
    for variant in loaded.variants:  # every variant must be runnable too
        load_scenario(args.scenario, variant=variant)
    variants = f"; variants: {', '.join(loaded.variants)}" if loaded.variants else ""
    console.print(f"{args.scenario}: valid ({sc.name}: {sc.steps} steps of {sc.step} s, {len(sc.sites)} sites, "
                  f"{len(sc.devices)} devices, {len(sc.controllers)} controllers{variants})")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from cosim import compare

    run_dirs = [Path(d) for d in args.run_dirs]
    missing = [str(d) for d in run_dirs if not (d / "meta.json").is_file()]
    if missing:
        err_console.print(f"not run directories (no meta.json): {', '.join(missing)}")
        return EXIT_INVALID
    plot_path = output_file(args.plot or run_dirs[0].parent / "comparison.png", "--plot")
    if args.markdown:
        output_file(args.markdown, "--markdown")
    if args.readme and not Path(args.readme).is_file():
        err_console.print(f"--readme {args.readme}: no such file (expected a README with the compare markers)")
        return EXIT_INVALID
    table = compare.table(run_dirs)
    console.print(compare.rich_table(table))
    plot = compare.plot(run_dirs, plot_path)
    console.print(f"comparison plot: {plot}")
    if args.markdown:
        Path(args.markdown).write_text(compare.markdown(table), encoding="utf-8")
    if args.readme:
        compare.update_readme(Path(args.readme), compare.markdown(table))
        console.print(f"updated the comparison block in {args.readme}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from cosim import kpi, report

    run_dir = Path(args.run_dir)
    if not (run_dir / "meta.json").is_file():
        err_console.print(f"{run_dir}: not a run directory (no meta.json)")
        return EXIT_INVALID
    baseline = Path(args.baseline) if args.baseline else None
    if baseline is not None and not (baseline / "meta.json").is_file():
        err_console.print(f"--baseline {baseline}: not a run directory (no meta.json)")
        return EXIT_INVALID
    path = report.render(run_dir, baseline=baseline, static=args.static)
    kpis = kpi.read(run_dir)
    console.print(kpi.table(kpis, wall_time_s=kpis["run"].get("wall_time_s"), sites=args.sites))
    if args.static:
        console.print(f"static figures (PNG and SVG): {path.parent}")
    console.print(f"report: {path}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    if args.study:
        from cosim.study.spec import json_schema
    else:
        from cosim.scenario import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.out:
        output_file(args.out, "--out").write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return EXIT_OK


#: ``--until``/``--step``: the one duration grammar, whole seconds > 0
DURATION = option(positive_whole_seconds)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="run a scenario offline and print its KPIs")
    p.add_argument("scenario")
    p.add_argument("--until", type=DURATION, help="override the duration, e.g. 7d, 12h")
    p.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--variant", help="run one of the file's variants, or 'all' (one run directory each)")
    p.add_argument("--sites", action="store_true", help="also print the KPIs of every site")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a scenario file")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="re-render KPIs and the report from a run directory alone")
    p.add_argument("run_dir")
    p.add_argument("--baseline", help="run directory whose KPIs stand beside this run's (default: the sibling "
                                      "run of the scenario's 'baseline' variant, when there is one)")
    p.add_argument("--static", action="store_true", help="also write the figures as PNG and SVG (for papers)")
    p.add_argument("--sites", action="store_true", help="also print the KPIs of every site")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("compare", help="KPIs of several run directories side by side, and a comparison plot")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--plot", help="PNG path (default: comparison.png next to the first run directory)")
    p.add_argument("--markdown", help="also write the table as Markdown to this file")
    p.add_argument("--readme", help="replace the table between <!-- compare:start --> and <!-- compare:end -->")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("schema", help="print the JSON Schema of the scenario format (or of studies: --study)")
    p.add_argument("--out")
    p.add_argument("--study", action="store_true", help="the schema of study files instead")
    p.set_defaults(func=cmd_schema)
