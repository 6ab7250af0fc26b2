"""moe-trace as a library (record contract: formats/trace.md).

- :func:`trace_corpus` (``runner``): a corpus into ``sequence`` records on a StreamWriter,
  for a model from :func:`moetools.models.load_model` (the routing capture is the
  adapter's, :mod:`moetools.models.capture`);
- :func:`run_trace` (``run``): what ``moe-trace`` does, output files and ``--resume`` included
  (messages, progress and the header's tool field are the caller's callbacks: no CLI needed).

Names are imported lazily: ``import moetools.trace`` does not import torch.
"""

from ..lazy import lazy_exports

__getattr__ = lazy_exports(__name__, {"TraceOptions": "runner", "TraceSummary": "runner", "trace_corpus": "runner",
                                      "run_trace": "run"})


__all__ = ["TraceOptions", "TraceSummary", "run_trace", "trace_corpus"]
