"""The k-sparse probe of paper 002: top-k neurons by mean difference, L2 logistic regression, F1.

Paper 002 (formats/REFERENCES.md; ``../shared/papers/002_*.txt`` beside the checkout, "k-sparse
probing + best-layer protocol"): neurons ranked by a_j = |E[h_j | y=1] − E[h_j | y=0]|, an
L2-regularised logistic regression on the top-k, F1 on held-out data.

The regression is scikit-learn's ``LogisticRegression`` (lbfgs, L2 penalty, C = 1):
already pinned in requirements.lock (lm-eval needs it), a well-tested optimiser, no
hand-written one. Choices the paper summary leaves open, stated here: features are
standardised with the training mean and deviation; classes are weighted inversely to
their frequency (``class_weight="balanced"``) because most concepts are rare and an
unweighted probe at small k tends to predict "no" everywhere (F1 0).
"""

from __future__ import annotations

import warnings

import numpy as np

DEFAULT_KS = (1, 2, 4, 8, 16, 32, 64)
DEFAULT_C = 1.0


def f1_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """F1 of the positive class; 0.0 when there is no true and no predicted positive."""
    true_positive = int(np.sum(truth & predicted))
    wrong = int(np.sum(truth != predicted))
    return 0.0 if true_positive == 0 else 2 * true_positive / (2 * true_positive + wrong)


def top_neurons(mean_difference: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest a_j (ties: lower index first), (k,) int64."""
    return np.argsort(-mean_difference, kind="stable")[:k]


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              c: float = DEFAULT_C) -> tuple[float, float]:
    """(train F1, test F1) of an L2 logistic regression on (n, k) features; labels (n,) bool."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean = train_x.mean(axis=0)
    scale = train_x.std(axis=0)
    scale[scale == 0] = 1.0
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit((train_x - mean) / scale, train_y)
    train_f1 = f1_score(train_y, model.predict((train_x - mean) / scale).astype(bool))
    test_f1 = f1_score(test_y, model.predict((test_x - mean) / scale).astype(bool))
    return train_f1, test_f1
