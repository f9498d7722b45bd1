"""The ``s4g`` command line.

Exit codes: 0 success, 1 a run failed, 2 the scenario (or another input) is invalid, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from rich.console import Console

# Piped output (CI logs, files) gets a wide console so KPI tables do not wrap.
console = Console(soft_wrap=True, width=None if Console().is_terminal else 160)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130


def _load(path: str, until: str | None = None, seed: int | None = None, variant: str | None = None):
    from cosim.scenario import load, parse_duration

    overrides = {}
    if until is not None:
        overrides["duration"] = parse_duration(until)
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


def cmd_run(args: argparse.Namespace) -> int:
    from cosim.run import default_run_dir

    if args.variant != "all":
        loaded = _load(args.scenario, args.until, args.seed, args.variant)
        return _run_one(loaded, Path(args.out) if args.out else default_run_dir(loaded), args)
    base = _load(args.scenario, args.until, args.seed)
    if not base.variants:
        err_console.print(f"{args.scenario}: the file defines no variants")
        return EXIT_INVALID
    # validate every variant before running any: a typo in the last one should not cost the first runs
    variants = [_load(args.scenario, args.until, args.seed, v) for v in base.variants]
    from cosim import compare

    root = Path(args.out) if args.out else default_run_dir(base)
    for loaded in variants:
        code = _run_one(loaded, root / loaded.variant, args)
        if code != EXIT_OK:
            return code
    console.print(compare.rich_table(compare.table([root / v.variant for v in variants])))
    console.print(f"compare again or plot: s4g compare {' '.join(str(root / v.variant) for v in variants)}")
    return EXIT_OK


def cmd_validate(args: argparse.Namespace) -> int:
    loaded = _load(args.scenario)
    sc = loaded.scenario
    for variant in loaded.variants:  # every variant must be runnable too
        _load(args.scenario, variant=variant)
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
    table = compare.table(run_dirs)
    console.print(compare.rich_table(table))
    plot = compare.plot(run_dirs, Path(args.plot) if args.plot else run_dirs[0].parent / "comparison.png")
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


def cmd_forecast(args: argparse.Namespace) -> int:
    """Forecast MAE per site of the forecasters PROFESS and GESSCon can use, replayed on a run's load series."""
    import json as _json

    from rich.table import Table

    from controllers.forecast import block_means, site_forecast_mae
    from cosim.rundir import read_meta, read_table
    from cosim.scenario import parse_duration

    run_dir = Path(args.run_dir)
    sites = read_table(run_dir, "sites") if (run_dir / "meta.json").is_file() else None
    if sites is None:
        err_console.print(f"{run_dir}: no sites table (not a run directory?)")
        return EXIT_INVALID
    meta = read_meta(run_dir)
    step = parse_duration(args.step)
    if step % meta["step_s"]:
        err_console.print(f"--step {step} s must be a multiple of the run's step ({meta['step_s']} s)")
        return EXIT_INVALID
    factor = step // meta["step_s"]
    realised = {c.rsplit(".", 1)[0]: block_means(v, factor) for c, v in sites.columns.items()
                if c.endswith(".load_p_w")}
    days = len(sites.t_s) * meta["step_s"] / 86400
    if days < 2:
        err_console.print(f"{run_dir}: {days:.2g} d recorded; forecasts need at least 2 days (one to learn from)")
        return EXIT_INVALID
    table = Table(title=f"load forecast MAE per site (W), {step // 60} min steps, 24 h horizon, after day 1")
    table.add_column("site")
    methods = ("persistence", "seasonal_naive", "ridge")
    for m in methods:
        table.add_column(m, justify="right")
    scores = {m: site_forecast_mae(realised, step, m, warmup_s=86400) for m in methods}
    out = {}
    for site in realised:
        table.add_row(site, *(f"{scores[m][site].mae:.0f}" for m in methods))
        out[site] = {m: scores[m][site].mae for m in methods}
    console.print(table)
    (run_dir / "forecast_mae.json").write_text(_json.dumps(out, indent=1), encoding="utf-8")
    console.print(f"written: {run_dir / 'forecast_mae.json'}")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from cosim.scenario import json_schema

    text = json.dumps(json_schema(), indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="s4g", description="S4G hardware-in-the-loop co-simulation")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="run a scenario offline and print its KPIs")
    p.add_argument("scenario")
    p.add_argument("--until", help="override the duration, e.g. 7d, 12h")
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

    p = sub.add_parser("forecast", help="forecast MAE per site of the controllers' forecasters, from a run")
    p.add_argument("run_dir")
    p.add_argument("--step", default="15min", help="forecast step (default 15min)")
    p.set_defaults(func=cmd_forecast)

    p = sub.add_parser("schema", help="print the JSON Schema of the scenario format")
    p.add_argument("--out")
    p.set_defaults(func=cmd_schema)
    # listed for --help; main() hands everything after it to `python -m benchmarks`
    sub.add_parser("bench-perf", help="run the performance benchmarks (same as python -m benchmarks)",
                   add_help=False)

    from cosim import device_cli

    device_cli.register(sub)
    from hil_bench import cli as bench_cli

    bench_cli.register(sub)
    from cosim.security import cli as pki_cli

    pki_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cosim.scenario import ScenarioError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-perf"]:
        from benchmarks.__main__ import main as bench_main

        return bench_main(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except ScenarioError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        return EXIT_INVALID
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
