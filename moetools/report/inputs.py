"""What moe-report reads: any subset of trace / samples / labels / scores / eval streams and experts.json
files of one model, given in any order (each stream is dispatched on its header's ``kind``).

Everything is folded into one :class:`ReportData` as it is read, so memory stays bounded by the
number of experts, never by the length of a trace: a trace contributes its per-domain routing mass
(``moetools.score.specialisation.DomainRouting``, (D, L, E) floats), samples only the few contexts
a card shows (``ReportOptions``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import FormatError, ModelMismatchError, UsageError
from ..models.shared_routers import RouterFold, shared_routers
from ..streams.files import file_sha256, is_stdio, read_input

STREAM_KINDS = ("trace", "samples", "labels", "scores", "eval")
READ_ORDER = ("scores", "labels", "samples", "trace", "eval")


@dataclass
class ReportOptions:
    """How much of each expert goes into the page (what bounds its size per expert)."""

    contexts: int = 4          # top contexts per card (explain.top, strongest first)
    holdout: int = 2           # holdout examples per side (positive, negative)
    context_tokens: int = 48   # tokens kept per context, centred on the marked token
    logit_lens: int = 8        # logit-lens tokens per card
    documents: int = 8         # documents of the trace in the document view (the first ones) ...
    document_ids: tuple | None = None   # ... or these (doc_id), in this order
    document_tokens: int = 256          # tokens kept per document
    title: str | None = None


@dataclass
class ExpertCard:
    """What one card shows; ``compact()`` is its entry in the page's inline JSON."""

    layer: int
    expert: int
    labels: list = field(default_factory=list)         # label records, one per labels stream, in input order
    scores: dict = field(default_factory=dict)         # the scores record, as read
    contexts: list = field(default_factory=list)
    holdout: list = field(default_factory=list)
    logit_lens: list = field(default_factory=list)
    sample_status: str | None = None
    sample_stats: dict | None = None


@dataclass
class ReportData:
    """Everything read, keyed by (layer, expert) where it is about one expert."""

    model: dict | None = None
    sources: list = field(default_factory=list)        # (path, kind, tool name)
    layers: list = field(default_factory=list)
    num_experts: int | None = None
    cards: dict = field(default_factory=dict)          # (layer, expert) -> ExpertCard
    scores_header: dict | None = None
    verdicts_unmatched: int = 0                        # verdicts whose context id is not the samples' (skipped)
    scores_summary: dict | None = None
    routing: object = None                             # DomainRouting of the trace
    routing_layers: list = field(default_factory=list)
    shared_layers: dict = field(default_factory=dict)  # router layer -> the layers it routes (shared routers)
    top_k: int | None = None
    baseline_routing: object = None                    # DomainRouting of a --baseline trace
    docs: list = field(default_factory=list)           # the document view's documents (moetools.report.documents)
    baseline_model: dict | None = None
    sets: list = field(default_factory=list)           # (name, ExpertSet)
    set_files: dict = field(default_factory=dict)      # set name -> {"path": resolved, "sha256": "sha256:…"}
    eval_header: dict | None = None
    eval_models: dict = field(default_factory=dict)    # index -> model record
    eval_domains: list = field(default_factory=list)   # domain records
    eval_choices: list = field(default_factory=list)

    def card(self, layer: int, expert: int) -> ExpertCard:
        key = (int(layer), int(expert))
        if key not in self.cards:
            self.cards[key] = ExpertCard(*key)
        return self.cards[key]


def _fingerprint(model) -> str | None:
    return model.get("fingerprint") if isinstance(model, dict) else None


def _describe(model) -> str:
    return f"{model.get('name')!r} ({model.get('fingerprint')})" if isinstance(model, dict) else "no model"


def _adopt_model(data: ReportData, model, where: str) -> None:
    """The first model seen is the report's; any other input of another model is refused."""
    if not isinstance(model, dict) or not _fingerprint(model):
        return
    if data.model is None:
        data.model = model
        return
    if _fingerprint(model) != _fingerprint(data.model):
        raise ModelMismatchError(f"{where} comes from another model than the other inputs: {_describe(model)} vs "
                                 f"{_describe(data.model)}; a report shows one model")


