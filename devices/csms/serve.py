"""Run our CSMS stand-alone and print the charge points that connect and their state.

``s4g device serve csms [--host 127.0.0.1] [--port 9000] [--ids CP_1,CP_2] [--upstream ws://legacy/]
[--every 10] [--duration S]``. Without ``--ids`` any charge point id is admitted (OCPP 1.6J and 2.0.1, by
subprotocol); with ``--upstream`` the admitted stations are proxied to a legacy CSMS. Boots, status changes
and transactions are printed as they happen, and a table of all stations every ``--every`` seconds.

Security (docs/security.md): ``--security-profile 1`` checks HTTP Basic auth against ``--passwords FILE`` (a
JSON object charge point id -> password); ``2`` adds TLS (``--tls-pki DIR``, server certificate ``csms``);
``3`` requires client certificates named after the charge point instead of passwords. On a non-loopback
``--host`` the CSMS refuses to start without TLS unless ``--insecure`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import time

from pathlib import Path

from devices import serve_security
from devices.serving import duration_s, identity, port, run_served, step_s, websocket_url
from devices.wallbox import proxy
from devices.wallbox.csms import CsmsServer
from devices.wallbox.security import PROFILES, CsmsSecurity, OcppSecurityError, check_password
from devices.wire_json import loads
from devices.wallbox.model import status_name
from devices.wallbox.rpc import Payload, printable
from devices.wallbox.station_state import StationState

EVENTS = {"BootNotification", "StatusNotification", "StartTransaction", "StopTransaction", "TransactionEvent"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=port, default=9000, help="port (default 9000; 0 = any free port)")
    parser.add_argument("--ids", type=_ids, help="comma-separated charge point ids to admit (default: any)")
    parser.add_argument("--version", choices=["1.6", "2.0.1"], default="1.6",
                        help="OCPP version expected from the --ids stations (default 1.6)")
    parser.add_argument("--upstream", type=websocket_url, help="proxy the --ids stations to this legacy CSMS URL")
    parser.add_argument("--every", type=step_s, default=10.0, help="print the station table every N s (default 10)")
    parser.add_argument("--duration", type=duration_s, help="stop after this many seconds (default: until Ctrl-C)")
    parser.add_argument("--security-profile", type=int, choices=PROFILES, default=0,
                        help="OCPP security profile: 0 none, 1 basic auth, 2 TLS + basic auth, 3 TLS + client "
                             "certificates (default 0)")
    parser.add_argument("--passwords", metavar="FILE", help="JSON object: charge point id -> basic-auth password "
                                                             "(profiles 1 and 2)")
    serve_security.add_arguments(parser, identity="csms", tls_help="(profiles 2 and 3)")


def security_from_args(args: argparse.Namespace) -> CsmsSecurity:
    passwords = None
    if args.passwords:
        raw = loads(Path(args.passwords).read_bytes())
        if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
            raise OcppSecurityError(f"--passwords {args.passwords}: expected a JSON object id -> password")
        passwords = {k: check_password(v) for k, v in raw.items()}
    if args.security_profile in (1, 2) and not passwords:
        raise OcppSecurityError(f"--security-profile {args.security_profile} needs --passwords FILE")
    if args.security_profile >= 2 and not args.tls_pki:
        raise OcppSecurityError(f"--security-profile {args.security_profile} needs --tls-pki DIR")
    context = serve_security.server_ssl(args, require_client_cert=args.security_profile == 3) \
        if args.security_profile >= 2 else None
    # with a PKI folder the CSMS also signs its stations' certificate requests (renewals over OCPP)
    return CsmsSecurity(args.security_profile, context, passwords,
                        str(args.tls_pki) if args.security_profile >= 2 else None)


def _ids(text: str) -> str:
    for cp_id in text.split(","):
        if cp_id.strip():
            identity(cp_id.strip())
    return text


def _fmt(x: float, unit: str) -> str:
    return f"{x:.0f} {unit}" if math.isfinite(x) else "-"


def describe(st: StationState) -> str:
    m = st.measurement()
    link = "online" if st.connected else "offline"
    tx = f"tx {printable(st.tx_id, 40)}" if st.tx_id else "no tx"
    return (f"{printable(st.cp_id, 40):<16} OCPP {st.version:<5} {link:<7} {status_name(m['status']):<13} "
            f"{_fmt(m['p_w'], 'W'):>9} {_fmt(m['e_wh'], 'Wh'):>11}  {tx}, session {_fmt(m['e_session_wh'], 'Wh')}")


def _on_message(st: StationState, action: str, p: Payload) -> None:
    if action not in EVENTS:
        return
    if action == "BootNotification":
        text = f"boot {p.get('chargePointModel') or p.get('chargingStation', {}).get('model')}"
    elif action == "StatusNotification":
        text = f"status {p.get('status') or p.get('connectorStatus')}"
    elif action == "StartTransaction":
        text = f"start transaction (meter {p['meterStart']} Wh)"
    elif action == "StopTransaction":
        text = f"stop transaction {p['transactionId']} ({p.get('reason', 'Local')})"
    else:
        text = f"transaction {p['eventType']} {p['transactionInfo']['transactionId']}"
    # everything from the station is escaped: a charge point id or model can carry terminal control codes
    print(f"{time.strftime('%H:%M:%S')} {printable(st.cp_id, 40)}: {printable(text, 120)}", flush=True)


async def serve(args: argparse.Namespace, ready: asyncio.Event | None = None) -> None:
    ids = [x.strip() for x in (args.ids or "").split(",") if x.strip()]
    security = security_from_args(args)
    serve_security.check_bind(args.host, encrypted=security.ssl is not None, insecure=args.insecure,
                              what=f"the CSMS (security profile {security.profile})")
    server = CsmsServer(args.host, args.port, accept_any=not ids, security=security)
    for cp_id in ids:
        server.expect(cp_id, args.version, proxy.factory(args.upstream) if args.upstream else None)
    server.listeners.append(_on_message)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            bound = await server.start()
        except OSError as exc:
            raise OSError(f"--port {args.port}: cannot listen on {args.host} ({exc.strerror or exc})") from None
        print(f"CSMS listening on {security.scheme}://{args.host}:{bound}/<charge point id> "
              f"(security profile {security.profile}) "
              f"({'ids ' + ', '.join(ids) if ids else 'any id'}; OCPP 1.6J and 2.0.1)", flush=True)
        if ready is not None:
            ready.set()
        t0 = time.monotonic()
        while not stop.is_set():
            left = None if args.duration is None else args.duration - (time.monotonic() - t0)
            if left is not None and left <= 0:
                break
            try:
                await asyncio.wait_for(stop.wait(), min(args.every, left) if left is not None else args.every)
            except TimeoutError:
                pass
            for st in server.states.values():
                print(describe(st), flush=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await server.stop()
        print("stopped", flush=True)


def run(args: argparse.Namespace) -> int:
    return run_served(serve, args)
