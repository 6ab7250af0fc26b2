"""Judge labels end to end without the CLI: paths in, (model, header extra, records, end summary) out.

    from moetools.llm import ResponseCache, make_client
    from moetools.score.judge import JudgeOptions
    from moetools.score.judge_llm import LLMScorer
    from moetools.score.judge_run import judge_labels
    scorer = LLMScorer(make_client("openai", {"api_base": URL, "model": NAME}), cache=ResponseCache(namespace="score"))
    model, extra, records, summary = judge_labels("samples.msgpack.zst", ["labels.jsonl"], scorer, JudgeOptions())

Memory: the holdout and explain contexts of every expert (a few dozen short contexts each) and
every label; the samples stream is read once.
"""

from __future__ import annotations

import asyncio
import time

from ..errors import UsageError
from ..streams.files import read_input
from .judge import Judge, JudgeOptions, header_extra
from .judge_inputs import LabelSet, check_label_examples, read_labels, read_samples


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


__all__ = ["accounting_line", "judge_labels"]
