"""moe-explain's logic: prompts, answer parsing, the response cache and the async runner.

    from moetools.explain import explain_stream
    explain_stream(reader, writer, backend="offline")

See :mod:`moetools.explain.runner` for the method and formats/labels.md for the output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

from ..llm import Accounting, get_explainer
from .cache import ResponseCache, default_cache_dir
from .parse import parse_explanation
from .prompts import BUILTIN_DOMAINS, Domain, build_messages, load_domain
from .runner import ExplainRunner, logit_lens_pieces, select_examples


def make_runner(backend: str, options: dict, *, cache: ResponseCache, domain: Domain | None = None,
                max_examples: int = 20, logit_lens_top: int = 3, attempts: int = 3,
                accounting: Accounting | None = None) -> ExplainRunner:
    """A runner for the backend registered as ``backend`` with moe-explain's ``options``."""
    accounting = accounting or Accounting()
    options = {**options, "max_examples": max_examples}
    explainer = get_explainer(backend)(options, accounting)
    return ExplainRunner(explainer, cache=cache, accounting=accounting, domain=domain,
                         max_examples=max_examples, logit_lens_top=logit_lens_top, attempts=attempts)


def run_sync(runner: ExplainRunner, records: Iterable[dict], emit: Callable[[dict], None],
             skip: Callable[[dict], bool] | None = None) -> float:
    """Run ``runner`` to the end on a fresh event loop; returns the seconds it took."""
    started = time.perf_counter()
    asyncio.run(runner.run(records, emit, skip))
    return time.perf_counter() - started


__all__ = [
    "BUILTIN_DOMAINS",
    "Accounting",
    "Domain",
    "ExplainRunner",
    "ResponseCache",
    "build_messages",
    "default_cache_dir",
    "load_domain",
    "logit_lens_pieces",
    "make_runner",
    "parse_explanation",
    "run_sync",
    "select_examples",
]
