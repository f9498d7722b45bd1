"""``s4g api [--host H] [--port P] [--users FILE]``: the DSF-SE API, study jobs and the Professional GUI in one
server; :func:`register` adds the command to the command line assembled in :mod:`s4g.cli`."""

from __future__ import annotations

import argparse
from pathlib import Path

from cosim.console import EXIT_INVALID, EXIT_OK, console, err_console, option


def _count(text: str) -> int:
    n = int(text)
    if not 0 <= n <= 64:
        raise ValueError("expected 0..64")
    return n


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from cosim.api.app import create_api_app
    from cosim.api.jobs import REPO_SCENARIOS, Limits, Registry
    from cosim.sta.server import tcp_listener

    if not _loopback(args.host) and not args.users:
        err_console.print(f"--host {args.host}: beyond this machine the API needs a login (--users FILE; "
                          "docs/api.md)", markup=False)
        return EXIT_INVALID
    if bool(args.tls_cert) != bool(args.tls_key):
        err_console.print("--tls-cert and --tls-key go together", markup=False)
        return EXIT_INVALID
    if not _loopback(args.host) and not args.tls_cert:
        err_console.print("warning: no TLS: passwords and session cookies cross the network in clear "
                          "(--tls-cert/--tls-key)", markup=False)
    roots = [Path(p) for p in (args.scenarios or [])] or [REPO_SCENARIOS]
    missing = [str(r) for r in roots if not r.is_dir()]
    if missing:
        err_console.print(f"--scenarios: no such folder: {', '.join(missing)}", markup=False)
        return EXIT_INVALID
    limits = Limits(max_running_simulations=max(args.max_runs, 1), study_workers=args.study_workers,
                    max_running_jobs_per_user=max(args.max_jobs_per_user, 1),
                    study_scheduler=args.study_scheduler)
    registry = Registry(folder=Path(args.data) if args.data else None, scenario_roots=roots, limits=limits)
    audit = registry.folder / "audit.jsonl" if args.users else None  # type: ignore[operator]
    app = create_api_app(registry, users=args.users, audit_log=audit)
    try:  # bound before the line is printed: what it says is reachable, and --port 0 names the port it got
        sock = tcp_listener(args.host, args.port)
    except OSError as exc:  # the port is taken or not ours to bind
        registry.close()
        err_console.print(f"cannot serve on {args.host}:{args.port}: {exc}", markup=False)
        return EXIT_INVALID
    scheme = "https" if args.tls_cert else "http"
    host, port = sock.getsockname()[:2]
    console.print(f"Professional GUI: {scheme}://{host}:{port}/   DSF-SE API: /se   studies: /api   "
                  "OpenAPI: /openapi.json", soft_wrap=True)
    config = uvicorn.Config(app, log_level="warning", ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        registry.close()
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("api", help="the DSF-SE simulation API, study jobs and the Professional GUI")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=option(int), default=8000)
    p.add_argument("--users", help="users file of the login (JSON); without it everyone is the local engineer")
    p.add_argument("--scenarios", action="append",
                   help="a folder of base scenarios studies may name (repeatable; default: the repository's)")
    p.add_argument("--data", help="folder for uploaded grids and study directories (default: a temporary one)")
    p.add_argument("--study-workers", type=option(_count), default=0,
                   help="Dask worker processes of the one LocalCluster studies share (default 0: in this process)")
    p.add_argument("--study-scheduler", help="run studies on this Dask scheduler (tcp://HOST:8786) instead")
    p.add_argument("--max-runs", type=option(_count), default=2, help="simulations running at once (default 2)")
    p.add_argument("--max-jobs-per-user", type=option(_count), default=2,
                   help="simulations + studies one user runs at once (default 2; 429 with Retry-After beyond)")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; e.g. one issued by s4g pki issue)")
    p.add_argument("--tls-key", help="the certificate's private key (PEM)")
    p.set_defaults(func=cmd_api)
