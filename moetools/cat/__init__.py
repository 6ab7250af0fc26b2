"""moe-cat's library: walk one or more streams as one, copy/convert, summarise, validate (``run``).

Entry point: :func:`copy_streams` (view and convert); :func:`summarize` and :func:`check_streams`
serve ``--summary`` and ``--check``.
"""

from .run import Summary, SummaryError, check_streams, copy_streams, summarize, walk

__all__ = ["Summary", "SummaryError", "check_streams", "copy_streams", "summarize", "walk"]
