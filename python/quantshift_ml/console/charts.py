"""Charts as inline SVG, drawn on the server: no JavaScript library, no CDN, works air-gapped.

Every point carries ``data-series``/``data-x`` attributes and a ``<title>`` (the
browser's tooltip), so a test can find "the new version's point" and a user can
read the exact value without a legend lookup.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 280, 48, 170, 16, 64


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]
    dashed: bool = False


def _y(value: float, lo: float, hi: float) -> float:
    span = (hi - lo) or 1.0
    return TOP + (H - TOP - BOTTOM) * (1 - (value - lo) / span)


def _x(i: int, n: int) -> float:
    inner = W - LEFT - RIGHT
    return LEFT + (inner / 2 if n == 1 else inner * i / (n - 1))


def _frame(title: str, lo: float, hi: float) -> list[str]:
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{escape(title)}"><title>{escape(title)}</title>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        y = _y(v, lo, hi)
        out += [f'<line class="grid" x1="{LEFT}" x2="{W - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>',
                f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                f'{v:.2f}</text>']
    return out


def _x_labels(labels: Sequence[str]) -> list[str]:
    n, step = len(labels), max(1, len(labels) // 12)
    return [f'<text class="tick" transform="translate({_x(i, n):.1f},{H - BOTTOM + 12}) '
            f'rotate(35)">{escape(lab)}</text>' for i, lab in enumerate(labels) if i % step == 0
            or i == n - 1]


def _legend(series: Sequence[Series]) -> list[str]:
    out = []
    for k, s in enumerate(series):
        y, color = TOP + 14 * k + 6, PALETTE[k % len(PALETTE)]
        out += [f'<line x1="{W - RIGHT + 10}" x2="{W - RIGHT + 28}" y1="{y}" y2="{y}" '
                f'stroke="{color}" stroke-width="2"'
                + (' stroke-dasharray="4 3"' if s.dashed else "") + "/>",
                f'<text class="legend" x="{W - RIGHT + 32}" y="{y + 4}">{escape(s.label)}</text>']
    return out


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series],
               lo: float = 0.0, hi: float = 1.0) -> str:
    """One line per series over ``labels``; a missing value breaks the line there."""
    out, n = _frame(title, lo, hi), len(labels)
    for k, s in enumerate(series):
        color, path, dots, pen = PALETTE[k % len(PALETTE)], [], [], "M"
        for i, v in enumerate(s.values):
            if v is None:
                pen = "M"
                continue
            x, y = _x(i, n), _y(max(lo, min(hi, v)), lo, hi)
            path.append(f"{pen}{x:.1f},{y:.1f}")
            pen = "L"
            dots.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}" '
                        f'data-series="{escape(s.label)}" data-x="{escape(labels[i])}">'
                        f'<title>{escape(s.label)} {escape(labels[i])}: {v:.3f}</title></circle>')
        if path:  # the line first, its points on top of it
            out.append(f'<path d="{" ".join(path)}" fill="none" stroke="{color}" '
                       f'stroke-width="2"' + (' stroke-dasharray="4 3"' if s.dashed else "")
                       + "/>")
        out += dots
    return "".join(out + _x_labels(labels) + _legend(series) + ["</svg>"])


def bar_chart(title: str, groups: Sequence[str], series: Sequence[Series],
              lo: float = 0.0, hi: float = 1.0) -> str:
    """Grouped bars: one group per label, one bar per series."""
    out, n, k_all = _frame(title, lo, hi), len(groups), max(1, len(series))
    inner = (W - LEFT - RIGHT) / max(1, n)
    width = inner * 0.8 / k_all
    for k, s in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        for i, v in enumerate(s.values):
            if v is None:
                continue
            x = LEFT + inner * i + inner * 0.1 + width * k
            y = _y(max(lo, min(hi, v)), lo, hi)
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" '
                       f'height="{H - BOTTOM - y:.1f}" fill="{color}" '
                       f'data-series="{escape(s.label)}" data-x="{escape(groups[i])}">'
                       f'<title>{escape(s.label)} {escape(groups[i])}: {v:.3f}</title></rect>')
    labels = [f'<text class="tick" transform="translate({LEFT + inner * (i + 0.5):.1f},'
              f'{H - BOTTOM + 12}) rotate(35)">{escape(g)}</text>' for i, g in enumerate(groups)]
    return "".join(out + labels + _legend(series) + ["</svg>"])
