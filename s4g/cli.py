"""``s4g``: assembles the commands of every package into one command line (see :mod:`s4g`).

Exit codes (:mod:`cosim.console`): 0 success, 1 a run failed, 2 the scenario or another input is invalid,
130 interrupted. An invalid input never ends in a traceback: option values are checked by argparse types,
scenario files by :mod:`cosim.scenario` (ScenarioError), output paths by :mod:`cosim.paths`.
"""

from __future__ import annotations

import argparse
import logging
import sys

from cosim import commands
from cosim.api import cli as api_cli
from cosim.study import cli as study_cli
from cosim.console import EXIT_INTERRUPTED, EXIT_INVALID, err_console
from cosim.sta import commands as sta_commands
from cosim.security import cli as pki_cli
from hil_bench import cli as bench_cli
from s4g import device, forecast


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``argv``, only what parsing that command line needs."""
    parser = argparse.ArgumentParser(prog="s4g", description="S4G hardware-in-the-loop co-simulation")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)
    commands.register(sub)
    forecast.register(sub)
    study_cli.register(sub)
    # listed for --help; main() hands everything after it to `python -m benchmarks`
    sub.add_parser("bench-perf", help="run the performance benchmarks (same as python -m benchmarks)",
                   add_help=False)
    command = next((a for a in argv if not a.startswith("-")), None) if argv is not None else None
    device.register(sub, families=command in (None, "device"))
    bench_cli.register(sub)
    sta_commands.register(sub)
    pki_cli.register(sub)
    api_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from cosim.paths import OutputPathError
    from cosim.scenario import ScenarioError

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench-perf"]:
        from benchmarks.__main__ import main as bench_main

        return bench_main(argv[1:])
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (ScenarioError, OutputPathError) as exc:
        err_console.print(str(exc), markup=False, highlight=False)
        return EXIT_INVALID
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
