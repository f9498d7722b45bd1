"""``s4g forecast RUN_DIR``: forecast MAE per site of the controllers' forecasters, from a run directory alone.

It joins two packages (the controllers' forecasters and cosim's run directories), so it lives here, above both.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cosim.commands import DURATION
from cosim.console import EXIT_INVALID, EXIT_OK, console, err_console


def cmd_forecast(args: argparse.Namespace) -> int:
    """Forecast MAE per site of the forecasters PROFESS and GESSCon can use, replayed on a run's load series."""
    from rich.table import Table

    from controllers.forecast import block_means, site_forecast_mae
    from cosim.rundir import read_meta, read_table

    run_dir = Path(args.run_dir)
    sites = read_table(run_dir, "sites") if (run_dir / "meta.json").is_file() else None
    if sites is None:
        err_console.print(f"{run_dir}: no sites table (not a run directory?)")
        return EXIT_INVALID
    meta = read_meta(run_dir)
    step = args.step
    if step % meta["step_s"]:
        err_console.print(f"--step {step} s must be a multiple of the run's step ({meta['step_s']} s)")
        return EXIT_INVALID
    factor = step // meta["step_s"]
    realised = {c.rsplit(".", 1)[0]: block_means(v, factor) for c, v in sites.columns.items()
                if c.endswith(".load_p_w")}
    days = len(sites.t_s) * meta["step_s"] / 86400
    if days < 2:
        err_console.print(f"{run_dir}: {days:.2g} d recorded; forecasts need at least 2 days (one to learn from)")
        return EXIT_INVALID
    table = Table(title=f"load forecast MAE per site (W), {step // 60} min steps, 24 h horizon, after day 1")
    table.add_column("site")
    methods = ("persistence", "seasonal_naive", "ridge")
    for m in methods:
        table.add_column(m, justify="right")
    scores = {m: site_forecast_mae(realised, step, m, warmup_s=86400) for m in methods}
    out = {}
    for site in realised:
        table.add_row(site, *(f"{scores[m][site].mae:.0f}" for m in methods))
        out[site] = {m: scores[m][site].mae for m in methods}
    console.print(table)
    (run_dir / "forecast_mae.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    console.print(f"written: {run_dir / 'forecast_mae.json'}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("forecast", help="forecast MAE per site of the controllers' forecasters, from a run")
    p.add_argument("run_dir")
    p.add_argument("--step", type=DURATION, default="15min", help="forecast step (default 15min)")
    p.set_defaults(func=cmd_forecast)
