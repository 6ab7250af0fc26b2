"""moe-score: metrics of experts and their labels (routing statistics from traces, detection scores of labels).

Routing statistics (formats/scores.md): ``routing`` (streaming sums per domain x layer x expert),
``metrics`` (the papers' equations), ``permutation`` (skew p/q-values), ``jsd`` (paper 002's
unembedding-cluster specialisation), ``scorer`` (one pass over traces), ``output`` (the scores
stream), ``run`` (paths in, records out; the entry point :func:`score_traces`), ``join`` (scores
streams merged by (layer, expert)),
``table`` (--format table). ``specialisation`` holds the demo's domain figures.

Detection scores of labels (``moe-score SAMPLES --labels L``): the sub-package ``judge``.
"""

from ..lazy import lazy_exports

#: the tool's entry point (CONTRIBUTING.md, "Add a tool"), imported when first used
__getattr__ = lazy_exports(__name__, {"score_traces": "run"})

__all__ = ["score_traces"]
