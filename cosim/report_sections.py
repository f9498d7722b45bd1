"""What a report section is, and the shared pieces of the plotly figures every section draws.

A section is a function ``(ReportContext) -> Section | None`` (None: nothing to show for this run, e.g. no EV
fleet). The built-in ones are listed in :mod:`cosim.report`; a pilot adds its own to ``report.EXTRA_SECTIONS``.
"""

from __future__ import annotations

import html
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import plotly.graph_objects as go

PHASE_COLORS = {"a": "#d62728", "b": "#2ca02c", "c": "#1f77b4", "pos": "#1f77b4"}
PHASE_NAMES = {"a": "phase a", "b": "phase b", "c": "phase c", "pos": "V"}
MAX_POINTS = 2000  # samples per series in a figure; longer runs are aggregated per bucket


@dataclass
class Section:
    """One part of the page: a heading, some HTML (text, tables) and interactive figures."""

    id: str
    title: str
    html: str = ""
    figures: list[go.Figure] = field(default_factory=list)
    after: str = ""  # HTML below the figures


SectionFn = Callable[[Any], "Section | None"]


def e(x: Any) -> str:
    return html.escape(str(x))


def figure(title: str, height: float = 420, **layout: Any) -> go.Figure:
    fig = go.Figure()
    settings: dict[str, Any] = {"title": {"text": title, "x": 0, "xanchor": "left"}, "height": height,
                                "template": "plotly_white", "margin": {"l": 60, "r": 20, "t": 50, "b": 40},
                                "hovermode": "x unified", "legend": {"orientation": "h", "y": -0.15}}
    fig.update_layout(**(settings | layout))
    return fig


def bucket_size(n: int, limit: int = MAX_POINTS) -> int:
    return max(1, -(-n // limit))


def downsample(x: np.ndarray, how: str, k: int) -> np.ndarray:
    """Aggregate along axis 0 in buckets of k rows: mean, min, max or first (the tail bucket may be short)."""
    if k <= 1:
        return x
    n = x.shape[0]
    pad = (-n) % k
    if pad:
        x = np.concatenate([x, np.full((pad, *x.shape[1:]), np.nan)])
    shaped = x.reshape(n // k + (1 if pad else 0), k, *x.shape[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets stay NaN
        if how == "first":
            return shaped[:, 0]
        reducers: dict[str, Callable[..., np.ndarray]] = {"mean": np.nanmean, "min": np.nanmin, "max": np.nanmax}
        return reducers[how](shaped, axis=1)


def band_lines(fig: go.Figure, bands: list[tuple[tuple[float, float], str]], **where: Any) -> None:
    """Horizontal limit lines (tight dashed, wide solid)."""
    for (lo, hi), dash in bands:
        for y in (lo, hi):
            fig.add_hline(y=y, line={"color": "#c0392b", "width": 1, "dash": dash}, **where)


def note(text: str, kind: str = "note") -> str:
    return f'<p class="{kind}">{text}</p>'
