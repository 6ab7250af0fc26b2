"""moetools from Python: read streams into numpy (and pandas), run each tool with keyword arguments.

One naming rule: the library entry of ``moe-NAME`` is ``moetools.NAME(inputs, *, output=..., **options)``
(``moe-tune merge`` is ``moetools.merge``), its options are the long options with ``_`` for ``-`` and
Python values (a list where the option repeats or takes ids, ``True`` for a flag), and it returns the
output path. The one exception is ``moe-eval``, whose entry is ``moetools.evaluate``: ``eval`` is a
Python builtin that ``from moetools import *`` would hide. ``moetools.open`` opens a stream as
``gzip.open`` opens a file (moe-cat's reading; its conversions are the shell's job). moe-probe and
monet-train have no entry here yet: their libraries are ``moetools.probe`` and ``moetools.train``. Nothing heavy is imported until a function runs (``--help`` stays fast).

    >>> import moetools
    >>> trace = moetools.trace("model/", "corpus.jsonl", output="trace.msgpack.zst", max_length=64)
    >>> routing = moetools.routing(trace)            # per layer: experts, gates, contribution (numpy)
    >>> scores = moetools.scores_table(moetools.score([trace], output="scores.jsonl", fmt="jsonl"))
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__

PathLike = str | os.PathLike


def _tool(name: str, args: dict) -> dict:
    """A header's ``tool`` field for a call from Python: the function and its arguments."""
    clean = {key: ([str(v) for v in value] if isinstance(value, (list, tuple)) else
                   str(value) if isinstance(value, os.PathLike) else value) for key, value in args.items()}
    return {"name": f"moetools.{name}", "version": __version__, "args": clean}


# -- reading ------------------------------------------------------------------------------------------

class Stream:
    """An open moetools stream: iterate its data records (arrays as numpy); ``header`` and ``ends``.

    A context manager (closes the file); also closed when iterated to the end.
    """

    def __init__(self, path: PathLike, kinds=None, validate: bool = False):
        from .streams.files import open_input
        from .streams.reader import StreamReader

        self.path = Path(path)
        self._file = open_input(path)
        self._reader = StreamReader(self._file, kinds=kinds, name=str(path), validate=validate)

    @property
    def header(self) -> dict:
        """The (first) header record: kind, version, model, tool and the kind's own fields."""
        return self._reader.header

    @property
    def ends(self) -> list:
        """The end records read so far (one per concatenated segment)."""
        return self._reader.ends

    def __iter__(self) -> Iterator[dict]:
        try:
            yield from self._reader
        finally:
            self.close()

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open(path: PathLike, kinds: str | tuple[str, ...] | None = None, validate: bool = False) -> Stream:
    """Open any moetools stream (msgpack, zstd or not, or JSON lines) and iterate its records.

    ``kinds`` refuses another kind (e.g. ``"trace"``); ``validate=True`` checks every record against
    its kind's format as ``moe-cat --check`` does. Arrays (a trace's ``experts``, ``gates``...) are numpy.

    >>> with moetools.open("trace.msgpack.zst") as stream:
    ...     print(stream.header["model"]["name"], sum(r["tokens"].size for r in stream))
    """
    return Stream(path, kinds=kinds, validate=validate)


@dataclass
class Routing:
    """A trace as arrays: for every traced token (N, in stream order) and MoE layer (L, header order).

    ``experts``, ``gates``, ``contribution`` are (L, N, K); ``tokens`` (N,), ``documents`` (N,) the
    document id of each token, ``windows`` the window index, ``meta`` one dict per window and
    ``window_of`` (N,) its index in ``meta``. ``layer(l)`` gives one layer's (N, K) arrays by model
    layer index. A slot the router left empty holds the experts dtype's all-ones id (formats/trace.md).
    """

    layers: list
    experts: object
    gates: object
    contribution: object
    tokens: object
    documents: object
    window_of: object
    meta: list = field(default_factory=list)
    header: dict = field(default_factory=dict)

    def layer(self, layer: int) -> dict:
        """``{"experts", "gates", "contribution"}`` of model layer ``layer``, each (N, K)."""
        if layer not in self.layers:
            raise KeyError(f"layer {layer} is not a traced MoE layer ({self.layers})")
        index = self.layers.index(layer)
        return {"experts": self.experts[index], "gates": self.gates[index], "contribution": self.contribution[index]}


