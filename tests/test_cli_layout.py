"""The command line sits above every package (s4g/): every command and option is still there, nothing imports it."""

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from s4g.cli import build_parser, main

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cosim", "simulators", "devices", "controllers", "hil_bench", "benchmarks")

# every command of the command line and the options each had before it moved (issue 11)
COMMANDS = {
    ("run",): {"--until", "--out", "--seed", "--no-progress", "--no-report", "--variant"},
    ("validate",): set(),
    ("report",): set(),
    ("compare",): {"--plot", "--markdown", "--readme"},
    ("forecast",): {"--step"},
    ("schema",): {"--out"},
    ("bench", "run"): {"--rt-factor", "--out", "--until", "--monitor-port", "--no-monitor", "--no-progress",
                       "--no-report"},
    ("bench", "check"): set(),
    ("bench", "stop"): {"--all"},
    ("device", "serve", "fronius"): {"--host", "--port", "--http-port", "--config", "--pv-kwp", "--step",
                                     "--pv-w-per-kwp", "--site-load-w", "--device-id"},
    ("device", "serve", "libal"): {"--host", "--rtu-port", "--can-port", "--config", "--unit", "--channel", "--step",
                                   "--soc-init", "--device-id"},
    ("device", "serve", "wallbox"): {"--csms", "--id", "--ocpp", "--ev", "--plug-at", "--unplug-at", "--daily",
                                     "--commands", "--config", "--step", "--duration"},
    ("device", "serve", "csms"): {"--host", "--port", "--ids", "--version", "--upstream", "--every", "--duration"},
    # commands this wave added
    ("device", "serve", "meter"): {"--port"},
    ("device", "serve", "energy-router"): {"--port"},
    ("device", "serve", "energy_router"): {"--port"},
    ("study",): {"--workers", "--scheduler", "--resume", "--out", "--no-progress"},
    ("sta", "serve"): {"--host", "--port", "--users"},
    ("dwh", "load"): set(),
    ("pki", "init"): set(),
    ("pki", "issue"): set(),
    ("pki", "revoke"): set(),
    ("pki", "crl"): set(),
    ("api",): {"--host", "--port", "--users", "--scenarios", "--data", "--study-workers", "--max-runs",
               "--tls-cert", "--tls-key"},
}


def _subparser(parser, path):
    for name in path:
        action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
        parser = action.choices[name]
    return parser


def test_every_command_keeps_its_options():
    parser = build_parser()
    for path, options in COMMANDS.items():
        sub = _subparser(parser, path)
        have = {s for a in sub._actions for s in a.option_strings}
        assert options <= have, (path, options - have)
    top = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    assert "bench-perf" in top.choices


def test_console_script_points_at_the_cli_package():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert meta["project"]["scripts"]["s4g"] == "s4g.cli:main"
    assert "s4g*" in meta["tool"]["setuptools"]["packages"]["find"]["include"]


def test_no_package_imports_the_command_line():
    offenders = []
    for pkg in PACKAGES:
        for f in (REPO / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
                offenders += [f"{f.relative_to(REPO)} -> {n}" for n in names if n == "s4g" or n.startswith("s4g.")]
    assert not offenders


def test_python_dash_m_s4g(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "s4g", "schema", "--out", str(tmp_path / "schema.json")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert "properties" in (tmp_path / "schema.json").read_text()


def test_validate_a_pilot_through_main(capsys):
    assert main(["validate", str(REPO / "scenarios" / "fur_skive.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_parser_for_a_command_line_needs_the_device_families_only_for_device():
    """build_parser(argv) leaves the device families' servers out unless the command is `device`."""
    run = ["-v", "run", "scenarios/bolzano_commercial.yaml", "--until", "1h"]
    assert build_parser(run).parse_args(run).command == "run"
    serve = ["-v", "device", "serve", "wallbox", "--csms", "ws://x/"]
    args = build_parser(serve).parse_args(serve)
    assert (args.command, args.family) == ("device", "wallbox")
    with pytest.raises(SystemExit):  # without its families, `device serve wallbox` is not a command line
        build_parser(run).parse_args(serve)
