"""The report's figures: matplotlib rendering SVG at build time.

Why matplotlib and not Plotly's offline bundle: the page must open from ``file://`` with no
network and stay small for 16k-expert MONET models. Plotly inlines ~4.5 MB of JavaScript into
every report and draws in the browser; matplotlib draws here, once, and the page carries only
the finished SVG (text kept as ``<text>`` so fonts come from the browser). The layer x expert
maps are not figures: the page paints them on a canvas from the inline data, one pixel per
expert, so they can show a value on hover and open a card on click (moetools/report/maps.py). It is maintained, already in wide use, and needs no browser engine at build time.
Figures use ``matplotlib.figure.Figure`` directly (no pyplot, no global state, no display).

Per-expert pictures (the domain histogram of a card) are not matplotlib figures: 16k SVGs would
cost seconds each thousand and tens of MB; the page draws them lazily as CSS bars from the
inline JSON (moetools/report/page.py).
"""

from __future__ import annotations

import io
import re

import numpy as np

#: text.parse_math off: labels are plain text (a domain named "$\frac{1}{$" is drawn as written, not parsed
#: as mathtext, which fails on it)
SVG_RC = {"svg.fonttype": "none", "svg.hashsalt": "moetools-report", "font.size": 9,
          "image.interpolation": "nearest", "text.parse_math": False, "text.usetex": False}


def figure_svg(figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML declaration, no DOCTYPE, no date)."""
    from matplotlib.backends.backend_svg import FigureCanvasSVG

    buffer = io.StringIO()
    FigureCanvasSVG(figure)
    figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "moetools"})
    text = buffer.getvalue()
    return re.sub(r"^.*?(<svg\b)", r"\1", text, count=1, flags=re.DOTALL)


def _new_figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def grouped_bars_svg(title: str, groups: list[str], series: list[tuple[str, list[float]]], *, ylabel: str = "",
                     reference: float | None = None, reference_label: str = "") -> str:
    """Bars per group, one colour per series (e.g. own-domain share vs elsewhere vs baseline)."""
    import matplotlib

    with matplotlib.rc_context(SVG_RC):
        figure = _new_figure(max(4.0, 0.9 * len(groups) + 2.0), 2.8)
        axis = figure.add_subplot()
        width = 0.8 / max(1, len(series))
        positions = np.arange(len(groups))
        for index, (name, values) in enumerate(series):
            axis.bar(positions + index * width - 0.4 + width / 2, np.asarray(values, dtype=float), width, label=name)
        if reference is not None:
            axis.axhline(reference, color="black", linewidth=0.8, linestyle="--", label=reference_label or None)
        axis.set_xticks(positions, groups, rotation=20 if len(groups) > 6 else 0)
        axis.set_ylabel(ylabel)
        axis.set_title(title, loc="left", fontsize=10)
        axis.legend(fontsize=8, frameon=False)
        return figure_svg(figure)


__all__ = ["figure_svg", "grouped_bars_svg"]