def is_experts_file(path) -> bool:
    """An experts.json (one JSON object, no header record) rather than a stream."""
    if is_stdio(path):
        return False
    with open(path, "rb") as handle:
        start = handle.read(1 << 16).lstrip()
    if not start.startswith(b"{"):
        return False
    first_line = start.split(b"\n", 1)[0]
    try:
        first = json.loads(first_line)
    except ValueError:
        return True  # a multi-line JSON object: experts.json as moe-select writes it
    return not (isinstance(first, dict) and first.get("type") == "header")


def _clip_context(context: dict, tokens: int) -> dict:
    """A context cut to ``tokens`` pieces around its marked token, activations to 3 significant digits."""
    pieces, activation, mark = list(context["pieces"]), list(map(float, context["activation"])), int(context["mark"])
    start = max(0, min(mark - tokens // 2, len(pieces) - tokens))
    end = start + tokens
    return {"p": pieces[start:end], "a": activation[start:end], "m": mark - start,
            "doc": context.get("doc_id"), "dom": (context.get("meta") or {}).get("domain"),
            "score": _round(context.get("score"))}


def _round(value, digits: int = 3):
    """A number to ``digits`` significant digits (None and non-finite values become None)."""
    if value is None or isinstance(value, bool):
        return value
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _read_trace(data: ReportData, reader, where: str, baseline: bool, options: ReportOptions | None = None) -> None:
    from ..score.specialisation import DomainRouting
    from .documents import DocumentPicker

    options = options or ReportOptions()
    header = reader.header
    fold = RouterFold.from_header(header)   # layers sharing one router: one row per router
    routing = DomainRouting()
    picker = None if baseline else DocumentPicker(options.documents, options.document_ids, options.document_tokens)
    for record in reader:
        record = record if fold is None or record.get("type", "sequence") != "sequence" else fold.record(record)
        routing.add(record)
        if picker is not None:
            picker.add(record)
    if picker is not None:
        missing = picker.missing()
        if missing:
            raise UsageError(f"{where}: no document {missing[0]!r} in the trace (--document names a doc_id)")
        data.docs = picker.result()
    if baseline:
        data.baseline_routing, data.baseline_model = routing, header.get("model")
        return
    if data.routing is not None:
        raise UsageError(f"{where}: a second trace; concatenate shards into one stream (cat a b | moe-report -)")
    data.routing = routing
    data.routing_layers = fold.layers if fold is not None else list(header.get("layers") or [])
    data.top_k = header.get("top_k")


def primary_verdicts(scores: dict) -> tuple[str | None, list]:
    """(prompt, verdicts) whose holdout examples a card shows: the P_mono label's, else the first prompt's."""
    judged = scores.get("judged") if isinstance(scores.get("judged"), dict) else {}
    for key in sorted(judged, key=lambda k: (k != "mono", k)):
        verdicts = (judged[key] or {}).get("verdicts")
        if isinstance(verdicts, list) and verdicts:
            return key, verdicts
    return None, []


def verdict_counts(verdict: dict) -> tuple[int, int]:
    """(repeats that said 1, repeats answered) of one verdict (formats/scores.md ``yhat``)."""
    said = [x for x in verdict.get("yhat") or [] if x is not None]
    return sum(said), len(said)


def is_right(verdict: dict) -> bool | None:
    """The majority of the answered repeats agrees with the truth (None: no answer, or a tie)."""
    yes, answered = verdict_counts(verdict)
    if not answered or 2 * yes == answered:
        return None
    return (2 * yes > answered) == bool(verdict.get("y"))


def _holdout_examples(data: ReportData, card: ExpertCard, holdout: dict, options: ReportOptions) -> list:
    """The holdout contexts a card shows, ``options.holdout`` of each list.

    With the scorer's verdicts (the scores stream is read before the samples, :func:`load_inputs`):
    the judged samples the scorer got wrong first, then the others in holdout order, each with its
    verdict (``j``: [repeats saying 1, repeats answered], ``i``: its index in the holdout list, ``s``:
    the embedding scorer's similarity). Without: the first ones of each list.
    """
    _, verdicts = primary_verdicts(card.scores)
    shown = []
    for side, truth in (("positive", 1), ("negative", 0)):
        contexts = holdout.get(side) or []
        mine = [v for v in verdicts if v.get("holdout") == side and isinstance(v.get("index"), int)
                and 0 <= v["index"] < len(contexts)]
        matched = [v for v in mine if v.get("id") is None or str(v["id"]) == str(contexts[v["index"]].get("id"))]
        data.verdicts_unmatched += len(mine) - len(matched)
        if matched:
            matched.sort(key=lambda v: (is_right(v) is not False, v["index"]))   # the mistakes first
            for verdict in matched[:options.holdout]:
                entry = {**_clip_context(contexts[verdict["index"]], options.context_tokens), "pos": truth,
                         "i": verdict["index"], "j": list(verdict_counts(verdict))}
                if verdict.get("sim") is not None:
                    entry["s"] = _round(verdict["sim"])
                shown.append(entry)
        else:
            shown += [{**_clip_context(c, options.context_tokens), "pos": truth, "i": i}
                      for i, c in enumerate(contexts[:options.holdout])]
    return shown


def _read_samples(data: ReportData, reader, options: ReportOptions) -> None:
    for record in reader:
        if record.get("type") != "expert":
            continue
        card = data.card(record["layer"], record["expert"])
        card.sample_status, card.sample_stats = record.get("status"), record.get("stats")
        top = (record.get("explain") or {}).get("top") or []
        card.contexts = [_clip_context(c, options.context_tokens) for c in top[:options.contexts]]
        card.holdout = _holdout_examples(data, card, record.get("holdout") or {}, options)
        card.logit_lens = [[entry.get("piece"), entry.get("count")]
                           for entry in (record.get("logit_lens") or [])[:options.logit_lens]]


def _read_labels(data: ReportData, reader) -> None:
    """Every labels stream adds its label to the cards (several explainers: offline for all, an LLM for some)."""
    for record in reader:
        if record.get("type") == "label":
            data.card(record["layer"], record["expert"]).labels.append(record)


def _read_scores(data: ReportData, reader, where: str) -> None:
    if data.scores_header is not None:
        raise UsageError(f"{where}: a second scores stream; join them first (moe-score join A B)")
    data.scores_header = reader.header
    for record in reader:
        if record.get("type") == "expert":
            data.card(record["layer"], record["expert"]).scores = record
    data.scores_summary = (reader.ends[-1] if reader.ends else {}).get("summary") or {}


def _read_eval(data: ReportData, reader, where: str) -> None:
    if data.eval_header is not None:
        raise UsageError(f"{where}: a second eval stream")
    data.eval_header = reader.header
    for record in reader:
        kind = record.get("type")
        if kind == "model":
            data.eval_models[record["model"]] = record
        elif kind == "domain":
            data.eval_domains.append(record)
        elif kind == "choice":
            data.eval_choices.append(record)


def _check_eval_model(data: ReportData, where: str) -> None:
    """An eval stream belongs to the report's model when one of its models is it, or was masked from it."""
    if data.model is None or not data.eval_models:
        return
    wanted = _fingerprint(data.model)
    for record in data.eval_models.values():
        base = (record.get("masked") or {}).get("base")
        if wanted in (_fingerprint(record.get("identity")), _fingerprint(base)):
            return
    raise ModelMismatchError(f"{where}: none of the evaluated models is {_describe(data.model)} or masked from it; "
                             "a report shows one model")


def load_inputs(paths, *, baseline=None, options: ReportOptions | None = None) -> ReportData:
    """Read every input (streams in any order, experts.json files) into one :class:`ReportData`."""
    from ..select import read_experts

    options = options or ReportOptions()
    if not paths:
        raise UsageError("no input: give trace, samples, labels, scores, eval streams or experts.json files")
    data = ReportData()
    later_sets, later_eval, streams = [], None, []
    for path in paths:
        where = "stdin" if is_stdio(path) else os.fspath(path)
        if not is_stdio(path) and not Path(path).exists():
            raise UsageError(f"{where}: no such file")
        if not is_stdio(path) and Path(path).is_dir():
            raise UsageError(f"{where}: is a directory, not a stream or experts.json")
        if is_experts_file(path):
            later_sets.append(path)
            continue
        reader = read_input(path, validate=True)   # the header only, so far
        kind = reader.header.get("kind")
        if kind not in STREAM_KINDS:
            raise UsageError(f"{where}: moe-report reads {', '.join(STREAM_KINDS)} streams and experts.json, "
                             f"not a {kind} stream")
        if kind != "eval":
            _adopt_model(data, reader.header.get("model"), where)   # refused before anything is read
        streams.append((where, reader, kind))
    # scores before samples, whatever the order given: a card's holdout examples are chosen by the verdicts
    streams.sort(key=lambda item: READ_ORDER.index(item[2]))
    for where, reader, kind in streams:
        data.sources.append({"path": where, "kind": kind, "tool": (reader.header.get("tool") or {}).get("name")})
        _merge_shape(data, reader.header)
        if kind == "trace":
            _read_trace(data, reader, where, baseline=False, options=options)
        elif kind == "samples":
            _read_samples(data, reader, options)
        elif kind == "labels":
            _read_labels(data, reader)
        elif kind == "scores":
            _read_scores(data, reader, where)
        else:
            _read_eval(data, reader, where)
            later_eval = where
    for path in later_sets:
        chosen = read_experts(path)
        where = os.fspath(path)
        _adopt_model(data, chosen.model, where)
        data.sets.append((Path(path).stem, chosen))
        data.set_files[Path(path).stem] = {"path": str(Path(path).resolve()), "sha256": file_sha256(path)}
        data.sources.append({"path": where, "kind": "experts", "tool": (chosen.provenance.get("tool") or {}).get("name")})
    if later_eval:
        _check_eval_model(data, later_eval)
    if baseline is not None:
        reader = read_input(baseline, kinds="trace", validate=True)
        _check_baseline(data, reader.header, os.fspath(baseline))
        _read_trace(data, reader, os.fspath(baseline), baseline=True)
    return data


def _merge_shape(data: ReportData, header: dict) -> None:
    model = header.get("model") if isinstance(header.get("model"), dict) else {}
    layers = header.get("layers") or model.get("moe_layers") or []
    groups = shared_routers(model)
    if groups and layers:   # one row per router: the first layer of each group stands for the group
        layers = RouterFold([int(layer) for layer in layers], groups).layers
        data.shared_layers.update({group[0]: group for group in groups})
    if layers and not data.layers:
        data.layers = [int(layer) for layer in layers]
    experts = header.get("num_experts") or model.get("num_experts")
    if experts and not data.num_experts:
        data.num_experts = int(experts)


def _check_baseline(data: ReportData, header: dict, where: str) -> None:
    """A baseline trace is another model (e.g. a random-init copy) of the same shape."""
    if data.routing is None:
        raise UsageError(f"--baseline {where}: needs the model's own trace among the inputs")
    own = (data.model or {})
    other = header.get("model") or {}
    for key in ("model_type", "num_experts", "moe_layers"):
        if own.get(key) is not None and other.get(key) != own.get(key):
            raise FormatError(f"--baseline {where}: {key} {other.get(key)!r} differs from the model's {own.get(key)!r}")


__all__ = ["ExpertCard", "ReportData", "ReportOptions", "is_experts_file", "is_right", "load_inputs",
           "primary_verdicts", "verdict_counts"]
