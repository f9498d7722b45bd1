"""Hostile-peer suites: a few seconds per file by default; ``pytest tests/hostile --hostile-long`` runs the
long campaign (many more hypothesis examples)."""


def pytest_addoption(parser):
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help="run the long hostile-peer campaign (nightly)")
