"""The overview's plot: counts per minute over the last hour as a small SVG, drawn on the
server. Presentation attributes and classes only (the console's CSP allows no inline style
or script), every text escaped, sized by its viewBox so it scales down on a phone; a
``<title>`` on each point is what a pointer hovering it shows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 12, 30, 26  # the margins around the plotting area
COLOURS = ("#1f5fa8", "#c4401c", "#2e7d32", "#6a1b9a")


@dataclass(frozen=True)
class Series:
    """One line of the plot: its name (``reports``), and (minute start, count), oldest first."""

    name: str
    points: Sequence[tuple[float, int]]


def nice_top(highest: int) -> int:
    """The y axis' top: the smallest 1, 2 or 5 times a power of ten not below ``highest``
    (1 at least)."""
    if highest <= 1:
        return 1
    power = 10 ** int(math.log10(highest))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= highest)


def plot(series: Sequence[Series], title: str, slots: int = 0) -> Markup:
    """``series`` (all over the same minutes) as an ``<svg class="plot">``, on an axis of
    ``slots`` minutes (at least the points'): the points are its last minutes, and the
    minutes before them (not measured: the daemon had not started) a gap saying so."""
    measured = len(series[0].points) if series else 0
    minutes = max(slots, measured)
    gap = minutes - measured  # the axis' first minutes, with no point
    top = nice_top(max((n for s in series for _, n in s.points), default=0))
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (inner_w * i / (minutes - 1) if minutes > 1 else inner_w)

    def y(n: float) -> float:
        return TOP + inner_h * (1 - n / top)

    parts = [
        f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f"<desc>{escape(_totals(series, gap))}</desc>",
        f'<g class="axes" stroke="#888" stroke-width="1">'
        f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + inner_h}"/>'
        f'<line x1="{LEFT}" y1="{TOP + inner_h}" x2="{WIDTH - RIGHT}" y2="{TOP + inner_h}"/>'
        "</g>",
        '<g class="labels" font-size="11" fill="#444">',
    ]
    for tick in sorted({0, top // 2 if top % 2 == 0 else 0, top}):
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">'
                     f"{tick}</text>")
    if minutes:
        for i, anchor in ((0, "start"), (minutes // 2, "middle"), (minutes - 1, "end")):
            ago = minutes - 1 - i
            label = f"{ago} min ago" if ago else "now"
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                         f"{label}</text>")
    if gap and measured:
        parts.append(f'<text class="not-measured" x="{(x(0) + x(gap)) / 2:.1f}" '
                     f'y="{TOP + inner_h / 2:.1f}" text-anchor="middle">not measured '
                     f"(before {_minute(series[0].points[0][0])})</text>")
    parts.append("</g>")
    for k, line in enumerate(series):
        colour, name = COLOURS[k % len(COLOURS)], escape(line.name)
        legend_x = LEFT + 110 * k
        parts.append(
            f'<g class="legend {name}"><rect x="{legend_x}" y="8" width="12" height="12" '
            f'fill="{colour}"/><text x="{legend_x + 16}" y="18" font-size="12" '
            f'fill="#222">{name}</text></g>'
        )
        coords = " ".join(f"{x(gap + i):.1f},{y(n):.1f}"
                          for i, (_, n) in enumerate(line.points))
        parts.append(f'<g class="series {name}"><polyline points="{coords}" fill="none" '
                     f'stroke="{colour}" stroke-width="2"/>')
        for i, (start, n) in enumerate(line.points):
            parts.append(f'<circle cx="{x(gap + i):.1f}" cy="{y(n):.1f}" r="3" fill="{colour}">'
                         f"<title>{_minute(start)}: {n} {name}</title></circle>")
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _minute(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:%M UTC")


def _totals(series: Sequence[Series], gap: int) -> str:
    """What was counted: each series' total, since when."""
    since = (f" since {_minute(series[0].points[0][0])}" if gap and series[0].points
             else " in the last hour")
    return ", ".join(f"{sum(n for _, n in s.points)} {s.name}" for s in series) + since
