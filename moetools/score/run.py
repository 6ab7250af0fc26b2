"""Score traces end to end without the CLI: paths in, (header extra, records, end summary) out.

    from moetools.score.run import score_traces
    from moetools.score.scorer import ScoreOptions
    extra, records, summary, model = score_traces(["a.msgpack.zst"], ScoreOptions(target_field="toxicity"))
"""

from __future__ import annotations

import os

from ..progress import ProgressFactory, no_progress
from ..streams.files import read_input
from .output import end_summary, expert_records, header_extra
from .scorer import RoutingScorer, ScoreOptions, check_options_serve_metrics


def resolve_general(value: str | None) -> tuple[str, str | None]:
    """``--general``: ``rest`` (default), an existing trace file, or a domain name."""
    if value in (None, "", "rest"):
        return "rest", None
    if value == "-" or os.path.isfile(value):
        return "trace", value
    return value, None


def score_traces(paths, options: ScoreOptions, *, general_trace: str | None = None,
                 rc_against: str | None = None, on_record=None, progress: ProgressFactory = no_progress):
    """Returns (header_extra, list of expert records, end summary, model identity of the first trace).

    ``progress(description)`` (moetools.progress) is advanced by the tokens of each trace record scored.
    """
    given = {"--model": options.model_dir is not None, "--target-field": options.target_field is not None,
             "--rc-against": rc_against is not None, "--general": options.general != "rest"}
    check_options_serve_metrics(options.metrics, [option for option, used in given.items() if used])
    scorer = RoutingScorer(options)
    with progress("scoring tokens") as bar:
        def count(record) -> None:
            bar.advance(int(record["experts"].shape[1]))  # experts: (layers, tokens, k)
            if on_record is not None:
                on_record(record)

        for path in paths or ["-"]:
            reader = read_input(path, kinds="trace", validate=True)  # formats/trace.md: finite gates, ids < num_experts, ...
            scorer.add_trace(reader, "-" if path in (None, "-") else str(path), on_record=count)
    if general_trace is not None:
        scorer.add_general_trace(read_input(general_trace, kinds="trace", validate=True), str(general_trace))
    if rc_against is not None:
        scorer.add_rc_trace(read_input(rc_against, kinds="trace", validate=True), str(rc_against))
    computed = scorer.compute()
    extra = header_extra(scorer, computed)
    shared = scorer.fold.shared if scorer.fold is not None else {}
    records = list(expert_records(computed, scorer.layers, options.min_ratio, options.metrics, shared=shared))
    return extra, records, end_summary(scorer, computed), scorer.header.get("model")


__all__ = ["resolve_general", "score_traces"]
