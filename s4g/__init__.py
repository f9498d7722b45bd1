"""The ``s4g`` command line: the one package above all others.

Each package keeps its commands next to its code and exposes ``register(subparsers)``: the co-simulation
(:mod:`cosim.commands`), the HIL bench (:mod:`hil_bench.cli`), the stand-alone devices (:mod:`s4g.device`,
one command per ``devices/<family>/serve.py``); the forecast evaluation (:mod:`s4g.forecast`) joins the
controllers' forecasters with cosim's run directories, and ``bench-perf`` hands over to ``python -m
benchmarks``. Only this package imports all of them, so no package imports upward for its command line.
"""
