"""
Bar charts as inline SVG, built on the server with the escaping builders
of L{pymailer.web.html}: no script, no style attribute (colours are SVG
presentation attributes, C{fill=}), so they show under the admin pages'
Content-Security-Policy, which allows neither.
"""

from pymailer.web.html import element, join

WIDTH = 720
HEIGHT = 220
LEFT = 44  # room for the y-axis numbers
RIGHT = 8
TOP = 28  # room for the legend
BOTTOM = 22  # room for the slot labels
AXIS = "#889"
TEXT = "#334"


def _fmt(x):
    """A coordinate, short (no 12.000000001)."""
    return f"{x:.1f}".rstrip("0").rstrip(".")


def barChart(title, labels, series, maxLabels=12):
    """
    A grouped bar chart: for each slot (C{labels}), one bar per series.

    @param labels: the slots' names, oldest first (C{"12:05"}).
    @param series: C{[(name, colour, values)]}, C{values} one per slot.
    @param maxLabels: label at most this many slots (every n-th).
    @return: L{Markup} of an C{<svg>}; each bar has a C{<title>} (shown
        on hover) and C{data-series}, C{data-slot}, C{data-value}.
    """
    slots = len(labels)
    top = max([1] + [v for _, _, values in series for v in values])
    plotWidth, plotHeight = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    group = plotWidth / max(slots, 1)
    bar = group * 0.8 / max(len(series), 1)
    baseline = TOP + plotHeight
    parts = [
        element("title", title),
        element("line", x1=LEFT, y1=baseline, x2=WIDTH - RIGHT, y2=baseline, stroke=AXIS),
        element("line", x1=LEFT, y1=TOP, x2=LEFT, y2=baseline, stroke=AXIS),
        element("line", x1=LEFT, y1=TOP, x2=WIDTH - RIGHT, y2=TOP, stroke="#dde"),
        element("text", str(top), x=LEFT - 4, y=TOP + 4, text_anchor="end", font_size=11,
                fill=TEXT),
        element("text", "0", x=LEFT - 4, y=baseline + 4, text_anchor="end", font_size=11,
                fill=TEXT),
    ]
    every = max(1, -(-slots // maxLabels))
    for slot, label in enumerate(labels):
        x = LEFT + slot * group
        if slot % every == 0:
            parts.append(element("text", label, x=_fmt(x + group / 2), y=HEIGHT - 6,
                                 text_anchor="middle", font_size=11, fill=TEXT))
        for i, (name, colour, values) in enumerate(series):
            value = values[slot]
            height = plotHeight * value / top
            parts.append(element(
                "rect", element("title", f"{name}, {label}: {value}"),
                x=_fmt(x + group * 0.1 + i * bar), y=_fmt(baseline - height),
                width=_fmt(bar), height=_fmt(height), fill=colour,
                class_="bar", data_series=name, data_slot=slot, data_value=value))
    # The legend, in a row above the plot.
    for i, (name, colour, _) in enumerate(series):
        x = LEFT + i * 110
        parts.append(element("rect", x=x, y=6, width=12, height=12, fill=colour))
        parts.append(element("text", name, x=x + 16, y=16, font_size=12, fill=TEXT))
    summary = "; ".join(f"{name} {sum(values)}" for name, _, values in series)
    return element("svg", join(parts), xmlns="http://www.w3.org/2000/svg",
                   viewBox=f"0 0 {WIDTH} {HEIGHT}", width=WIDTH, height=HEIGHT, role="img",
                   aria_label=f"{title}: {summary}")
