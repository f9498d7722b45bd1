"""``s4g pki init|issue|revoke|crl|list``: the framework's certificate authority on the command line.

:func:`register` adds the commands to the ``s4g`` parser (like every package's commands). Exit code 2 with a
one-line message for anything the PKI refuses (an existing name, an unknown role, a bad host, ...).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from collections.abc import Callable

EXIT_OK, EXIT_INVALID = 0, 2


def _days(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of days >= 1 (found {text!r})")
    return value


def _run(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    from devices.pki import PkiError

    try:
        return fn(args)
    except PkiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID


def cmd_init(args: argparse.Namespace) -> int:
    from devices import pki

    root_key = pki.init(args.dir, org=args.org, root_days=args.root_days, issuing_days=args.ca_days)
    print(f"PKI in {args.dir}: root CA ({args.root_days} d) and issuing CA ({args.ca_days} d), empty CRL.")
    print(f"Take the root CA off line now: move {root_key.parent} to offline media; no other command needs it.")
    return EXIT_OK


def cmd_issue(args: argparse.Namespace) -> int:
    from devices import pki
    from devices.tls import cert_file, key_file

    e = pki.issue(args.dir, args.name, args.role, site=args.site, hosts=args.host or (), days=args.days,
                  renew=args.renew)
    print(f"{e.name}: {e.role}{' of site ' + e.site if e.site else ''}, serial {e.serial}, valid until "
          f"{e.not_after}{' hosts ' + ', '.join(e.hosts) if e.hosts else ''}")
    print(f"  certificate {cert_file(args.dir, e.name)}\n  key         {key_file(args.dir, e.name)} (0600)")
    return EXIT_OK


def cmd_sign(args: argparse.Namespace) -> int:
    from pathlib import Path

    from devices import pki

    try:
        request = Path(args.request).read_bytes()
    except OSError as exc:
        raise pki.PkiError(f"{args.request}: cannot read the request: {exc.strerror or exc}") from None
    e, chain = pki.sign_request(args.dir, request, args.role, name=args.name, site=args.site, days=args.days)
    out = Path(args.out) if args.out else Path(args.dir) / "certs" / f"{e.name}.requested.pem"
    out.write_bytes(chain)
    print(f"{e.name}: {e.role}{' of site ' + e.site if e.site else ''}, serial {e.serial}, valid until "
          f"{e.not_after}; the key stayed with the requester")
    print(f"  certificate chain {out}")
    for other in pki.listing(args.dir):
        if other.name == e.name and other.active and other.serial != e.serial:
            print(f"note: {e.name} also has the active certificate {other.serial}; once the device uses the new "
                  f"one: s4g pki revoke {args.dir} {other.serial} --reason superseded")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    from devices import pki

    e = pki.revoke(args.dir, args.which, reason=args.reason)
    print(f"revoked {e.name} (serial {e.serial}, {e.reason}); CRL updated: {args.dir}/crl.pem")
    return EXIT_OK


def cmd_crl(args: argparse.Namespace) -> int:
    from devices import pki

    path = pki.crl(args.dir, days=args.days)
    print(f"CRL signed, valid {args.days} d: {path} (publish it to every broker and server)")
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from devices import pki

    entries = pki.listing(args.dir)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=1))
        return EXIT_OK
    for e in entries:
        state = "active" if e.active else f"revoked ({e.reason})"
        print(f"{e.serial:>40}  {e.name:<24} {e.role:<11} {e.site or '-':<16} until {e.not_after[:10]}  {state}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from devices.pki import CRL_DAYS, ISSUING_DAYS, LEAF_DAYS, REASONS, ROLES, ROOT_DAYS

    pki = sub.add_parser("pki", help="certificates for brokers, gateways, controllers, charge points, servers")
    psub = pki.add_subparsers(dest="pki_command", required=True)

    p = psub.add_parser("init", help="create an offline root CA and an issuing CA in DIR")
    p.add_argument("dir")
    p.add_argument("--org", default="S4G", help="organisation in every subject (default S4G)")
    p.add_argument("--root-days", type=_days, default=ROOT_DAYS, help=f"root validity (default {ROOT_DAYS})")
    p.add_argument("--ca-days", type=_days, default=ISSUING_DAYS, help=f"issuing CA validity (default {ISSUING_DAYS})")
    p.set_defaults(func=lambda a: _run(cmd_init, a))

    p = psub.add_parser("issue", help="a certificate and key for one identity")
    p.add_argument("dir")
    p.add_argument("name", help="the identity (CN; the MQTT user name on the brokers, the charge point id, ...)")
    p.add_argument("--role", required=True, choices=list(ROLES),
                   help="; ".join(f"{r}: {what}" for r, (what, _, _) in ROLES.items()))
    p.add_argument("--site", help="the site of a site-bound identity (gateway; optional for a reader)")
    p.add_argument("--host", action="append", help="server host name or address for the SAN (repeatable; "
                                                   "default localhost, 127.0.0.1, ::1)")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, help=f"validity (default {LEAF_DAYS})")
    p.add_argument("--renew", action="store_true", help="replace the name's active certificate (revokes it)")
    p.set_defaults(func=lambda a: _run(cmd_issue, a))

    p = psub.add_parser("sign", help="sign a device's own certificate signing request (its key never leaves it)")
    p.add_argument("dir")
    p.add_argument("request", help="the PEM certificate signing request (CN = the identity; EC P-256 key)")
    p.add_argument("--role", required=True, choices=[r for r, (_, server, _) in ROLES.items() if not server],
                   help="a client role (servers: `s4g pki issue --host`)")
    p.add_argument("--name", help="refuse the request unless its CN is this identity")
    p.add_argument("--site", help="the site of a site-bound identity (gateway)")
    p.add_argument("--days", type=_days, default=LEAF_DAYS, help=f"validity (default {LEAF_DAYS})")
    p.add_argument("--out", help="where to write the chain (default DIR/certs/NAME.requested.pem)")
    p.set_defaults(func=lambda a: _run(cmd_sign, a))

    p = psub.add_parser("revoke", help="revoke a certificate (by name or serial) and publish the CRL")
    p.add_argument("dir")
    p.add_argument("which", help="identity name or hex serial")
    p.add_argument("--reason", default="unspecified", choices=list(REASONS))
    p.set_defaults(func=lambda a: _run(cmd_revoke, a))

    p = psub.add_parser("crl", help="sign a fresh CRL (it expires: refresh it before --days pass)")
    p.add_argument("dir")
    p.add_argument("--days", type=_days, default=CRL_DAYS, help=f"validity (default {CRL_DAYS})")
    p.set_defaults(func=lambda a: _run(cmd_crl, a))

    p = psub.add_parser("list", help="every certificate issued, with its state")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=lambda a: _run(cmd_list, a))
