"""moe-score ``--labels``: judged detection scores of labels (paper 000 A.2 and eq. 3-5, paper 002's F1).

Entry point: :func:`judge_labels` (``run``), with :func:`make_scorer` and :func:`accounting_line`.
The modules: ``inputs`` (labels and samples streams read and checked), ``prompts`` (the A.2 prompt and
its answer parser), ``llm`` (an LLM scorer through the LLM exchange), ``embedding`` (the offline
scorer), ``detection`` (the judge: samples, orders, verdicts, the shuffled-label baseline),
``metrics`` (EMS, EDMS, precision, recall, F1, balanced accuracy, LDS) and ``join`` (EDMRS when
routing and judged scores are joined).
"""

from .detection import JudgeOptions
from .join import add_edmrs
from .run import accounting_line, judge_labels, make_scorer

__all__ = ["JudgeOptions", "accounting_line", "add_edmrs", "judge_labels", "make_scorer"]
