"""Detection metrics of a label: predicted activations against true ones on held-out samples.

For one expert i and its label, the scorer predicts ŷ_{i,j} ∈ {0, 1} ("should the expert be
activated?") for each held-out sample s_j whose true activation y_{i,j} is 1 for the holdout
positives and 0 for the holdout negatives (formats/samples.md). With TP, FP, TN, FN the counts:

- accuracy = (1/|D_i|) Σ_j 1[ŷ_{i,j} = y_{i,j}]: **EMS_i** (paper 000, eq. 3) for a P_mono label,
  **EDMS_i^(d)** (paper 000, eq. 4) for a P_domain(d) label on the samples of domain d;
- precision TP/(TP+FP), recall TP/(TP+FN), **F1** = 2TP/(2TP+FP+FN) (paper 002's detection score);
- balanced accuracy ½(TP/(TP+FN) + TN/(TN+FP)) (what delphi reports as "accuracy");
- **LDS_l** = (1/N_l) Σ_i EMS_i^(l) (paper 000, eq. 5) over the experts of layer l with an EMS.

A ratio whose denominator is 0 is undefined (None, written as null): precision when nothing was
predicted positive, balanced accuracy when one class is absent. Repeats (shuffles of the sample
order) are averaged metric by metric over the repeats where the metric is defined.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "balanced_accuracy")


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def detection_metrics(truth: Sequence[bool], predicted: Sequence[bool]) -> dict:
    """accuracy, precision, recall, f1, balanced_accuracy and the four counts of one prediction."""
    if len(truth) != len(predicted):
        raise ValueError("truth and prediction differ in length")
    tp = sum(1 for t, p in zip(truth, predicted) if t and p)
    fp = sum(1 for t, p in zip(truth, predicted) if not t and p)
    tn = sum(1 for t, p in zip(truth, predicted) if not t and not p)
    fn = sum(1 for t, p in zip(truth, predicted) if t and not p)
    tpr, tnr = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    return {"accuracy": _ratio(tp + tn, len(truth)), "precision": _ratio(tp, tp + fp), "recall": tpr,
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "balanced_accuracy": (tpr + tnr) / 2 if tpr is not None and tnr is not None else None,
            "tp": tp, "fp": fp, "tn": tn, "fn": fn}


def mean_metrics(runs: Iterable[dict]) -> dict:
    """Each of :data:`METRIC_NAMES` averaged over the runs where it is defined (None where it never is)."""
    runs = list(runs)
    out = {}
    for name in METRIC_NAMES:
        values = [run[name] for run in runs if run.get(name) is not None]
        out[name] = sum(values) / len(values) if values else None
    return out


def layer_mean(values: Iterable[float | None]) -> float | None:
    """LDS_l (paper 000, eq. 5): the mean EMS over the layer's experts that have one."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def chance_levels(positives: int, negatives: int) -> dict:
    """What a label-blind scorer gets on ``positives`` + ``negatives`` samples (10 + 10 in paper 002).

    ``coin``: each sample guessed positive with probability ½ (expected accuracy ½, balanced
    accuracy ½, recall ½, precision P/(P+N), F1 ≈ 2·prec·½/(prec+½)); ``all_positive``: every sample
    chosen (accuracy P/(P+N), recall 1, F1 2P/(2P+N)); ``none``: the answer "None" (accuracy
    N/(P+N), F1 0).
    """
    total = positives + negatives
    if total == 0:
        return {}
    share = positives / total
    coin_f1 = 2 * share * 0.5 / (share + 0.5) if share else 0.0
    return {"positives": positives, "negatives": negatives,
            "coin": {"accuracy": 0.5, "balanced_accuracy": 0.5, "precision": share, "recall": 0.5, "f1": coin_f1},
            "all_positive": {"accuracy": share, "balanced_accuracy": 0.5, "precision": share, "recall": 1.0,
                             "f1": _ratio(2 * positives, 2 * positives + negatives)},
            "none": {"accuracy": negatives / total, "balanced_accuracy": 0.5, "precision": None, "recall": 0.0,
                     "f1": 0.0 if positives else None}}


__all__ = ["METRIC_NAMES", "chance_levels", "detection_metrics", "layer_mean", "mean_metrics"]
