"""Recorder cost per step: ~500 values (250 scalars + a 250-bus vector), versus appending to Python lists.

Run: python -m benchmarks.recorder [--quick]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import median_spread, print_rows, row
from cosim.recorder import Recorder


def _columns() -> tuple[list[list[Any]], dict[tuple[str, str], Any]]:
    cols: list[list[Any]] = [[f"Dev-0.hh_{i}", a, "devices", f"hh_{i}.{a}"] for i in range(125) for a in ("p_w", "soc")]
    cols.append(["Grid-0.grid", "v", "buses", [f"b{i}.v_pu" for i in range(250)]])
    values: dict[tuple[str, str], Any] = {(c[0], c[1]): 1.0 for c in cols[:-1]}
    values[("Grid-0.grid", "v")] = np.ones(250)
    return cols, values


def _ours(steps: int) -> float:
    cols, values = _columns()
    with tempfile.TemporaryDirectory() as tmp:
        rec = Recorder(Path(tmp), cols, flush_rows=1440)
        t0 = time.perf_counter()
        for i in range(steps):
            rec.record(i * 60, values)
        per_step = (time.perf_counter() - t0) / steps
        rec.close()
    return per_step * 1e6


def _naive(steps: int) -> float:
    """The obvious alternative: a list of dict rows, turned into a DataFrame at the end."""
    import pandas as pd

    _cols, values = _columns()
    t0 = time.perf_counter()
    rows = []
    for i in range(steps):
        r = {"t_s": i * 60}
        for (src, attr), v in values.items():
            if isinstance(v, np.ndarray):
                r.update({f"{src}.{attr}[{k}]": x for k, x in enumerate(v)})
            else:
                r[f"{src}.{attr}"] = v
        rows.append(r)
    with tempfile.TemporaryDirectory() as tmp:
        pd.DataFrame(rows).to_parquet(Path(tmp) / "x.parquet")
    return (time.perf_counter() - t0) / steps * 1e6


def run(quick: bool = False) -> list[dict]:
    steps = 500 if quick else 5000
    reps = 2 if quick else 5
    ours = median_spread([_ours(steps) for _ in range(reps)])
    naive = median_spread([_naive(steps) for _ in range(reps)])
    return [row("recorder: cost per step, 500 values", ours, naive, "µs", goal_ratio=1.0, lower_is_better=True)]


if __name__ == "__main__":
    print_rows(run(quick="--quick" in sys.argv))
