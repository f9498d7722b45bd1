"""Run every benchmark and print one table: `python -m benchmarks [--quick] [--only NAME ...] [--json FILE]`.

Each module in this package with a ``run(quick: bool) -> list[dict]`` is a benchmark; its rows carry the
figure, our value, the baseline measured in the same run, the ratio, the goal and whether it is met. The
table is also written as JSON (default benchmarks/results/latest.json) so runs can be compared over time.
Timings are figures, never pass/fail: CI runs `--quick` only to check that the benchmarks still run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path

from benchmarks.common import markdown_rows, print_rows

HERE = Path(__file__).parent
NOT_BENCHMARKS = {"common", "__main__"}


def discover() -> list[str]:
    names = []
    for info in pkgutil.iter_modules([str(HERE)]):
        if info.name in NOT_BENCHMARKS or info.ispkg:
            continue
        names.append(info.name)
    return sorted(names)


def _write(out: Path, quick: bool, rows: list[dict], failures: list[str], elapsed_s: float) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "quick": quick,
        "elapsed_s": round(elapsed_s, 1),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "rows": rows,
        "failed": failures,
    }, indent=1, default=float))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds per benchmark")
    parser.add_argument("--only", nargs="*", help="benchmark module names (default: all)")
    parser.add_argument("--json", default=str(HERE / "results" / "latest.json"))
    parser.add_argument("--markdown", metavar="JSON", help="print the table of an earlier run as Markdown and exit")
    args = parser.parse_args(argv)
    if args.markdown:
        data = json.loads(Path(args.markdown).read_text())
        print(f"{'quick' if data['quick'] else 'full'} run of {data['when']}, {data['machine']['cores']} cores, "
              f"Python {data['machine']['python']}, {data.get('elapsed_s', 0) / 60:.0f} minutes\n")
        print(markdown_rows(data["rows"]))
        return 0

    names = args.only or discover()
    rows: list[dict] = []
    failures: list[str] = []
    out = Path(args.json)
    started = time.perf_counter()
    for name in names:
        module = importlib.import_module(f"benchmarks.{name}")
        if not hasattr(module, "run"):
            continue
        t0 = time.perf_counter()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        try:
            for r in module.run(quick=args.quick):
                rows.append({"benchmark": name, **r})
        except Exception:  # one broken benchmark must not hide the others' figures
            failures.append(name)
            traceback.print_exc()
        print(f"   {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        # after every module: a long run keeps what it measured
        _write(out, args.quick, rows, failures, time.perf_counter() - started)
    print_rows(rows, title=f"benchmarks ({'quick' if args.quick else 'full'}, {os.cpu_count()} cores)")
    print(f"written: {out}")
    if failures:
        print(f"benchmarks that failed to run: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
