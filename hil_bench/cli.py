"""``s4g bench run|check|stop``: the bench operator's commands.

* ``s4g bench check SCENARIO`` -- connect to every device that is not virtual and print reachable, identity,
  setpoints and round trip; exit 2 if one does not answer.
* ``s4g bench run SCENARIO [--rt-factor F] [--out DIR] [--until D] [--monitor-port N | --no-monitor]`` -- the
  scenario against the wall clock; refuses to start (exit 2) unless every real device answers; Ctrl-C or
  SIGTERM = emergency stop (every device to its safe state, then exit 130).
* ``s4g bench stop [RUN_DIR]`` -- emergency stop of a running bench (default: the one running under runs/).

Exit codes as ``s4g run``: 0 complete, 1 failed (or stopped by the late-step policy), 2 invalid scenario or
unreachable device, 130 emergency stop / interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.commands import DURATION, load_scenario, run_dir_option
from cosim.console import EXIT_FAILED, EXIT_INVALID, EXIT_OK, console, err_console
from devices.serving import port, positive


def cmd_check(args: argparse.Namespace) -> int:
    from hil_bench.check import table
    from hil_bench.run import BenchRuntime

    loaded = load_scenario(args.scenario)
    runtime = BenchRuntime(loaded, Path("."), progress=False)
    results = runtime.check(arm=False)
    hosted = [p for p in runtime.plans.values() if p.kind == "hosted"]
    sims = [p.id for p in runtime.plans.values() if p.kind == "sim"]
    console.print(table(results, hosted))
    if sims:
        console.print(f"simulated in-process (sim://): {', '.join(sims)}")
    bad = [r for r in results if not r.reachable]
    if bad:
        console.print(f"[red]{len(bad)} device(s) not reachable[/]: a bench run would refuse to start")
        return EXIT_INVALID
    console.print(f"all {len(results)} device(s) that are not virtual answer")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from cosim import kpi
    from hil_bench.check import table
    from hil_bench.run import BenchRefused, BenchRuntime

    loaded = load_scenario(args.scenario, args.until)
    out = run_dir_option(args.out, loaded, "-bench")
    runtime = BenchRuntime(loaded, out, rt_factor=args.rt_factor, monitor=False if args.no_monitor else None,
                           monitor_port=args.monitor_port, progress=not args.no_progress and console.is_terminal,
                           echo=console.print)
    sc, spec = loaded.scenario, runtime.spec
    kinds = {k: sum(p.kind == k for p in runtime.plans.values()) for k in ("real", "hosted", "replay", "sim")}
    console.print(f"[bold]{sc.name}[/] on the bench: {sc.steps} steps of {sc.step} s at real-time factor "
                  f"{spec.rt_factor:g} (cycle {spec.cycle_s(sc.step) * 1000:g} ms), devices: "
                  + ", ".join(f"{n} {k}" for k, n in kinds.items() if n) + f" -> {out}")
    try:
        result = runtime.run(report=not args.no_report)
    except BenchRefused as exc:
        console.print(table(exc.checks))
        err_console.print(f"[red]{exc}[/]")
        return EXIT_INVALID
    if result.kpis is not None:
        console.print(kpi.table(result.kpis, wall_time_s=result.wall_s))
    t = result.timing
    lat, rtt = t["lateness"], t["write_roundtrip"]
    console.print(f"lateness p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; "
                  f"{t['late_steps']} of {lat['n']} paced steps later than {t['tolerance_ms']} ms (after "
                  f"{t['warmup_steps']} warm-up steps), {t['skipped_steps']} skipped; setpoint round trip p50 "
                  f"{rtt['p50_ms']} ms, p99 {rtt['p99_ms']} ms")
    console.print(f"{result.status}: {result.steps} steps in {result.wall_s:.2f} s wall time; run directory: {out}")
    if result.stop_reason:
        console.print(f"stopped: {result.stop_reason}")
    if result.error:
        err_console.print(f"[red]run failed:[/] {result.error}")
    return result.exit_code


def cmd_stop(args: argparse.Namespace) -> int:
    from hil_bench.control import find_running, request_stop

    base = Path(args.run_dir) if args.run_dir else Path("runs")
    running = find_running(base)
    if not running:
        err_console.print(f"no running bench under {base}")
        return EXIT_INVALID
    if len(running) > 1 and not args.all:
        err_console.print("several benches are running; name one or give --all: " + ", ".join(map(str, running)))
        return EXIT_INVALID
    code = EXIT_OK
    for run_dir in running:
        try:
            reply = request_stop(run_dir)
        except (FileNotFoundError, ProcessLookupError) as exc:
            err_console.print(str(exc))
            code = EXIT_FAILED
            continue
        safe = reply.get("safe") or {}
        if reply["via"] == "http":
            console.print(f"{run_dir}: emergency stop; safe states: "
                          + (", ".join(f"{d} {r}" for d, r in safe.items()) or "no protocol device"))
            code = code if all(r == "ok" for r in safe.values()) else EXIT_FAILED
        else:
            console.print(f"{run_dir}: control endpoint did not answer; sent SIGTERM to process {reply['pid']}")
    return code


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="hardware-in-the-loop bench: real-time runs with real devices")
    bsub = bench.add_subparsers(dest="bench_command", required=True)

    p = bsub.add_parser("run", help="run a scenario against the wall clock (real and virtual devices)")
    p.add_argument("scenario")
    p.add_argument("--rt-factor", type=positive, help="wall seconds per simulated second (overrides bench.rt_factor)")
    p.add_argument("--out", help="run directory (default runs/<name>-<timestamp>-bench)")
    p.add_argument("--until", type=DURATION, help="override the duration, e.g. 30min")
    p.add_argument("--monitor-port", type=port, help="port of the live monitor (0 = any free port)")
    p.add_argument("--no-monitor", action="store_true", help="no live monitor and no broker traffic")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true")
    p.set_defaults(func=cmd_run)

    p = bsub.add_parser("check", help="reach every device that is not virtual and print what it is")
    p.add_argument("scenario")
    p.set_defaults(func=cmd_check)

    p = bsub.add_parser("stop", help="emergency stop: every device of a running bench to its safe state")
    p.add_argument("run_dir", nargs="?", help="run directory of the bench (default: the one running under runs/)")
    p.add_argument("--all", action="store_true", help="stop every bench running under runs/")
    p.set_defaults(func=cmd_stop)
