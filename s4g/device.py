"""``s4g device serve FAMILY ...``: run one virtual device stand-alone, clocked by wall time.

Each family that can be served has ``devices/<family>/serve.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; they are found here by name, so adding a family adds its command (a name with ``_``
also answers to its spelling with ``-``: ``s4g device serve energy-router``). Option values are
checked by the argparse types of :mod:`devices.serving`: a bad one is exit code 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

import devices


def servable() -> list[str]:
    root = Path(devices.__file__).parent
    names = []
    for info in pkgutil.iter_modules([str(root)]):
        if info.ispkg and (root / info.name / "serve.py").is_file():
            names.append(info.name)
    return sorted(names)


def register(sub: argparse._SubParsersAction, *, families: bool = True) -> None:
    """``families=False``: the ``device`` command without its families, for a command line that is not
    ``s4g device ...`` (importing every family's server, e.g. the wallbox's OCPP stack, takes 0.3-0.5 s)."""
    device = sub.add_parser("device", help="stand-alone virtual devices")
    dsub = device.add_subparsers(dest="device_command", required=True)
    serve = dsub.add_parser("serve", help="serve one virtual device over its real protocol (wall-clock time)")
    fsub = serve.add_subparsers(dest="family", required=True)
    for name in servable() if families else []:
        module = importlib.import_module(f"devices.{name}.serve")
        # a package name with "_" is also served under its spelling with "-" (energy_router, energy-router)
        aliases = [name.replace("_", "-")] if "_" in name else []
        p = fsub.add_parser(name, aliases=aliases,
                            help=(module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
