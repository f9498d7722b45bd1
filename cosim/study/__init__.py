"""Studies: many variants of one scenario, run as tasks on Dask, summarised in one table and one report.

The Python API (what ``s4g study`` uses, and what a REST API can submit to)::

    from cosim.study import load, StudyRunner
    runner = StudyRunner(load("studies/fur_storage_sizing.yaml"), "studies/out/fur", workers=2)
    runner.start()            # or runner.run() to block
    runner.status_dict()      # {"state": "running", "done": 3, "failed": 0, "total": 32, "eta_s": 41.0, ...}
    runner.cancel()
    runner.table()            # pandas DataFrame: axes + KPIs per variant

Modules: spec (the file format), keypath (patching), sampling (plans), search (bisection), variants (documents and
the bundle of data files), task (one variant on a worker), engine (the runner and its pools), store (the study
directory), tables, report, economics, post (lifetime and economics KPIs).
"""

from cosim.study.engine import StudyRunner
from cosim.study.spec import LoadedStudy, Study, load

__all__ = ["LoadedStudy", "Study", "StudyRunner", "load"]
