"""moe-tune's logic: fine-tune only chosen parts of an MoE (or MONET) model.

``from moetools.tune import TuneOptions, merge, tune``: ``tune(TuneOptions(model=..., data=..., output=...,
mode="experts", experts=...))`` writes an adapter directory (formats/tune.md); ``merge(adapter, out)``
writes a standard checkpoint (``moetools.tune(...)`` and ``moetools.merge(...)`` take keyword arguments).
Modules: :mod:`.slices` (selected experts of fused tensors), :mod:`.per_expert` (experts mode on
transformers' fused tensors), :mod:`.modes` (what each mode trains), :mod:`.data` (plain / chat JSON
lines), :mod:`.das` (DAS, C-DAS@k, RC), :mod:`.loop` (the loop), :mod:`.checkpoints`, :mod:`.adapter`
(adapter files and merge); the training core shared with monet-train is :mod:`moetools.training`.
"""

from .adapter import apply_adapter, merge, read_adapter
from .loop import LOG_NAME, TuneOptions, tune
from .modes import MODES

__all__ = ["LOG_NAME", "MODES", "TuneOptions", "apply_adapter", "merge", "read_adapter", "tune"]
