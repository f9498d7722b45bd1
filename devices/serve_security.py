"""What every ``s4g device serve`` command shares for security: TLS options and the public-bind rule.

Servers bind 127.0.0.1 unless told otherwise. A command asked to listen on any other address refuses to
start without TLS (``--tls-pki DIR``) unless ``--insecure`` is given, and says so: a protocol server without
TLS on a reachable address lets anyone on that network read and command the device. Protocols that have no
TLS here (the Solar API's HTTP, socketcand, Modbus RTU over TCP) need ``--insecure`` for any public address.
"""

from __future__ import annotations

import argparse
import ssl
import sys

from devices import tls


class PublicBindRefused(ValueError):
    """A public address without TLS and without --insecure."""


def add_arguments(parser: argparse.ArgumentParser, *, identity: str, tls_help: str = "") -> None:
    parser.add_argument("--tls-pki", metavar="DIR", help="serve with TLS and client certificates from this PKI "
                                                         f"directory (s4g pki) {tls_help}".rstrip())
    parser.add_argument("--tls-identity", default=identity,
                        help=f"the server's certificate name in the PKI (default {identity})")
    parser.add_argument("--insecure", action="store_true",
                        help="allow listening on a non-loopback address without TLS (anyone on that network can "
                             "read and command the device)")


def server_ssl(args: argparse.Namespace, *, require_client_cert: bool = True) -> ssl.SSLContext | None:
    """The TLS context the options ask for (None without --tls-pki); TlsConfigError (a ValueError) if unusable."""
    if not getattr(args, "tls_pki", None):
        return None
    return tls.server_context(tls.TlsFiles.from_pki(args.tls_pki, args.tls_identity),
                              require_client_cert=require_client_cert)


def check_bind(host: str, *, encrypted: bool, insecure: bool, what: str) -> None:
    """Refuse (PublicBindRefused) to serve ``what`` unencrypted on a non-loopback ``host`` without --insecure;
    with --insecure, warn on stderr."""
    if encrypted or tls.is_loopback(host):
        return
    if not insecure:
        raise PublicBindRefused(f"refusing to serve {what} without TLS on {host} (not a loopback address): give "
                                f"--tls-pki DIR for TLS, or --insecure to expose it anyway")
    print(f"warning: serving {what} WITHOUT TLS on {host} (--insecure): anyone who reaches it can read and "
          f"command the device", file=sys.stderr, flush=True)
