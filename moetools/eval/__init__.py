"""moe-eval: per-domain loss and multiple-choice accuracy of one or more model directories.

- :func:`domain_loss` — mean next-token loss (nats/token), perplexity and token counts per domain.
- :func:`choice_accuracy` — ``acc`` and ``acc_norm`` by log-likelihood, as lm-evaluation-harness
  computes them for a ``multiple_choice`` task.
- :func:`evaluate` — several models, records of formats/eval.md with deltas against the first.
"""

from .choices import choice_accuracy, read_choice_items
from .loss import domain_loss
from .run import evaluate, load_for_eval

__all__ = ["choice_accuracy", "domain_loss", "evaluate", "load_for_eval", "read_choice_items"]
