"""Inline SVG plots for the HTML report, drawn server-side: no JavaScript, no CDN.

Built with ``xml.etree.ElementTree``, which escapes every text and attribute, so labels and spans from
the data cannot inject markup. Each function returns the SVG as :class:`markupsafe.Markup`.
Coordinates are SVG user units (pixels at 100 % zoom). Axes carry round ticks (1, 2 or 5 x 10^k apart,
:func:`nice_ticks`) and start where the data does (a scatter's axes span its points, not 0); a scatter labels
its points when there are at most :data:`LABEL_POINTS` of them.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

from markupsafe import Markup

PALETTE = ("#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#76b7b2", "#b07aa1", "#edc948", "#9c755f", "#bab0ac")
FONT = {"font-family": "sans-serif", "font-size": "11"}
TICKS = 5  # about this many intervals on an axis
LABEL_POINTS = 20  # a scatter with at most this many points writes each point's label beside it


def _svg(width: float, height: float, title: str) -> ET.Element:
    svg = ET.Element("svg", {"xmlns": "http://www.w3.org/2000/svg", "width": f"{width:.0f}",
                             "height": f"{height:.0f}", "viewBox": f"0 0 {width:.0f} {height:.0f}",
                             "role": "img", **FONT})
    ET.SubElement(svg, "title").text = title
    return svg


def _text(parent, x, y, text, anchor="middle", **attrs) -> ET.Element:
    el = ET.SubElement(parent, "text", {"x": f"{x:.1f}", "y": f"{y:.1f}", "text-anchor": anchor, **attrs})
    el.text = str(text)
    return el


def _rect(parent, x, y, w, h, fill, tooltip: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, "rect", {"x": f"{x:.1f}", "y": f"{y:.1f}", "width": f"{max(w, 0):.1f}",
                                        "height": f"{max(h, 0):.1f}", "fill": fill, **attrs})
    if tooltip:
        ET.SubElement(el, "title").text = tooltip
    return el


def _markup(svg: ET.Element) -> Markup:
    return Markup(ET.tostring(svg, encoding="unicode"))


def ccs_color(ccs: int | None, top: int = 5) -> str:
    """White (0) to dark blue (``top``); grey for a head without a score."""
    if ccs is None:
        return "#dddddd"
    t = min(max(ccs / top, 0.0), 1.0)
    lo, hi = (247, 251, 255), (8, 48, 107)
    return "#" + "".join(f"{round(a + (b - a) * t):02x}" for a, b in zip(lo, hi, strict=True))


def heatmap(cells: Sequence[dict], title: str, cell: int = 30) -> Markup:
    """Layer x head grid of CCS; ``cells``: dicts with layer, head, ccs (or None), tooltip (str) and href (the
    link of the cell, e.g. ``#anchor`` of the head's card; None: no link)."""
    layers = sorted({c["layer"] for c in cells})
    heads = sorted({c["head"] for c in cells})
    left, top = 44, 30
    svg = _svg(left + cell * len(heads) + 10, top + cell * len(layers) + 10, title)
    for j, h in enumerate(heads):
        _text(svg, left + cell * (j + 0.5), top - 8, f"H{h}")
    for i, l in enumerate(layers):
        _text(svg, left - 6, top + cell * (i + 0.5) + 4, f"L{l}", anchor="end")
    for c in cells:
        x, y = left + cell * heads.index(c["head"]), top + cell * layers.index(c["layer"])
        parent = ET.SubElement(svg, "a", {"href": c["href"]}) if c["href"] else svg
        g = ET.SubElement(parent, "g", {"class": "cell"})
        ET.SubElement(g, "title").text = c["tooltip"]
        _rect(g, x, y, cell - 1, cell - 1, ccs_color(c["ccs"]))
        dark = c["ccs"] is not None and c["ccs"] >= 3
        _text(g, x + cell / 2, y + cell / 2 + 4, "–" if c["ccs"] is None else c["ccs"],
              fill="#ffffff" if dark else "#222222")
    return _markup(svg)


def nice_ticks(lo: float, hi: float, n: int = TICKS) -> list[float]:
    """Round tick values covering [lo, hi]: about ``n`` intervals of 1, 2 or 5 x 10^k, from a multiple of the
    step at or below ``lo`` to one at or above ``hi`` (lo = hi: one step either side)."""
    if hi < lo:
        lo, hi = hi, lo
    span = hi - lo or abs(hi) or 1.0
    raw = span / n
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    if first == last:
        first, last = first - 1, last + 1
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return [round(i * step, digits) for i in range(first, last + 1)]


def _tick_text(value: float) -> str:
    return f"{value:g}"


def _nice_max(value: float) -> float:
    """The smallest round tick at or above ``value`` (1.0 for no positive value)."""
    return nice_ticks(0.0, value)[-1] if value > 0 else 1.0


def _color(names: Sequence[str], name: str, colors: dict[str, str] | None) -> str:
    return (colors or {}).get(name) or PALETTE[list(names).index(name) % len(PALETTE)]


def _legend(svg, x, y, names: Sequence[str], colors: dict[str, str] | None) -> None:
    for i, name in enumerate(names):
        _rect(svg, x, y + 16 * i, 10, 10, _color(names, name, colors))
        _text(svg, x + 14, y + 16 * i + 9, name, anchor="start")


def _errorbar(svg, cx: float, y1: float, y2: float) -> None:
    """A vertical error bar at ``cx`` from ``y1`` to ``y2`` (SVG units) with 6-unit caps."""
    for x1, x2, ya, yb in ((cx, cx, y1, y2), (cx - 3, cx + 3, y1, y1), (cx - 3, cx + 3, y2, y2)):
        ET.SubElement(svg, "line", {"x1": f"{x1:.1f}", "x2": f"{x2:.1f}", "y1": f"{ya:.1f}", "y2": f"{yb:.1f}",
                                    "stroke": "#222222", "class": "errorbar"})


def _y_grid(svg, left: float, top: float, plot_w: float, plot_h: float, y_max: float, y_label: str) -> None:
    """Horizontal grid lines with their values at the round ticks from 0 to ``y_max``, and the rotated y-axis
    label."""
    for t in (t for t in nice_ticks(0.0, y_max) if t <= y_max * (1 + 1e-9)):
        y = top + plot_h - plot_h * t / y_max
        ET.SubElement(svg, "line", {"x1": str(left), "x2": f"{left + plot_w:.1f}", "y1": f"{y:.1f}", "y2": f"{y:.1f}",
                                    "stroke": "#e5e5e5"})
        _text(svg, left - 4, y + 4, _tick_text(t), anchor="end")
    _text(svg, 12, top + plot_h / 2, y_label, transform=f"rotate(-90 12 {top + plot_h / 2:.1f})")


def grouped_bars(categories: Sequence[str], series: Mapping[str, Sequence[tuple[float | None, float | None]]],
                 title: str, y_label: str, y_max: float | None = None, width: int = 640,
                 colors: dict[str, str] | None = None, x_label: str | None = None) -> Markup:
    """Bars per category, one per series, with optional error bars (value +- err); ``x_label`` names the
    categories' axis (none: the categories name themselves).

    ``series``: name -> one (value, err) per category; None values draw no bar, None errs no error bar.
    ``colors``: series name -> colour (default: the palette in series order).
    """
    names = list(series)
    left, right, top, bottom = 50, 170, 20, 40
    height = 260
    vals = [v + (e or 0) for s in series.values() for v, e in s if v is not None]
    y_max = y_max or _nice_max(max(vals, default=1.0))
    plot_w, plot_h = width - left - right, height - top - bottom
    svg = _svg(width, height, title)
    scale = plot_h / y_max
    _y_grid(svg, left, top, plot_w, plot_h, y_max, y_label)
    group_w = plot_w / max(len(categories), 1)
    bar_w = group_w * 0.8 / max(len(names), 1)
    for i, cat in enumerate(categories):
        _text(svg, left + group_w * (i + 0.5), top + plot_h + 16, cat)
        for j, name in enumerate(names):
            value, err = series[name][i]
            if value is None:
                continue
            x = left + group_w * i + group_w * 0.1 + bar_w * j
            h = max(value, 0) * scale
            tip = f"{name} · {cat}: {value:.4g}" + (f" ± {err:.3g}" if err else "")
            _rect(svg, x, top + plot_h - h, bar_w - 1, h, _color(names, name, colors), tooltip=tip, **{"class": "bar"})
            if err:
                _errorbar(svg, x + bar_w / 2, top + plot_h - (value - err) * scale,
                          top + plot_h - (value + err) * scale)
    ET.SubElement(svg, "line", {"x1": str(left), "x2": str(left + plot_w), "y1": str(top + plot_h),
                                "y2": str(top + plot_h), "stroke": "#444444"})
    if x_label:
        _text(svg, left + plot_w / 2, height - 6, x_label)
    _legend(svg, left + plot_w + 12, top, names, colors)
    return _markup(svg)


def scatter(points: Sequence[dict], title: str, x_label: str, y_label: str, width: int = 640,
            colors: dict[str, str] | None = None) -> Markup:
    """Points (dicts with x, y, series, tooltip and optional label) coloured by series (``colors``: series name ->
    colour; default: the palette in order of first appearance). Each axis spans the round ticks around its data
    (:func:`nice_ticks`), with a dashed line at 0 where 0 is inside; up to :data:`LABEL_POINTS` points carry
    their label."""
    left, right, top, bottom = 60, 170, 20, 44
    height = 320
    plot_w, plot_h = width - left - right, height - top - bottom
    svg = _svg(width, height, title)
    x_ticks = nice_ticks(min(p["x"] for p in points), max(p["x"] for p in points))
    y_ticks = nice_ticks(min(p["y"] for p in points), max(p["y"] for p in points))
    x0, x1, y0, y1 = x_ticks[0], x_ticks[-1], y_ticks[0], y_ticks[-1]

    def px(x):
        return left + (x - x0) / (x1 - x0) * plot_w

    def py(y):
        return top + plot_h - (y - y0) / (y1 - y0) * plot_h

    _rect(svg, left, top, plot_w, plot_h, "none", stroke="#444444")
    zero = [(px(0), px(0), top, top + plot_h)] if x0 < 0 < x1 else []
    zero += [(left, left + plot_w, py(0), py(0))] if y0 < 0 < y1 else []
    for a, b, c, d in zero:
        ET.SubElement(svg, "line", {"x1": f"{a:.1f}", "x2": f"{b:.1f}", "y1": f"{c:.1f}", "y2": f"{d:.1f}",
                                    "stroke": "#bbbbbb", "stroke-dasharray": "4 3"})
    for xv in x_ticks:
        _text(svg, px(xv), top + plot_h + 14, _tick_text(xv))
    for yv in y_ticks:
        _text(svg, left - 4, py(yv) + 4, _tick_text(yv), anchor="end")
    _text(svg, left + plot_w / 2, height - 6, x_label)
    _text(svg, 12, top + plot_h / 2, y_label, transform=f"rotate(-90 12 {top + plot_h / 2:.1f})")
    names = list(dict.fromkeys(p["series"] for p in points))
    labelled = len(points) <= LABEL_POINTS
    for p in points:
        dot = ET.SubElement(svg, "circle", {"cx": f"{px(p['x']):.1f}", "cy": f"{py(p['y']):.1f}", "r": "5",
                                            "fill": _color(names, p["series"], colors),
                                            "fill-opacity": "0.85", "class": "point"})
        ET.SubElement(dot, "title").text = p["tooltip"]
        if labelled and p.get("label"):
            _text(svg, px(p["x"]) + 7, py(p["y"]) - 6, p["label"], anchor="start", fill="#333333",
                  **{"class": "point-label", "font-size": "10"})
    _legend(svg, left + plot_w + 12, top, names, colors)
    return _markup(svg)


def lines(series: Mapping[str, Sequence[tuple[float, float, float | None]]], title: str, x_label: str, y_label: str,
          width: int = 640, colors: dict[str, str] | None = None) -> Markup:
    """One polyline with markers per series over a linear x axis from 0; ``series``: name -> (x, y, err) points
    in x order (err: half the error bar, None for none); ``colors`` as in :func:`grouped_bars`."""
    names = list(series)
    left, right, top, bottom = 50, 170, 20, 44
    height = 280
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for s in series.values() for p in s]
    x_max = max((x for x, _, _ in points), default=1) or 1
    y_max = _nice_max(max((y + (e or 0) for _, y, e in points), default=1.0))
    svg = _svg(width, height, title)
    _y_grid(svg, left, top, plot_w, plot_h, y_max, y_label)

    def px(x):
        return left + plot_w * x / x_max

    def py(y):
        return top + plot_h - plot_h * max(y, 0) / y_max

    for x in sorted({x for x, _, _ in points}):
        _text(svg, px(x), top + plot_h + 14, f"{x:g}")
    _text(svg, left + plot_w / 2, height - 6, x_label)
    ET.SubElement(svg, "line", {"x1": str(left), "x2": f"{left + plot_w:.1f}", "y1": f"{top + plot_h:.1f}",
                                "y2": f"{top + plot_h:.1f}", "stroke": "#444444"})
    for name in names:
        color = _color(names, name, colors)
        ET.SubElement(svg, "polyline", {"points": " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in series[name]),
                                        "fill": "none", "stroke": color, "stroke-width": "2"})
        for x, y, err in series[name]:
            if err:
                _errorbar(svg, px(x), py(y - err), py(y + err))
            dot = ET.SubElement(svg, "circle", {"cx": f"{px(x):.1f}", "cy": f"{py(y):.1f}", "r": "4", "fill": color,
                                                "class": "marker"})
            ET.SubElement(dot, "title").text = f"{name} · {x:g}: {y:.4g}" + (f" ± {err:.3g}" if err else "")
    _legend(svg, left + plot_w + 12, top, names, colors)
    return _markup(svg)


