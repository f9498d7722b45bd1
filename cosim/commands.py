"""The co-simulation's commands: ``s4g run``, ``validate``, ``report``, ``compare``, ``schema``.

:func:`register` adds them to the command line, which is assembled above every package (:mod:`s4g.cli`).
Exit codes: see :mod:`cosim.console`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosim.console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, console, err_console, option
from cosim.durations import positive_whole_seconds
from cosim.paths import output_dir, output_file


def load_scenario(path: str, until: int | None = None, seed: int | None = None, variant: str | None = None):
    """Load a scenario with the command line's overrides (``--until`` already parsed by :data:`DURATION`)."""
    from cosim.scenario import load

    overrides: dict = {}
    if until is not None:
        overrides["duration"] = until
    if seed is not None:
        overrides["seed"] = seed
    return load(path, overrides, variant=variant)


def _run_one(loaded, out: Path, args: argparse.Namespace) -> int:
    from cosim import kpi
    from cosim.run import run

    sc = loaded.scenario
    console.print(f"[bold]{sc.name}[/]: {sc.duration / 86400:g} d at {sc.step} s steps, {len(sc.sites)} sites, "
                  f"{len(sc.devices)} devices -> {out}")
    result = run(loaded, out, progress=not args.no_progress and console.is_terminal, report=not args.no_report)
    if result.kpis is not None:
        console.print(kpi.table(result.kpis, wall_time_s=result.wall_s, sites=not args.variant))
    sim_days = result.steps * sc.step / 86400
    console.print(f"{result.status}: {result.steps} steps ({sim_days:.3g} d simulated) in {result.wall_s:.2f} s "
                  f"wall time; run directory: {out}")
    if result.status == "failed":
        err_console.print(f"[red]run failed:[/] {result.error}")
        return EXIT_FAILED
    return EXIT_INTERRUPTED if result.status == "interrupted" else EXIT_OK


def run_dir_option(out: str | None, loaded, suffix: str = "") -> Path:
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
    for loaded in variants:
        code = _run_one(loaded, root / loaded.variant, args)
        if code != EXIT_OK:
            return code
    console.print(compare.rich_table(compare.table([root / v.variant for v in variants])))
    console.print(f"compare again or plot: s4g compare {' '.join(str(root / v.variant) for v in variants)}")
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
    kpis = kpi.compute(run_dir)
    path = report.render(run_dir)
    wall = json.loads((run_dir / "run.json").read_text()).get("wall_s") if (run_dir / "run.json").is_file() else None
    console.print(kpi.table(kpis, wall_time_s=wall))
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a scenario offline and print its KPIs")
    p.add_argument("scenario")
    p.add_argument("--until", type=DURATION, help="override the duration, e.g. 7d, 12h")
    p.add_argument("--out", help="run directory (default runs/<name>-<timestamp>)")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--variant", help="run one of the file's variants, or 'all' (one run directory each)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check a scenario file")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("report", help="re-render KPIs and the report from a run directory alone")
    p.add_argument("run_dir")
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
