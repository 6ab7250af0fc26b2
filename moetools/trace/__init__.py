"""moe-trace as a library (record contract: formats/trace.md).

- :class:`RoutingCapture` (``capture``): routing, gates, g·‖E‖ and full router
  distributions from one forward pass of any adapter-known model;
- :func:`trace_corpus` (``runner``): a corpus into ``sequence`` records on a StreamWriter;
- :func:`cli_run` (``command``): what ``moe-trace`` does, output files and ``--resume`` included.
"""

from .capture import RoutingCapture
from .runner import TraceOptions, TraceSummary, load_model, trace_corpus


def cli_run(*args, **kwargs):
    from .command import cli_run as run

    return run(*args, **kwargs)


__all__ = ["RoutingCapture", "TraceOptions", "TraceSummary", "cli_run", "load_model", "trace_corpus"]