def routing(trace: PathLike) -> Routing:
    """Read a trace stream (moe-trace) into per-layer routing arrays (:class:`Routing`), in memory.

    >>> r = moetools.routing("trace.msgpack.zst")
    >>> r.layer(0)["experts"].shape          # (tokens, top_k)
    >>> np.bincount(r.layer(0)["experts"].ravel(), minlength=r.header["num_experts"])  # routed per expert
    """
    import numpy as np

    experts, gates, contribution, tokens, documents, windows, meta = [], [], [], [], [], [], []
    with open(trace, kinds="trace") as stream:
        header = stream.header
        for record in stream:
            experts.append(record["experts"])
            gates.append(record["gates"].astype(np.float32))
            contribution.append(record["contribution"].astype(np.float32))
            tokens.append(record["tokens"])
            documents += [record["doc_id"]] * len(record["tokens"])
            windows.append(np.full(len(record["tokens"]), len(meta), dtype=np.int64))
            meta.append({"doc_id": record["doc_id"], "window": record["window"], **record["meta"]})
    layers = list(header["layers"])
    top_k, dtype = header["top_k"], experts[0].dtype if experts else np.uint8

    def join(parts, kind):
        return np.concatenate(parts, axis=1) if parts else np.zeros((len(layers), 0, top_k), dtype=kind)

    return Routing(layers=layers, experts=join(experts, dtype), gates=join(gates, np.float32),
                   contribution=join(contribution, np.float32),
                   tokens=np.concatenate(tokens) if tokens else np.zeros(0, dtype=np.int32),
                   documents=np.array(documents, dtype=object),
                   window_of=np.concatenate(windows) if windows else np.zeros(0, dtype=np.int64),
                   meta=meta, header=header)


def scores_table(scores: PathLike):
    """A scores stream (moe-score) as a table: one row per (layer, expert, domain).

    Columns: ``layer``, ``expert``, ``domain``, every per-domain metric (``af``, ``das``, ``ems``...),
    the expert's own numbers (``pearson``, ``jsd_routing``...) and its skew as ``skew_domain``,
    ``skew_ratio``, ``skew_q``... A pandas DataFrame when pandas is installed, else a dict of numpy
    columns (missing values NaN, or None in text columns).

    >>> table = moetools.scores_table("scores.jsonl")
    >>> table[table.domain == "medical"].nlargest(5, "das")[["layer", "expert", "das"]]
    """
    import numpy as np

    rows = []
    with open(scores, kinds="scores") as stream:
        for record in stream:
            own = {key: value for key, value in record.items()
                   if key not in ("type", "layer", "expert", "domains", "skew", "general", "shared_layers")
                   and not isinstance(value, (dict, list))}
            own.update({f"skew_{key}": value for key, value in (record.get("skew") or {}).items()})
            for domain, metrics in record["domains"].items():
                rows.append({"layer": record["layer"], "expert": record["expert"], "domain": domain, **metrics, **own})
    columns = list(dict.fromkeys(key for row in rows for key in row))
    try:
        import pandas
    except ImportError:
        table = {}
        for name in columns:
            values = [row.get(name) for row in rows]
            numeric = all(value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
                          for value in values)
            table[name] = (np.array([np.nan if value is None else value for value in values], dtype=float)
                           if numeric and name not in ("layer", "expert") else np.array(values, dtype=object)
                           if not numeric else np.array(values, dtype=np.int64))
        return table
    return pandas.DataFrame(rows, columns=columns)


# -- the tools ------------------------------------------------------------------------------------

