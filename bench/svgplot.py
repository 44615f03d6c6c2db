"""Plots for BENCHMARKS.md, as plain SVG (no plotting library to install).

Two pictures say what the tables cannot:
- strip(): every repetition of each row as a dot, so that a bimodal row (W1 on
  a noisy VM) shows as two clusters instead of one misleading median;
- tail(): the whole distribution of W4's stop latencies per row, as the
  fraction slower than x on log-log axes, so that the median and the worst
  cases are read off the same curve.
"""
import math
import statistics
from xml.sax.saxutils import escape

COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
          "#e377c2", "#7f7f7f"]
FONT = 'font-family="sans-serif" font-size="12"'


def _svg(width, height, body):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}">\n'
            f'<rect width="{width}" height="{height}" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def _text(x, y, s, anchor="start", extra=""):
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" {FONT} {extra}>{escape(s)}</text>'


def _nice_max(v):
    """A round axis end at or above v."""
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * p:
            return m * p
    return 10 * p


def strip(title, unit, rows, scale=1.0, ref=None):
    """rows: [(label, values)], one dot per value (times `scale`), a bar at
    the median; `ref`: a label whose median gets a dashed line."""
    rows = [(label, [x * scale for x in v]) for label, v in rows if v]
    label_w, plot_w, row_h, top = 390, 420, 26, 40
    height = top + row_h * len(rows) + 45
    xmax = _nice_max(max(x for _, v in rows for x in v))

    def px(x):
        return label_w + plot_w * x / xmax

    body = [_text(10, 22, title, extra='font-weight="bold"')]
    for k in range(6):
        x = xmax * k / 5
        body.append(f'<line x1="{px(x):.1f}" y1="{top - 8}" x2="{px(x):.1f}" '
                    f'y2="{top + row_h * len(rows)}" stroke="#ddd"/>')
        body.append(_text(px(x), top + row_h * len(rows) + 16, f"{x:g}", "middle"))
    body.append(_text(label_w + plot_w / 2, top + row_h * len(rows) + 34, unit, "middle"))
    ref_median = None
    for i, (label, v) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        color = COLORS[i % len(COLORS)]
        body.append(_text(label_w - 8, y + 4, label, "end"))
        for x in v:
            body.append(f'<circle cx="{px(x):.1f}" cy="{y:.1f}" r="4" fill="{color}" '
                        f'fill-opacity="0.55"/>')
        m = statistics.median(v)
        body.append(f'<line x1="{px(m):.1f}" y1="{y - 9:.1f}" x2="{px(m):.1f}" y2="{y + 9:.1f}" '
                    f'stroke="black" stroke-width="2"/>')
        if label == ref:
            ref_median = m
    if ref_median is not None:
        body.append(f'<line x1="{px(ref_median):.1f}" y1="{top - 8}" x2="{px(ref_median):.1f}" '
                    f'y2="{top + row_h * len(rows)}" stroke="black" stroke-dasharray="4 3"/>')
    return _svg(label_w + plot_w + 30, height, body)


def tail(title, panels, unit, limit=None, lo=0.05):
    """panels: [(subtitle, [(label, values)])]: per panel and row, the
    fraction of samples slower than x, both axes logarithmic, so that the
    median (0.5) and the worst cases (the last steps) are on one curve.
    `limit`: a vertical line (a target)."""
    hi = _nice_max(max(x for _, rows in panels for _, v in rows for x in v))
    hi = max(hi, 10 * lo, limit or 0)
    n_max = max(len(v) for _, rows in panels for _, v in rows)
    ylo = 10 ** math.floor(math.log10(1 / n_max))
    pw, ph, left, top, gap = 300, 220, 60, 50, 30
    legend = [label for label, _ in panels[0][1]]
    width = left + len(panels) * (pw + gap) + 10
    height = top + ph + 50 + 18 * (len(legend) + (1 if limit else 0))
    decades = [10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]

    def px(i, x):
        x = min(max(x, lo), hi)
        return left + i * (pw + gap) + pw * (math.log10(x) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    def py(f):
        f = max(f, ylo)
        return top + ph * (-math.log10(f)) / (-math.log10(ylo))

    body = [_text(10, 22, title, extra='font-weight="bold"')]
    for i, (sub, rows) in enumerate(panels):
        x0 = left + i * (pw + gap)
        body.append(_text(x0 + pw / 2, top - 10, sub, "middle"))
        body.append(f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        for d in decades:
            if lo <= d <= hi:
                body.append(f'<line x1="{px(i, d):.1f}" y1="{top}" x2="{px(i, d):.1f}" y2="{top + ph}" stroke="#ddd"/>')
                body.append(_text(px(i, d), top + ph + 15, f"{d:g}", "middle"))
        f = 1.0
        while f >= ylo:
            body.append(f'<line x1="{x0}" y1="{py(f):.1f}" x2="{x0 + pw}" y2="{py(f):.1f}" stroke="#eee"/>')
            if i == 0:
                body.append(_text(x0 - 5, py(f) + 4, f"{f:g}", "end"))
            f /= 10
        if limit:
            body.append(f'<line x1="{px(i, limit):.1f}" y1="{top}" x2="{px(i, limit):.1f}" y2="{top + ph}" '
                        f'stroke="black" stroke-dasharray="4 3"/>')
        for k, (label, v) in enumerate(rows):
            v = sorted(v)
            n = len(v)
            points = [(px(i, lo), py(1.0))]
            for j, x in enumerate(v):
                points.append((px(i, x), py((n - j) / n)))
                points.append((px(i, x), py((n - j - 1) / n)))
            path = " ".join(f"{a:.1f},{b:.1f}" for a, b in points)
            body.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[k % len(COLORS)]}" stroke-width="1.5"/>')
        body.append(_text(x0 + pw / 2, top + ph + 32, unit, "middle"))
    for k, label in enumerate(legend):
        y = top + ph + 52 + 18 * k
        body.append(f'<line x1="{left}" y1="{y - 4}" x2="{left + 24}" y2="{y - 4}" '
                    f'stroke="{COLORS[k % len(COLORS)]}" stroke-width="3"/>')
        body.append(_text(left + 30, y, label))
    if limit:
        y = top + ph + 52 + 18 * len(legend)
        body.append(f'<line x1="{left}" y1="{y - 4}" x2="{left + 24}" y2="{y - 4}" stroke="black" '
                    f'stroke-dasharray="4 3"/>')
        body.append(_text(left + 30, y, f"target: worst ≤ {limit:g} {unit.split()[0]}"))
    return _svg(width, height, body)