def layer_panel(layers: Sequence[dict], title: str, colors: dict[str, str], family_colors: dict[str, str],
                max_width: int = 440) -> Markup:
    """One model's small multiple, over its analysed layers (x, in order): above, bars of the share (0..1, the same
    scale in every panel) of the layer's heads with high and with low CCS (``colors`` of ``high`` and ``low``);
    below, a bar per layer stacked by label family, each segment the family's share of the layer's heads
    (``family_colors``: family -> colour, in stacking order). ``layers``: dicts with layer, n_heads, n_high, n_low,
    share_high, share_low and families (dicts with family and n_heads), as canned query model_layers gives them."""
    left, top, chart_h, gap, bottom = 34, 8, 80, 26, 18
    step = min(48.0, (max_width - left - 8) / max(len(layers), 1))
    width = left + step * len(layers) + 8
    svg = _svg(width, top + 2 * chart_h + gap + bottom, title)
    for y0, label in ((top, "high / low"), (top + chart_h + gap, "families")):
        for t in (0.0, 0.5, 1.0):
            y = y0 + chart_h * (1 - t)
            ET.SubElement(svg, "line", {"x1": str(left), "x2": f"{width - 8:.1f}", "y1": f"{y:.1f}", "y2": f"{y:.1f}",
                                        "stroke": "#444444" if t == 0 else "#e5e5e5"})
            _text(svg, left - 3, y + 4, f"{t:g}", anchor="end")
        for j, r in enumerate(layers):
            _text(svg, left + step * (j + 0.5), y0 + chart_h + 12, f"L{r['layer']}")
        _text(svg, 9, y0 + chart_h / 2, label, transform=f"rotate(-90 9 {y0 + chart_h / 2:.1f})", **{"font-size": "9"})
    bar = step * 0.38
    for j, r in enumerate(layers):
        x = left + step * j + step * 0.12
        for k, level in enumerate(("high", "low")):
            share = r[f"share_{level}"]
            _rect(svg, x + bar * k, top + chart_h * (1 - share), bar - 1, chart_h * share, colors[level],
                  tooltip=f"L{r['layer']} · {level} CCS: {r[f'n_{level}']} of {r['n_heads']} heads ({share:.0%})",
                  **{"class": f"bar {level}"})
        y = top + 2 * chart_h + gap
        counts = {f["family"]: f["n_heads"] for f in r["families"]}
        for family in [f for f in family_colors if f in counts] + sorted(set(counts) - set(family_colors)):
            h = chart_h * counts[family] / r["n_heads"]
            y -= h
            _rect(svg, x, y, 2 * bar - 1, h, family_colors.get(family, "#bab0ac"),
                  tooltip=f"L{r['layer']} · {family}: {counts[family]} of {r['n_heads']} heads",
                  **{"class": "bar family"})
    return _markup(svg)


