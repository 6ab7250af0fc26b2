"""moe-report: one self-contained HTML page of a model's experts (formats/report.md).

    from moetools.report import build_report
    build_report(["trace.msgpack.zst", "samples.msgpack.zst", "labels.jsonl", "scores.jsonl"], "report.html")

Inputs are any subset of trace, samples, labels, scores and eval streams and experts.json files of
one model, in any order (:mod:`moetools.report.inputs`); the figures are drawn with matplotlib at
build time (:mod:`moetools.report.plots` says why), the cards by the page's own script from inline
JSON, one page of 50 at a time (:mod:`moetools.report.page`).
"""

from __future__ import annotations

from .inputs import ReportData, ReportOptions, load_inputs


def build_report(paths, output, *, baseline=None, options: ReportOptions | None = None,
                 compress: bool | None = None) -> dict:
    """Read ``paths``, write the page to ``output`` (atomically); returns ``{"experts", "bytes", "figures"}``.

    ``compress``: the data block as gzip + base64 (None: when its JSON exceeds 1 MiB).
    """
    from ..streams.files import write_file_atomic
    from .build import overview_figures, payload
    from .page import render_page

    options = options or ReportOptions()
    data = load_inputs(paths, baseline=baseline, options=options)
    model_name = (data.model or {}).get("name") or "model"
    content = payload(data, options.title or f"moe-report: {model_name}")
    figures = overview_figures(data)
    text = render_page(data, content, figures, compress).encode("utf-8")
    write_file_atomic(output, text)
    return {"experts": len(content["experts"]), "bytes": len(text), "figures": len(figures)}


__all__ = ["ReportData", "ReportOptions", "build_report", "load_inputs"]