def trace(model: PathLike, corpus: PathLike, *, output: PathLike, **options) -> Path:
    """moe-trace: route ``corpus`` (JSON lines) through ``model``; options as moe-trace's long options.

    >>> moetools.trace("models/olmoe", "corpus.jsonl", output="trace.msgpack.zst", max_length=256,
    ...                shard="0/4", resume=True)
    """
    from .trace import run_trace

    run_trace(str(model), str(corpus), output=str(output), tool=_tool("trace", options), **options)
    return Path(output)


def sample(trace: PathLike, *, output: PathLike, fmt: str = "msgpack", uncompressed: bool = False,
           layers=None, experts=None, **options) -> Path:
    """moe-sample: per-expert example sets of a trace; ``layers``/``experts`` are lists of ids.

    >>> moetools.sample("trace.msgpack.zst", output="samples.msgpack.zst", layers=[0], top=10)
    """
    from .sample import SampleOptions, sample_trace
    from .streams.files import open_stream_writer, read_input

    settings = SampleOptions(layers=tuple(layers) if layers is not None else None,
                             experts=tuple(experts) if experts is not None else None, **options)
    settings.check()
    reader = read_input(trace, kinds="trace", validate=True)
    header_extra, records, summary = sample_trace(reader, settings)
    with open_stream_writer(str(output), "samples", fmt, uncompressed, model=reader.header.get("model"),
                            header_extra=header_extra, tool=_tool("sample", {"layers": layers, **options})) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    return Path(output)


def explain(samples: PathLike, *, output: PathLike, backend: str = "offline", **options) -> Path:
    """moe-explain: label every expert of a samples stream (default backend: ``offline``, no LLM).

    ``backend_options`` takes the backend's own options (``moe-explain --list-backends``), e.g.
    ``backend="openai", backend_options={"api_base": "http://localhost:8000/v1", "model": "..."}``.

    >>> moetools.explain("samples.msgpack.zst", output="labels.jsonl")
    """
    from .explain.run import explain_samples

    explain_samples(str(samples), str(output), backend=backend, tool=_tool("explain", {"backend": backend}),
                    **options)
    return Path(output)


def score(traces, *, output: PathLike, fmt: str = "msgpack", uncompressed: bool = False, general: str = "rest",
          rc_against: PathLike | None = None, metrics=None, **options) -> Path:
    """moe-score (routing scores): AF, DAS, skew... of every expert from one or more traces.

    ``traces`` is a path or a list of paths; ``general`` is ``"rest"``, a domain name or a trace path;
    ``metrics`` a list of metric names (default: every metric the traces support); the other options
    are :class:`moetools.score.scorer.ScoreOptions`' fields (``domain_field``, ``permutations``...).

    >>> moetools.score(["trace.msgpack.zst"], output="scores.jsonl", fmt="jsonl", permutations=200)
    """
    from .score.run import resolve_general, score_traces
    from .score.scorer import ScoreOptions
    from .streams.files import open_stream_writer

    paths = [str(traces)] if isinstance(traces, (str, os.PathLike)) else [str(path) for path in traces]
    kind, general_trace = resolve_general(general)
    settings = ScoreOptions(general=kind, metrics=tuple(metrics) if metrics is not None else None, **options)
    extra, records, summary, model = score_traces(paths, settings, general_trace=general_trace,
                                                  rc_against=str(rc_against) if rc_against else None)
    tool = _tool("score", {"general": general, "metrics": metrics, **options})
    with open_stream_writer(str(output), "scores", fmt, uncompressed, model=model, header_extra=extra,
                            tool=tool) as writer:
        for record in records:
            writer.write(record)
        writer.end_extra = {"summary": summary}
    return Path(output)