def diverging_bars(categories: Sequence[str], series: Mapping[str, Sequence[float | None]], title: str, x_label: str,
                   width: int = 640, colors: dict[str, str] | None = None, fmt: str = "+.3g") -> Markup:
    """Horizontal bars from a zero line, left for negative and right for positive values: per category (a row
    group, its name above its bars) one bar per series, its value written beside it (``fmt``); None: no bar,
    the words "not evaluated". The x axis is symmetric about 0."""
    names = list(series)
    left, right, top, bar_h, label_h, gap = 12, 12, 8, 13, 15, 8
    values = [abs(v) for s in series.values() for v in s if v is not None]
    x_max = _nice_max(max(values, default=1.0))
    group_h = label_h + bar_h * len(names) + gap
    plot_w = width - left - right
    height = top + group_h * len(categories) + 44
    svg = _svg(width, height, title)
    zero = left + plot_w / 2

    def px(v):
        return zero + v / x_max * (plot_w / 2 - 50)  # 50 units each side for the value text

    axis_y = top + group_h * len(categories)
    for t in (-1, -0.5, 0, 0.5, 1):
        ET.SubElement(svg, "line", {"x1": f"{px(t * x_max):.1f}", "x2": f"{px(t * x_max):.1f}", "y1": str(top),
                                    "y2": f"{axis_y:.1f}", "stroke": "#444444" if t == 0 else "#e5e5e5"})
        _text(svg, px(t * x_max), axis_y + 13, f"{t * x_max:+g}" if t else "0")
    _text(svg, zero, axis_y + 30, x_label)
    for i, cat in enumerate(categories):
        y = top + group_h * i
        _text(svg, left, y + 11, cat, anchor="start", **{"font-weight": "bold"})
        for j, name in enumerate(names):
            value, by = series[name][i], y + label_h + bar_h * j
            if value is None:
                _text(svg, zero + 4, by + bar_h - 3, f"{name}: not evaluated", anchor="start", fill="#777777")
                continue
            x0, x1 = sorted((zero, px(value)))
            _rect(svg, x0, by, x1 - x0, bar_h - 2, _color(names, name, colors),
                  tooltip=f"{cat} · {name}: {value:{fmt}}", **{"class": "bar"})
            _text(svg, x1 + 3 if value >= 0 else x0 - 3, by + bar_h - 3, f"{name} {value:{fmt}}",
                  anchor="start" if value >= 0 else "end")
    return _markup(svg)
