"""``s4g study STUDY.yaml [--workers N | --scheduler tcp://HOST:8786 | --workers 0] [--resume] [--out DIR]``.

:func:`register` adds the command; :mod:`s4g.cli` assembles it with the others. Exit codes as every command:
0 done, 1 some variants failed, 2 invalid study or output directory, 130 interrupted (the directory resumes).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from cosim.console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_INVALID, EXIT_OK, console, err_console, option
from cosim.paths import output_dir

_SCHEDULER = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/]+(:\d{1,5})?/?$")


def _workers(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 512:
        raise ValueError("expected 0..512 (0 = in this process, no Dask)")
    return n


def _scheduler(text: str) -> str:
    if not _SCHEDULER.match(text):
        raise ValueError("expected a Dask scheduler address such as tcp://10.0.0.5:8786")
    return text


def cmd_study(args: argparse.Namespace) -> int:
    from cosim.study import StudyRunner, load
    from cosim.study.store import StudyDirError

    loaded = load(args.study)
    out = output_dir(args.out or Path("studies") / "out" / loaded.study.name, "--out")
    workers = 0 if args.workers == 0 else (args.workers or 1)
    where = f"scheduler {args.scheduler}" if args.scheduler else (
        "in this process" if workers == 0 else f"{workers} local Dask worker(s)")
    console.print(f"[bold]study {loaded.study.name}[/]: {len(loaded.study.axes)} axes, "
                  f"{'search on ' + loaded.study.search.axis if loaded.study.search else loaded.study.plan.kind} "
                  f"-> {out} ({where})")
    try:
        runner = StudyRunner(loaded, out, workers=workers, scheduler=args.scheduler, resume=args.resume)
        status = runner.run(progress=not args.no_progress and console.is_terminal)
    except StudyDirError as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        return EXIT_INVALID
    console.print(f"{status.state}: {status.done} done, {status.failed} failed, {status.cached} reused, "
                  f"{status.lost} lost, {status.cancelled} cancelled; table: {out / 'table.parquet'}, "
                  f"report: {out / 'report.html'}")
    if status.state == "interrupted":
        console.print(f"complete it with: s4g study {args.study} --out {out} --resume")
        return EXIT_INTERRUPTED
    return EXIT_FAILED if status.failed or status.lost else EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("study", help="run a study: many variants of a scenario on Dask, one table and report")
    p.add_argument("study", help="study file (YAML)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=option(_workers), default=None,
                       help="local Dask worker processes (default 1; 0 = in this process, no Dask)")
    where.add_argument("--scheduler", type=option(_scheduler), help="an existing Dask scheduler, tcp://HOST:8786")
    p.add_argument("--resume", action="store_true", help="complete an interrupted study directory")
    p.add_argument("--out", help="study directory (default studies/out/<name>)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_study)
