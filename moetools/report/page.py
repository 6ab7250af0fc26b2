"""Assemble the one self-contained HTML file: style, script, figures and data all inline.

Nothing on the page refers to anything outside it (no ``src``/``href`` to a URL, no fonts to
fetch): it opens from ``file://`` on a machine with no network. The expert data is one
``<script type="application/json">`` block (formats/report.md) that page.js renders 50 cards at a
time, so a 16k-expert MONET report builds 50 cards' DOM, not 16k.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import html
import json
import re
from importlib import resources

from .. import __version__
from ..streams import strict_json
from ..streams.outputs import REPORT_GENERATOR


def _asset(name: str) -> str:
    return resources.files("moetools.report").joinpath(name).read_text(encoding="utf-8")


def inline_json(value) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = strict_json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


#: above this many bytes of JSON the data block is gzip + base64 (about 3x smaller on real reports)
COMPRESS_ABOVE = 1 << 20


def data_block(payload: dict, compress: bool | None = None) -> str:
    """The ``<script id="moe-data">`` element: JSON, or gzip + base64 when large (``compress=None``)."""
    text = inline_json(payload)
    if compress is None:
        compress = len(text) > COMPRESS_ABOVE
    if not compress:
        return f'<script type="application/json" id="moe-data">{text}</script>'
    packed = base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")
    return f'<script type="application/json" id="moe-data" data-encoding="gzip+base64">{packed}</script>'


def read_data_block(html_text: str) -> dict:
    """The inline JSON of a report (either encoding): for tests and scripts that read a report back."""
    match = re.search(r'<script type="application/json" id="moe-data"( data-encoding="gzip\+base64")?>(.*?)</script>',
                      html_text, re.DOTALL)
    if match is None:
        raise ValueError("no moe-data block: not a moe-report page")
    body = match.group(2)
    if match.group(1):
        body = gzip.decompress(base64.b64decode(body)).decode("utf-8")
    return json.loads(body)


def short_names(paths: list[str]) -> list[str]:
    """Each path's last component, with as many parent components as it takes to tell equal ones apart
    (``run1/olmoe``, ``run2/olmoe``); a path given twice gets its position (``olmoe (#2)``)."""
    parts = [[part for part in str(path).replace("\\", "/").split("/") if part] or [str(path)] for path in paths]
    depth = [1] * len(parts)
    while True:
        names = ["/".join(part[-d:]) for part, d in zip(parts, depth)]
        clashing = [i for i, name in enumerate(names) if names.count(name) > 1]
        growing = [i for i in clashing if depth[i] < len(parts[i])]
        if not growing:
            return [f"{name} (#{i + 1})" if i in clashing else name for i, name in enumerate(names)]
        for i in growing:
            depth[i] += 1


def _eval_table(data) -> str:
    """moe-eval's domain x model loss table (delta against the first model beside each loss); a model is named
    by its directory's short name, its full path on hover."""
    if not data.eval_domains:
        return ""
    models = sorted(data.eval_models) or sorted({record["model"] for record in data.eval_domains})
    paths = [str(path) for path in (data.eval_header or {}).get("models") or []]
    shorts = short_names(paths)

    def name(index):
        record = data.eval_models.get(index) or {}
        masked = " (masked)" if record.get("masked") else ""
        short, full = (shorts[index], paths[index]) if index < len(paths) else (str(index), str(index))
        return f'<span title="{html.escape(full)}">{html.escape(short + masked)}</span>'

    domains = list(dict.fromkeys(record["domain"] for record in data.eval_domains))
    cell = {(record["model"], record["domain"]): record for record in data.eval_domains}
    rows = ["<tr><th>domain</th>" + "".join(f"<th>{name(m)}</th>" for m in models) + "</tr>"]
    for domain in domains:
        cells = []
        for model in models:
            record = cell.get((model, domain)) or {}
            loss, delta = record.get("loss"), record.get("delta_loss")
            text = "–" if loss is None else f"{loss:.3f}"
            if delta is not None:
                text += f" ({delta:+.3f})"
            shade = "" if delta is None else f' style="background:rgba({"200,40,40" if delta > 0 else "40,140,40"},' \
                f'{min(0.6, abs(delta) / 2 + 0.05):.2f})"'
            cells.append(f"<td{shade}>{text}</td>")
        rows.append(f"<tr><th>{html.escape(str(domain))}</th>{''.join(cells)}</tr>")
    choices = "".join(f"<li>{name(r['model'])}: {html.escape(str(r.get('task')))} acc "
                      f"{r.get('acc')} (Δ {r.get('delta_acc')})</li>" for r in data.eval_choices)
    return ("<h2>Evaluation (moe-eval)</h2><p class=meta>loss in nats per token; in brackets the change against "
            f"the first model</p><table class=eval>{''.join(rows)}</table>" + (f"<ul>{choices}</ul>" if choices else ""))


def _sets_table(data) -> str:
    if not data.sets:
        return ""
    rows = []
    for name, chosen in data.sets:
        criterion = chosen.provenance.get("criterion") or {}
        what = ", ".join(f"{k}={v}" for k, v in criterion.items() if v not in (None, False, [], {}))
        layers = "; ".join(f"{layer}: {', '.join(map(str, ids))}" for layer, ids in chosen.items())
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{len(chosen)}</td><td>{html.escape(what)}</td>"
                    f"<td style='text-align:left'>{html.escape(layers[:2000])}</td></tr>")
    return ("<h2>Selected expert sets</h2><table class=sets><tr><th>set</th><th>experts</th><th>criterion</th>"
            f"<th>layer: experts</th></tr>{''.join(rows)}</table>")


def render_page(data, payload: dict, figures: list[tuple[str, str]], compress: bool | None = None) -> str:
    """The whole HTML document."""
    title = html.escape(payload["title"])
    model = payload.get("model") or {}
    sources = ", ".join(f"{html.escape(s['kind'])} ({html.escape(str(s['path']))})" for s in payload["sources"])
    meta = (f"model {html.escape(str(model.get('name')))} · {html.escape(str(model.get('model_type')))} · "
            f"{len(payload['layers'])} MoE layers × {payload['num_experts']} experts · top-{model.get('top_k')} · "
            f"{html.escape(str(model.get('fingerprint')))}<br>inputs: {sources}<br>written by moe-report "
            f"{__version__} on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    overview = "".join(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
                       for caption, svg in figures)
    if not overview:
        overview = "<p class=meta>no scores or trace given: no overview figures</p>"
    controls = ('<div id="controls"><input id="search" type="search" placeholder="search labels or 3/17">'
                '<select id="layer"><option value="">all layers</option></select>'
                '<select id="set"><option value="">all experts</option></select>'
                '<label>sort <select id="sort"><option value="">layer, expert</option></select></label>'
                '<select id="dir"><option value="desc">descending</option><option value="asc">ascending</option>'
                '</select><input id="min" type="number" step="any" placeholder="min value" style="width:90px">'
                '<button id="prev">◀</button><button id="next">▶</button><span id="count"></span></div>')
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>" + REPORT_GENERATOR +
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; script-src 'unsafe-inline'\">"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{title}</title>"
            f"<style>{_asset('page.css')}</style></head><body>"
            f"<h1>{title}</h1><p class=meta>{meta}</p>"
            f"<section id=overview><h2>Overview</h2>{overview}</section>{_sets_table(data)}{_eval_table(data)}"
            f"<h2>Experts</h2>{controls}<div id=cards></div>"
            f"{data_block(payload, compress)}"
            f"<script>{_asset('page.js')}</script></body></html>\n")


__all__ = ["data_block", "inline_json", "read_data_block", "render_page", "short_names"]
