"""The naive composition: the Fur/Skive pilot built the way a competent newcomer builds it from public parts.

Not a benchmark module itself (``python -m benchmarks`` skips packages); :mod:`benchmarks.race` runs it against
our framework. What it is made of:

* mosaik 3.7 with a hand-written world (:mod:`.world`): one simulator start per component type, one entity per
  household, device, grid element and controller, one connection per flow, a collector for the results;
* the grid: the public mosaik-pandapower-2 adapter (``runpp`` every step), extended to ``runpp_3ph`` and
  single-phase loads because the Fur feeder is unbalanced (:mod:`.grid`);
* devices: plain simulators, one Python object per device, each stepping our physics for that one device
  (:mod:`.devices`);
* controllers: GESSCon once a day, LESSAg with the same PROFESS formulation rebuilt in pyomo and solved with
  HiGHS at every 15-minute cycle, the LiBal volt-watt/volt-var curves (:mod:`.controllers`);
* results: the run-directory format written with :class:`cosim.recorder.Recorder` (plain Parquet I/O), so the
  KPIs of both runs come from the same :mod:`cosim.kpi` code.

Reused from the project, for the physics and the math only: the device model classes, the PROFESS and GESSCon
formulations, the SenML schedule format, the grid-file reader and the profile data functions. Not used: the world
builder, the device host and its vectorised banks of many devices, the recorder simulator, the message bus,
the fast power flow and the persistent or interior-point solvers.
"""

from benchmarks.naive.world import NaiveResult, run

__all__ = ["NaiveResult", "run"]
