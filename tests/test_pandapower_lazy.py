"""simulators.pandapower_lazy: pandapower's unused packages load at first use, and then work as before.

Each case runs in a fresh interpreter: whether a module was imported is a property of the whole process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_importing_pandapower_defers_its_plotting_and_estimation():
    out = _run("import sys, simulators, pandapower\n"
               "from simulators.pandapower_lazy import DEFERRED\n"
               "print(sorted(n for n in DEFERRED if sys.modules[n].__dict__.get('_s4g_loaded')))\n"
               "print('scipy.stats' in sys.modules)")
    assert out.splitlines() == ["[]", "False"]


def test_pyomo_imports_beside_the_deferred_packages():
    """pyomo's own deferred imports (matplotlib among them) must not meet a shell module."""
    out = _run("import simulators, pandapower, pyomo.environ as pyo\n"
               "from pyomo.common.dependencies import matplotlib_available\n"
               "print(bool(matplotlib_available), pyo.ConcreteModel is not None)")
    assert out == "True True"


def test_deferred_packages_work_at_first_use():
    out = _run("import simulators, pandapower as pp, pandapower.networks as pn\n"
               "import matplotlib\n"
               "matplotlib.use('Agg')\n"
               "import matplotlib.pyplot as plt\n"
               "from pandapower.plotting import *\n"
               "net = pn.example_simple()\n"
               "pp.runpp(net, numba=False)\n"
               "ax = type(plt.gca()) if callable(simple_plot) and callable(create_bus_collection) else None\n"
               "from pandapower.estimation import estimate\n"
               "print(ax.__name__, callable(estimate), callable(pp.create_bus),\n"
               "      isinstance(plt.figure(), matplotlib.figure.Figure), round(float(net.res_bus.vm_pu.min()), 3))")
    names, estimate, err, fig, vmin = out.split()
    assert names == "Axes" and estimate == err == fig == "True"
    assert 0.9 < float(vmin) < 1.1


def test_nothing_is_deferred_once_pandapower_is_imported():
    out = _run("import sys, pandapower, pandapower.plotting\n"
               "import simulators\n"
               "print(type(sys.modules['pandapower.plotting']).__name__)")
    assert out == "module"
