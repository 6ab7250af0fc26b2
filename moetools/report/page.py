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
from .health import health_panel


def _asset(name: str) -> str:
    return resources.files("moetools.report").joinpath(name).read_text(encoding="utf-8")


def inline_json(value) -> str:
    """JSON safe inside a ``<script>`` element (no ``</script>``, no ``<!--``)."""
    text = strict_json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") \
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


#: above this many bytes of JSON the data block is gzip + base64 (about 3x smaller on real reports)
COMPRESS_ABOVE = 1 << 20


#: experts per card-data chunk of a compressed page, and the fields only a card shows (decoded a chunk at a time)
CHUNK = 256
CARD_ONLY = ("c", "ho", "jv", "ll")


def _packed(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)).decode("ascii")


def data_block(payload: dict, compress: bool | None = None) -> str:
    """The ``<script id="moe-data">`` element: JSON, or gzip + base64 when large (``compress=None``).

    Compressed, the fields only a card shows (:data:`CARD_ONLY`: contexts, holdout examples, verdicts,
    logit lens) go into ``<script class="moe-chunk">`` elements of :data:`CHUNK` experts each, which the
    page decodes when it draws one of their cards: a 16k-expert page parses its index (scores, labels)
    and one chunk before its first cards, not every context (formats/report.md)."""
    text = inline_json(payload)
    if compress is None:
        compress = len(text) > COMPRESS_ABOVE
    if not compress:
        return f'<script type="application/json" id="moe-data">{text}</script>'
    experts = payload["experts"]
    index = [{key: value for key, value in expert.items() if key not in CARD_ONLY} for expert in experts]
    chunks = [[{key: expert[key] for key in CARD_ONLY if key in expert} for expert in experts[start:start + CHUNK]]
              for start in range(0, len(experts), CHUNK)]
    head = inline_json({**payload, "experts": index, "chunk": CHUNK})
    return (f'<script type="application/json" id="moe-data" data-encoding="gzip+base64">{_packed(head)}</script>'
            + "".join(f'<script type="application/json" class="moe-chunk" data-encoding="gzip+base64">'
                      f'{_packed(inline_json(chunk))}</script>' for chunk in chunks))


def read_data_block(html_text: str) -> dict:
    """The inline JSON of a report (either encoding, its chunks merged back): for tests and scripts that read
    a report back."""
    match = re.search(r'<script type="application/json" id="moe-data"( data-encoding="gzip\+base64")?>(.*?)</script>',
                      html_text, re.DOTALL)
    if match is None:
        raise ValueError("no moe-data block: not a moe-report page")
    body = match.group(2)
    if match.group(1):
        body = gzip.decompress(base64.b64decode(body)).decode("utf-8")
    data = json.loads(body)
    size = data.pop("chunk", None)
    if size:
        blocks = re.findall(r'<script type="application/json" class="moe-chunk" data-encoding="gzip\+base64">'
                            r'(.*?)</script>', html_text, re.DOTALL)
        for number, block in enumerate(blocks):
            for offset, fields in enumerate(json.loads(gzip.decompress(base64.b64decode(block)).decode("utf-8"))):
                data["experts"][number * size + offset].update(fields)
    return data


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


#: expert links shown per layer of a set (the rest counted; the set filter shows them all)
SET_LINKS = 64


def expert_links(layer, ids, limit: int = SET_LINKS) -> str:
    """Each expert id as a link to its card (``#LAYER/EXPERT``), the first ``limit`` of them."""
    ids = list(ids)
    shown = " ".join(f'<a class=eid href="#{int(layer)}/{int(e)}">{int(e)}</a>' for e in ids[:limit])
    return shown + (f" … (+{len(ids) - limit})" if len(ids) > limit else "")


def model_line(model: dict, payload: dict) -> str:
    """``model NAME · TYPE · L MoE layers × E experts · top-K · FINGERPRINT`` (escaped)."""
    return (f"model {html.escape(str(model.get('name')))} · {html.escape(str(model.get('model_type')))} · "
            f"{len(payload['layers'])} MoE layers × {payload['num_experts']} experts · top-{model.get('top_k')} · "
            f"{html.escape(str(model.get('fingerprint')))}")


def _sets_table(data) -> str:
    if not data.sets:
        return ""
    rows = []
    for name, chosen in data.sets:
        criterion = chosen.provenance.get("criterion") or {}
        what = ", ".join(f"{k}={v}" for k, v in criterion.items() if v not in (None, False, [], {}))
        layers = "; ".join(f"{layer}: {expert_links(layer, ids)}" for layer, ids in chosen.items())
        rows.append(f"<tr><th>{html.escape(name)}</th><td>{len(chosen)}</td><td>{html.escape(what)}</td>"
                    f"<td style='text-align:left'>{layers}</td></tr>")
    return ("<h2>Selected expert sets</h2><table class=sets><tr><th>set</th><th>experts</th><th>criterion</th>"
            f"<th>layer: experts</th></tr>{''.join(rows)}</table>")


def _documents(payload: dict) -> str:
    """The document view's frame (docs.js fills it from the data block's ``docs``)."""
    docs = payload.get("docs")
    if not docs:
        return ""
    return (f"<section id=documents><h2>Documents</h2><p class=meta>{len(docs)} traced documents (moe-report "
            "--documents N, or --document ID), each token with the experts the trace holds for it</p>"
            "<div id=docs></div></section>")


def render_page(data, payload: dict, figures: list[tuple[str, str]], compress: bool | None = None, *,
                extra: str = "", meta_extra: str = "") -> str:
    """The whole HTML document; ``extra``: sections after the eval table, ``meta_extra``: lines after the
    inputs (a comparison's second run, :mod:`moetools.report.compare`)."""
    from .evaltable import eval_table

    title = html.escape(payload["title"])
    model = payload.get("model") or {}
    sources = ", ".join(f"{html.escape(s['kind'])} ({html.escape(str(s['path']))})" for s in payload["sources"])
    meta = (f"{model_line(model, payload)}<br>inputs: {sources}{meta_extra}<br>written by moe-report "
            f"{__version__} on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    overview = "".join(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>"
                       for caption, svg in figures)
    if not overview and not payload.get("maps"):
        overview = "<p class=meta>no scores or trace given: no overview figures</p>"
    overview = "<div id=maps></div>" + overview
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
            f"<section id=overview><h2>Overview</h2>{overview}</section>{health_panel(data, payload.get('health'))}"
            f"{_sets_table(data)}{eval_table(data)}{extra}{_documents(payload)}"
            f"<h2>Experts</h2>{controls}<div id=cards></div>"
            f"{data_block(payload, compress)}"
            f"<script>{_asset('maps.js')}</script><script>{_asset('docs.js')}</script>"
            f"<script>{_asset('page.js')}</script></body></html>\n")


sets_table = _sets_table

__all__ = ["data_block", "inline_json", "model_line", "read_data_block", "render_page", "sets_table",
           "short_names"]
