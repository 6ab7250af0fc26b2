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
                 compress: bool | None = None, compare=None, names: tuple[str, str] | None = None) -> dict:
    """Read ``paths``, write the page to ``output`` (atomically); returns ``{"experts", "bytes", "figures"}``.

    ``compress``: the data block as gzip + base64 (None: when its JSON exceeds 1 MiB). ``compare``: the
    inputs of a second run of the same layers × experts, shown beside the first with Δ
    (:mod:`moetools.report.compare`); ``names``: the two runs' names (default: their models' names).
    """
    from ..streams.files import write_file_atomic
    from .build import overview_figures, payload
    from .page import render_page

    options = options or ReportOptions()
    data = load_inputs(paths, baseline=baseline, options=options)
    model_name = (data.model or {}).get("name") or "model"
    content = payload(data, options.title or f"moe-report: {model_name}")
    figures = overview_figures(data)
    extra = meta_extra = ""
    if compare:
        from .compare import check_comparable, compare_section, merge_payloads, routing_change
        from .maps import map_specs
        from .page import model_line

        other = load_inputs(compare, options=options)
        names = names or _default_names(data, other)
        check_comparable(data, other, names)
        other_content = payload(other, "")
        content = merge_payloads(content, other_content, names, routing_change(data, other))
        content["maps"] = map_specs(data, content)
        figures = [(f"{names[0]}: {caption}", svg) for caption, svg in figures] + \
            [(f"{names[1]}: {caption}", svg) for caption, svg in overview_figures(other)]
        extra = compare_section(other, content, names)
        import html

        meta_extra = "".join(f"<br>{label}: {line}" for label, line in (
            ("A", f"{html.escape(names[0])} · {model_line(data.model or {}, content)}"),
            ("B", f"{html.escape(names[1])} · {model_line(other.model or {}, other_content)} · inputs: " + ", ".join(
                f"{html.escape(s['kind'])} ({html.escape(str(s['path']))})" for s in other.sources))))
    text = render_page(data, content, figures, compress, extra=extra, meta_extra=meta_extra).encode("utf-8")
    write_file_atomic(output, text)
    return {"experts": len(content["experts"]), "bytes": len(text), "figures": len(figures)}


def _default_names(a: ReportData, b: ReportData) -> tuple[str, str]:
    """The two models' names, or ``A`` and ``B`` where they are equal (two label sets of one model)."""
    first, second = ((x.model or {}).get("name") or "" for x in (a, b))
    return (first, second) if first and second and first != second else ("A", "B")


__all__ = ["ReportData", "ReportOptions", "build_report", "load_inputs"]
