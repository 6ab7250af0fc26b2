"""Judge labels end to end without the CLI: paths in, (model, header extra, records, end summary) out.

    from moetools.llm import ResponseCache, make_client
    from moetools.score.judge import JudgeOptions
    from moetools.score.judge.llm import LLMScorer
    from moetools.score.judge.run import judge_labels
    scorer = LLMScorer(make_client("openai", {"api_base": URL, "model": NAME}), cache=ResponseCache(namespace="score"))
    model, extra, records, summary = judge_labels("samples.msgpack.zst", ["labels.jsonl"], scorer, JudgeOptions())

Memory: the holdout and explain contexts of every expert (a few dozen short contexts each) and
every label; the samples stream is read once.
"""

from __future__ import annotations

import asyncio
import time

from ...errors import UsageError
from ...streams.files import read_input
from .detection import Judge, JudgeOptions, header_extra
from .inputs import LabelSet, check_label_examples, read_labels, read_samples


def judge_labels(samples_path: str, label_paths: list[str], scorer, options: JudgeOptions, *, warn=None):
    """See the module docstring. ``warn(text)`` hears about counted skips (labels without samples)."""
    if options.positives < 0 or options.negatives < 0 or options.positives + options.negatives == 0:
        raise UsageError("--positives and --negatives must be >= 0 and not both 0")
    if options.repeats < 1:
        raise UsageError("--repeats must be >= 1")
    if not label_paths:
        raise UsageError("give the labels to judge with --labels FILE")
    samples_header, samples = read_samples(read_input(samples_path, kinds="samples", validate=True), samples_path)
    label_sets: dict[str, LabelSet] = {}
    for path in label_paths:
        read_labels(read_input(path, kinds="labels", validate=True), str(path), samples_header, label_sets)
    if not any(s.labels for s in label_sets.values()):
        raise UsageError("no usable label: every label record failed or the labels files are empty")
    check_label_examples(label_sets, samples)
    scorer.prepare()
    judge = Judge(scorer, options)
    started = time.perf_counter()
    records, layers, summary = asyncio.run(judge.run(label_sets, samples))
    summary["seconds"] = round(time.perf_counter() - started, 3)
    for key, count in judge.skipped_no_samples.items():
        if count and warn is not None:
            warn(f"{count} {key} labels are about experts the samples stream does not have: skipped "
                 "(counted in the end record)")
    extra = header_extra(scorer, options, label_sets, samples_header, str(samples_path), judge.repeats)
    return samples_header.get("model"), extra, records + layers, summary


def make_scorer(*, backend: str | None = None, backend_options: dict | None = None, attempts: int | None = None,
                cache_dir: str | None = None, no_cache: bool = False, refresh: bool = False, model: str | None = None,
                embedding_model: str | None = None, judge_prompt: str = "paper"):
    """The scorer ``--backend`` names: an LLM backend's client (default openai, ``max_tokens`` 128, the cache
    namespace ``score``; ``judge_prompt`` ``paper`` or ``yes-no``), or ``embedding`` (no LLM: only ``batch_size``
    and ``device`` apply)."""
    given = dict(backend_options or {})
    if backend == "embedding":
        from .embedding import EmbeddingScorer

        stray = [name for name in given if name not in ("batch_size", "device")] + (["model"] if model else [])
        if judge_prompt != "paper":
            stray.append("judge_prompt")
        if stray:
            raise UsageError(f"--{stray[0].replace('_', '-')} does not apply to the embedding scorer")
        return EmbeddingScorer(embedding_model, device=given.get("device") or "cpu",
                               batch_size=int(given.get("batch_size") or 64))
    from ...llm import make_client
    from ...llm.cache import response_cache
    from .llm import CACHE_NAMESPACE, LLMScorer

    if model is not None:
        given["model"] = model
    given.setdefault("max_tokens", 128)
    cache = response_cache(cache_dir, CACHE_NAMESPACE, no_cache=no_cache, refresh=refresh)
    return LLMScorer(make_client(backend or "openai", given), cache=cache, attempts=3 if attempts is None else attempts,
                     form=judge_prompt)


def accounting_line(summary: dict, scorer_kind: str) -> str:
    a = summary["accounting"]
    parts = []
    for key, s in summary["labels"].items():
        name = "EMS" if key == "mono" else f"EDMS({key})"
        mean, base = s["mean"]["accuracy"], s["mean_shuffled"]["accuracy"]
        text = f"{name} {mean:.3f}" if mean is not None else f"{name} n/a"
        if base is not None:
            text += f" (shuffled labels {base:.3f})"
        parts.append(f"{s['judged']} judged, {s['failed']} failed; {text}")
    line = "; ".join(parts) + f" [{scorer_kind} scorer]"
    if scorer_kind == "llm":
        line += (f"; requests {a['requests']}, cache hits {a['cache_hits']}, retries "
                 f"{a['retries'] + a['answer_retries']}, tokens {a['prompt_tokens'] + a['completion_tokens']}")
    return line + f"; {summary['seconds']:.1f} s"


__all__ = ["accounting_line", "judge_labels", "make_scorer"]
