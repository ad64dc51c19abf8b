"""Server-side SVG plots: line charts of time series and horizontal bar charts.

Why server-side SVG and not a JavaScript chart library: the page works with scripts off and
under `Content-Security-Policy: default-src 'self'`, nothing third-party is shipped or
audited, a plot costs the daemon a few hundred small strings, and the browser test can read
the drawn shapes. Colours are presentation attributes (no style attribute: the CSP forbids
inline styles). Every label goes through html.escape."""

from __future__ import annotations

from datetime import datetime
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf")
W, H = 640, 220
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 48


def _time_label(ts: float, step: int) -> str:
    fmt = "%H:%M" if step < 3600 else "%d %b %H:%M"
    return datetime.fromtimestamp(ts).strftime(fmt)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    scale = 10 ** (len(str(int(v))) - 1)
    for m in (1, 2, 5, 10):
        if v <= m * scale:
            return float(m * scale)
    return float(10 * scale)


def line_chart(series: dict[str, list[float]], start: int, step: int, title: str,
               unit: str = "per point") -> str:
    """An <svg> with one polyline per series (points every `step` seconds from `start`)."""
    points = max((len(v) for v in series.values()), default=0)
    peak = _nice_max(max((max(v) for v in series.values() if v), default=0.0))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {W} {H}" '
           f'width="{W}" height="{H}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>",
           f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fafafa" '
           f'stroke="#ccc"/>',
           f'<text x="{LEFT - 4}" y="{TOP + 10}" text-anchor="end" font-size="10">'
           f"{peak:g}</text>",
           f'<text x="{LEFT - 4}" y="{TOP + ph}" text-anchor="end" font-size="10">0</text>',
           f'<text x="14" y="{TOP + ph // 2}" font-size="10" fill="#555" text-anchor="middle" '
           f'transform="rotate(-90 14 {TOP + ph // 2})">{escape(unit)}</text>']
    if points:
        for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
            ts = start + int(frac * (points - 1)) * step
            out.append(f'<text x="{LEFT + frac * pw:.0f}" y="{TOP + ph + 12}" font-size="10" '
                       f'text-anchor="{anchor}">{escape(_time_label(ts, step))}</text>')
    xs = pw / max(points - 1, 1)
    for i, (name, values) in enumerate(sorted(series.items())):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{LEFT + j * xs:.1f},{TOP + ph - v / peak * ph:.1f}"
                          for j, v in enumerate(values))
        out.append(f'<polyline class="series" data-name="{escape(name)}" fill="none" '
                   f'stroke="{colour}" stroke-width="1.5" points="{coords}"/>')
        lx = LEFT + (i % 4) * (pw // 4)
        ly = H - 14 + (i // 4) * 10 - (10 if len(series) > 4 else 0)
        out.append(f'<rect x="{lx}" y="{ly - 7}" width="8" height="8" fill="{colour}"/>'
                   f'<text x="{lx + 11}" y="{ly}" font-size="10">{escape(name)} '
                   f"({sum(values):g})</text>")
    if not series:
        out.append(f'<text x="{LEFT + pw // 2}" y="{TOP + ph // 2}" text-anchor="middle" '
                   f'font-size="12" fill="#777">nothing counted yet</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(items: list[tuple[str, float]], title: str) -> str:
    """An <svg> of horizontal bars, largest first (at most 10)."""
    items = sorted(items, key=lambda kv: -kv[1])[:10]
    peak = max((v for _, v in items), default=0.0) or 1.0
    height = 20 + 18 * max(len(items), 1)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" viewBox="0 0 {W} {height}" '
           f'width="{W}" height="{height}" role="img" aria-label="{escape(title)}">',
           f"<title>{escape(title)}</title>"]
    for i, (label, value) in enumerate(items):
        y = 10 + 18 * i
        width = (W - 260) * value / peak
        out.append(f'<text x="150" y="{y + 11}" text-anchor="end" font-size="11">'
                   f"{escape(label[:40])}</text>"
                   f'<rect class="bar" x="156" y="{y}" width="{width:.1f}" height="14" '
                   f'fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{160 + width:.0f}" y="{y + 11}" font-size="11">{value:g}</text>')
    if not items:
        out.append('<text x="20" y="24" font-size="12" fill="#777">nothing yet</text>')
    out.append("</svg>")
    return "".join(out)