def select(scores, *, output: PathLike, **criterion) -> Path:
    """moe-select: an experts.json from scores streams; ``criterion`` as moe-select's options.

    >>> moetools.select("scores.jsonl", output="medical.json", by="das", domain="medical", top=4)
    >>> moetools.select("scores.jsonl", output="control.json", random=4, seed=1)   # a random control set
    """
    from .select import write_experts
    from .select.criteria import Criterion, build_set, read_scores
    from .select.criteria import select as choose
    from .streams.files import read_input

    paths = [str(scores)] if isinstance(scores, (str, os.PathLike)) else [str(path) for path in scores]
    settings = Criterion(**criterion)
    settings.check()
    readers = [read_input(path, kinds="scores", validate=True) for path in paths]
    table, header = read_scores(readers, settings)
    chosen, values = choose(table, settings, header.get("num_experts"))
    sources = [{"path": path, "tool": reader.header.get("tool")} for path, reader in zip(paths, readers)]
    write_experts(str(output), build_set(chosen, values, settings, header, tool=_tool("select", criterion),
                                         sources=sources))
    return Path(output)


def mask(model: PathLike, experts: PathLike, *, output: PathLike, force: bool = False, dtype: str = "auto") -> Path:
    """moe-mask: a model directory in which the experts of ``experts`` (experts.json) are never routed to.

    >>> moetools.mask("models/olmoe", "medical.json", output="masked/")
    """
    from .mask import mask_directory

    mask_directory(str(model), str(experts), str(output), force=force, dtype=dtype)
    return Path(output)


def evaluate(models, *, output: PathLike, data: PathLike | None = None, choices: PathLike | None = None,
             **options) -> Path:
    """moe-eval (``eval`` is a builtin): per-domain loss and choice accuracy of model directories.

    >>> moetools.evaluate(["models/olmoe", "masked/"], data="val.jsonl", output="eval.jsonl")
    """
    from .errors import UsageError
    from .eval import evaluate as evaluate_models
    from .streams.files import open_stream_writer

    if data is None and choices is None:
        raise UsageError("give data, choices or both")
    paths = [str(models)] if isinstance(models, (str, os.PathLike)) else [str(path) for path in models]
    header = {"models": paths, "data": str(data) if data else None, "choices": str(choices) if choices else None}
    stream = evaluate_models(paths, data=header["data"], choices=header["choices"], **options)
    with open_stream_writer(str(output), "eval", "jsonl", header_extra=header,
                            tool=_tool("evaluate", {**header, **options})) as writer:
        for record in stream:
            writer.write(record)
    return Path(output)


def tune(model: PathLike, *, data: PathLike, output: PathLike, **options) -> Path:
    """moe-tune: fine-tune the parts ``mode`` names; ``output`` is the adapter directory.

    ``options`` are :class:`moetools.tune.TuneOptions`' fields (``mode``, ``experts``, ``steps``,
    ``eval`` as a list of files...).

    >>> moetools.tune("models/olmoe", data="medical.jsonl", output="tuned/", mode="experts",
    ...               experts="medical.json", steps=100)
    """
    from .tune import TuneOptions
    from .tune import tune as run_tune

    options = {key: str(value) if isinstance(value, os.PathLike) else value for key, value in options.items()}
    run_tune(TuneOptions(model=str(model), data=str(data), output=str(output), **options))
    return Path(output)


def merge(adapter: PathLike, *, output: PathLike, base: PathLike | None = None, dtype: str = "auto") -> Path:
    """moe-tune merge: base model + adapter as a standard checkpoint directory.

    >>> moetools.merge("tuned/", output="merged/")
    """
    from .tune import merge as merge_adapter

    merge_adapter(str(adapter), str(output), base=str(base) if base else None, dtype=dtype)
    return Path(output)


def report(inputs, *, output: PathLike, baseline: PathLike | None = None, **options) -> Path:
    """moe-report: one self-contained HTML page from any streams and experts.json files of one model.

    >>> moetools.report(["samples.msgpack.zst", "labels.jsonl", "scores.jsonl"], output="report.html")
    """
    from .report import ReportOptions, build_report

    paths = [str(inputs)] if isinstance(inputs, (str, os.PathLike)) else [str(path) for path in inputs]
    build_report(paths, str(output), baseline=str(baseline) if baseline else None, options=ReportOptions(**options))
    return Path(output)

