"""The HIL bench: a scenario against the wall clock, with real devices where the scenario gives their address.

``s4g bench run|check|stop`` (:mod:`hil_bench.cli`); the pieces: :mod:`~hil_bench.config` (the scenario's
``bench:`` section), :mod:`~hil_bench.realtime` (pacing, lateness, late policy), :mod:`~hil_bench.boundary`
(which devices are real, the safety layer in front of every driver), :mod:`~hil_bench.safety` (limits and
watchdog rules), :mod:`~hil_bench.hosting` (wall-clocked virtual devices), :mod:`~hil_bench.flow` and
:mod:`~hil_bench.monitor` (the live monitor over the SMX broker), :mod:`~hil_bench.records` and
:mod:`~hil_bench.replay` (device I/O log, ``replay://``), :mod:`~hil_bench.run` (a whole bench run).
See docs/hil-bench.md. Importing this package imports nothing heavy: the scenario schema uses its config.
"""
