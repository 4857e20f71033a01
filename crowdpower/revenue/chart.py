"""A server-rendered SVG line chart (no JavaScript, no CDN): MRR over time."""

from __future__ import annotations

from markupsafe import Markup, escape

WIDTH, HEIGHT, PAD_L, PAD_B, PAD_T, PAD_R = 720, 220, 64, 28, 12, 12


def _nice(top: float) -> float:
    """A round axis maximum at or above ``top``."""
    if top <= 0:
        return 1.0
    step = 10 ** len(str(int(top))) / 10
    for factor in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if top <= step * factor:
            return step * factor
    return top


def line_chart(points: list[dict], currency: str) -> Markup:
    """``points`` are ``{"date", "mrr"}`` oldest first; returns inline ``<svg>``."""
    label = f"MRR in {currency.upper()} over time"
    if not points:
        return Markup('<p class="muted">No snapshot in this period yet.</p>')
    top = _nice(max(p["mrr"] for p in points))
    inner_w, inner_h = WIDTH - PAD_L - PAD_R, HEIGHT - PAD_T - PAD_B
    n = len(points)

    def x(i: int) -> float:
        return PAD_L + (inner_w * i / (n - 1) if n > 1 else inner_w / 2)

    def y(v: float) -> float:
        return PAD_T + inner_h * (1 - v / top)

    coords = " ".join(f"{x(i):.1f},{y(p['mrr']):.1f}" for i, p in enumerate(points))
    area = f"{x(0):.1f},{y(0):.1f} {coords} {x(n - 1):.1f},{y(0):.1f}"
    grid = "".join(
        f'<line x1="{PAD_L}" x2="{WIDTH - PAD_R}" y1="{y(top * k / 4):.1f}" '
        f'y2="{y(top * k / 4):.1f}" stroke="#e4e7ec"/>'
        f'<text x="{PAD_L - 6}" y="{y(top * k / 4) + 4:.1f}" text-anchor="end" '
        f'font-size="11" fill="#667085">{top * k / 4:,.0f}</text>' for k in range(5))
    ticks = sorted({0, n - 1, *range(0, n, max(1, n // 6))})
    xlabels = "".join(
        f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11" '
        f'fill="#667085">{escape(points[i]["date"][5:] if n <= 62 else points[i]["date"][:7])}'
        f'</text>' for i in ticks)
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(p["mrr"]):.1f}" r="2.5" fill="#4f46e5">'
        f'<title>{escape(p["date"])}: {p["mrr"]:,.2f} {escape(currency.upper())}</title>'
        f'</circle>' for i, p in enumerate(points)) if n <= 62 else ""
    return Markup(
        f'<svg class="chart" role="img" aria-label="{escape(label)}" viewBox="0 0 {WIDTH} '
        f'{HEIGHT}" width="100%" xmlns="http://www.w3.org/2000/svg"><title>{escape(label)}'
        f'</title>{grid}<polygon points="{area}" fill="#eef2ff"/>'
        f'<polyline points="{coords}" fill="none" stroke="#4f46e5" stroke-width="2"/>'
        f'{dots}{xlabels}</svg>')
