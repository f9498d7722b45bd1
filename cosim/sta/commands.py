"""``s4g sta serve RUN_DIR… [--port P]`` and ``s4g dwh load RUN_DIR [--url URL]``; :func:`register` adds them to
the command line assembled in :mod:`s4g.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.console import EXIT_INVALID, EXIT_OK, console, err_console


def cmd_sta_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cosim.gui.app import create_gui_app
    from cosim.sta.store import Store

    store = Store()
    for run_dir in args.run_dirs:
        try:
            name = store.add_run(run_dir)
        except (FileNotFoundError, ValueError) as exc:
            err_console.print(f"{run_dir}: {exc}", markup=False)
            return EXIT_INVALID
        console.print(f"loaded {run_dir} as run {name!r}")
    app = create_gui_app(store, users=args.users)
    console.print(f"SensorThings API: http://{args.host}:{args.port}/v1.1  (GUIs: /gui/home, /gui/tech)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    except OSError as exc:  # the port is taken or not ours to bind
        err_console.print(f"cannot serve on {args.host}:{args.port}: {exc}", markup=False)
        return EXIT_INVALID
    return EXIT_OK


def cmd_dwh_load(args: argparse.Namespace) -> int:
    from cosim.dwh.postgres import Warehouse, WarehouseUnavailable

    if not (Path(args.run_dir) / "sensorthings" / "entities.json").exists():
        err_console.print(f"{args.run_dir}: no sensorthings/ folder (run a scenario with telemetry:)", markup=False)
        return EXIT_INVALID
    try:
        with Warehouse(args.url) as wh:
            name, inserted = wh.load_run(args.run_dir, name=args.name)
            total = wh.count(name)
    except WarehouseUnavailable as exc:
        err_console.print(f"warehouse not reachable: {exc}", markup=False)
        return EXIT_INVALID
    console.print(f"run {name!r}: {inserted} observations inserted, {total} in the warehouse")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sta = sub.add_parser("sta", help="the SensorThings API server").add_subparsers(dest="sta_command", required=True)
    p = sta.add_parser("serve", help="serve finished run directories at /v1.1 (and the GUIs at /gui)")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--users", help="users file of the GUIs' login (JSON); without it the GUIs need no login")
    p.set_defaults(func=cmd_sta_serve)

    dwh = sub.add_parser("dwh", help="the PostgreSQL data warehouse").add_subparsers(dest="dwh_command", required=True)
    p = dwh.add_parser("load", help="load a finished run's observations (COPY; loading again adds nothing)")
    p.add_argument("run_dir")
    p.add_argument("--url", help="postgresql://user@host:port/db (default $S4G_DWH_URL, else the local server)")
    p.add_argument("--name", help="the run's name in the warehouse (default: the directory name)")
    p.set_defaults(func=cmd_dwh_load)
