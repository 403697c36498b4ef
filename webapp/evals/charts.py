"""Charts drawn on the server as SVG: the system runs offline, so no script library
and no CDN. Each function here lays a chart out (coordinates, colours, labels); the
templates `evals/_interval_chart.html` and `evals/_heat_map.html` draw it, escaping
every label like any other text of the page.

- An interval chart: a point and its 95% interval per row, on a shared axis with a
  reference line (win rates against 50%; the leaderboard's forest plot against the
  mean or anchor rating).
- A heat map: a matrix of win rates, red below 50% and blue above, grey where two
  models never met.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

LABEL_WIDTH = 230
PLOT_WIDTH = 380
ROW_HEIGHT = 22
AXIS_HEIGHT = 28
MARGIN = 12
RIGHT_MARGIN = 28  # room for half the last tick's label
MAX_LABEL = 34  # characters shown; the full label is in the row's tooltip


def short(label: str, limit: int = MAX_LABEL) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


@dataclasses.dataclass(frozen=True)
class IntervalRow:
    label: str
    title: str
    y: float
    x: float
    x_low: float
    x_high: float


@dataclasses.dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclasses.dataclass(frozen=True)
class IntervalChart:
    width: int
    height: int
    left: float
    right: float
    bottom: float
    rows: tuple[IntervalRow, ...]
    ticks: tuple[Tick, ...]
    reference: float | None

    @property
    def axis_label_y(self) -> float:
        return self.bottom + 16

    @property
    def label_x(self) -> float:
        return self.left - 8


def interval_chart(
    rows: Sequence[tuple[str, float, float, float]],
    *,
    domain: tuple[float, float],
    ticks: Sequence[float],
    reference: float | None,
    fmt: Callable[[float], str],
) -> IntervalChart:
    """Lays out rows of (label, point, low, high) on the axis `domain`."""
    left, right = LABEL_WIDTH, LABEL_WIDTH + PLOT_WIDTH
    low, high = domain

    def x(value: float) -> float:
        share = (value - low) / (high - low) if high > low else 0.5
        return round(left + min(1.0, max(0.0, share)) * (right - left), 2)

    laid = tuple(
        IntervalRow(
            label=short(label),
            title=f"{label}: {fmt(point)} (95% CI {fmt(lo)} to {fmt(hi)})",
            y=MARGIN + (i + 0.5) * ROW_HEIGHT,
            x=x(point),
            x_low=x(lo),
            x_high=x(hi),
        )
        for i, (label, point, lo, hi) in enumerate(rows)
    )
    bottom = MARGIN + len(rows) * ROW_HEIGHT
    return IntervalChart(
        width=right + RIGHT_MARGIN,
        height=int(bottom + AXIS_HEIGHT),
        left=left,
        right=right,
        bottom=bottom,
        rows=laid,
        ticks=tuple(Tick(x(t), fmt(t)) for t in ticks),
        reference=None if reference is None else x(reference),
    )


def percent(value: float) -> str:
    return f"{100 * value:.1f}%"


def whole(value: float) -> str:
    return f"{value:.0f}"


def win_rate_chart(cells: Sequence) -> IntervalChart:
    """Win rates (`reports.Cell`s) with their intervals, on 0-100%. Rows are
    labelled by their slice, and by their pair too when there are several."""
    several = len({(c.model, c.baseline) for c in cells}) > 1
    rows = [
        (
            f"{c.model} vs {c.baseline}: {c.slice}" if several else c.slice,
            c.rate.win_rate,
            c.rate.ci_low,
            c.rate.ci_high,
        )
        for c in cells
    ]
    return interval_chart(
        rows,
        domain=(0.0, 1.0),
        ticks=(0.0, 0.25, 0.5, 0.75, 1.0),
        reference=0.5,
        fmt=percent,
    )


def forest_plot(rows: Sequence, reference: float) -> IntervalChart:
    """The leaderboard's ratings (`stats.LeaderboardRow`s) with their intervals."""
    low = min(r.ci_low for r in rows)
    high = max(r.ci_high for r in rows)
    ticks = nice_ticks(low, high)
    return interval_chart(
        [(r.model, r.rating, r.ci_low, r.ci_high) for r in rows],
        domain=(min(low, ticks[0]), max(high, ticks[-1])),
        ticks=ticks,
        reference=reference,
        fmt=whole,
    )


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round numbers covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step) * step
    last = math.ceil(high / step) * step
    return [first + i * step for i in range(round((last - first) / step) + 1)]


# --- heat map ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeatCell:
    x: float
    y: float
    centre_x: float
    centre_y: float
    fill: str
    text: str
    title: str


@dataclasses.dataclass(frozen=True)
class HeatMap:
    width: int
    height: int
    size: float
    show_text: bool
    cells: tuple[HeatCell, ...]
    row_labels: tuple[tuple[float, str, str], ...]  # (y, shown, title)
    column_labels: tuple[tuple[float, str, str], ...]  # (x, number, title)

    label_x = LABEL_WIDTH - 6
    column_label_y = AXIS_HEIGHT - 8


def colour(value: float | None) -> str:
    """Red at 0, white at 0.5, blue at 1; grey for no value."""
    if value is None:
        return "#eaeef2"
    strength = min(1.0, abs(value - 0.5) * 2)
    towards = (207, 34, 46) if value < 0.5 else (9, 105, 218)
    rgb = (round(255 + (c - 255) * strength) for c in towards)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def heat_map(
    models: Sequence[str], matrix: Sequence[Sequence[float | None]]
) -> HeatMap:
    """Row i, column j: the share of points row i's model took from column j's.
    Columns are numbered as the rows are."""
    size = max(8.0, min(36.0, 540 / max(1, len(models))))
    top, left = AXIS_HEIGHT, LABEL_WIDTH
    cells = tuple(
        HeatCell(
            x=left + j * size,
            y=top + i * size,
            centre_x=left + (j + 0.5) * size,
            centre_y=top + (i + 0.5) * size,
            fill=colour(value),
            text="" if value is None else f"{100 * value:.0f}",
            title=(
                f"{a} against {b}: "
                + ("never met" if value is None else percent(value))
            ),
        )
        for i, (a, row) in enumerate(zip(models, matrix, strict=True))
        for j, (b, value) in enumerate(zip(models, row, strict=True))
        if i != j
    )
    return HeatMap(
        width=int(left + len(models) * size + MARGIN),
        height=int(top + len(models) * size + MARGIN),
        size=size,
        show_text=size >= 28,
        cells=cells,
        row_labels=tuple(
            (top + (i + 0.5) * size, f"{i + 1}. {short(m)}", m)
            for i, m in enumerate(models)
        ),
        column_labels=tuple(
            (left + (j + 0.5) * size, str(j + 1), m) for j, m in enumerate(models)
        ),
    )
