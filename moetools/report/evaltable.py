"""moe-eval's loss table on the page: a domain × model table of losses, each change against the first model
with its 95% interval (formats/eval.md ``delta_loss_ci95``), the experts each masked model masked as links
to their cards, and the random controls (``moe-select --random`` with several seeds) as one band per domain.
"""

from __future__ import annotations

import html

from .page import expert_links, short_names


def _random_seed(record: dict):
    """The seed of a masked model whose experts were drawn by ``moe-select --random``, else None."""
    masked = record.get("masked") if isinstance(record.get("masked"), dict) else {}
    provenance = ((masked.get("experts") or {}).get("provenance") or {}) if isinstance(masked.get("experts"), dict) else {}
    criterion = provenance.get("criterion") if isinstance(provenance.get("criterion"), dict) else {}
    return criterion.get("seed", 0) if criterion.get("random") is not None else None


def _random_band(data, models, domains, cell) -> str:
    """With two or more random controls: per domain the range (and mean) of their loss changes."""
    controls = [m for m in models if _random_seed(data.eval_models.get(m) or {}) is not None]
    if len(controls) < 2:
        return ""
    seeds = ", ".join(str(_random_seed(data.eval_models[m])) for m in controls)
    rows = []
    for domain in domains:
        deltas = [cell[(m, domain)]["delta_loss"] for m in controls
                  if (m, domain) in cell and cell[(m, domain)].get("delta_loss") is not None]
        if deltas:
            rows.append(f"<tr><th>{html.escape(str(domain))}</th><td>{min(deltas):+.3f}</td><td>{max(deltas):+.3f}"
                        f"</td><td>{sum(deltas) / len(deltas):+.3f}</td></tr>")
    return (f"<table class='eval band'><caption>random controls: {len(controls)} random sets (seeds {seeds}), the "
            "band of their loss changes</caption><tr><th>domain</th><th>lowest</th><th>highest</th><th>mean</th></tr>"
            f"{''.join(rows)}</table>")


def _masked_row(data, models) -> str:
    """Under the eval table, per masked model the experts masked, each a link to its card: found among the
    experts.json inputs by the sha256 (or path) that moe-mask recorded (formats/mask.md ``experts.file``)."""
    cells, any_masked = [], False
    for model in models:
        masked = (data.eval_models.get(model) or {}).get("masked") or {}
        source = ((masked.get("experts") or {}).get("file") or {}) if isinstance(masked, dict) else {}
        if not masked:
            cells.append("<td></td>")
            continue
        any_masked = True
        found = next(((name, chosen) for name, chosen in data.sets
                      if source and (data.set_files.get(name, {}).get("sha256") == source.get("sha256")
                                     or data.set_files.get(name, {}).get("path") == source.get("path"))), None)
        if found is None:
            cells.append("<td class=meta>its experts.json is not among the inputs</td>")
            continue
        name, chosen = found
        links = "; ".join(f"{layer}: {expert_links(layer, ids, 16)}" for layer, ids in chosen.items())
        cells.append(f"<td class=masked style='text-align:left'>{html.escape(name)} — {links}</td>")
    return f"<tr><th>masked experts</th>{''.join(cells)}</tr>" if any_masked else ""


def eval_table(data) -> str:
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
                interval = record.get("delta_loss_ci95")
                text += f" ({delta:+.3f}" + (f" [{interval[0]:+.3f}, {interval[1]:+.3f}]" if interval else "") + ")"
            shade = "" if delta is None else f' style="background:rgba({"200,40,40" if delta > 0 else "40,140,40"},' \
                f'{min(0.6, abs(delta) / 2 + 0.05):.2f})"'
            cells.append(f"<td{shade}>{text}</td>")
        rows.append(f"<tr><th>{html.escape(str(domain))}</th>{''.join(cells)}</tr>")
    rows.append(_masked_row(data, models))
    band = _random_band(data, models, domains, cell)
    choices = "".join(f"<li>{name(r['model'])}: {html.escape(str(r.get('task')))} acc "
                      f"{r.get('acc')} (Δ {r.get('delta_acc')})</li>" for r in data.eval_choices)
    return ("<h2>Evaluation (moe-eval)</h2><p class=meta>loss in nats per token; in brackets the change against "
            "the first model and, where moe-eval wrote per-document losses, its 95% interval (paired bootstrap over "
            f"the domain's documents)</p><table class=eval>{''.join(rows)}</table>{band}"
            + (f"<ul>{choices}</ul>" if choices else ""))


__all__ = ["eval_table"]
