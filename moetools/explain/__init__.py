"""moe-explain's logic: prompts, answer parsing, the explainer methods and the async runner.

The methods (``--backend``): the paper's chat prompt through any completion client
of :mod:`moetools.llm` (``openai``, ``local``, or a plugin's; :mod:`.chat`), MONET
self-explanation (``self``, :mod:`.self_explain`) and an offline statistical
summary (``offline``, :mod:`.offline`). The whole tool, as ``moe-explain`` runs it (resume,
output, closing lines): :func:`moetools.explain.run.explain_samples`. Piece by piece::

    from moetools.explain import ExplainSettings, ResponseCache, make_explainer, make_runner, run_sync

    explainer = make_explainer("openai", {"api_base": "http://localhost:8000/v1", "model": "m"},
                               settings=ExplainSettings(max_examples=10))
    explainer.prepare()                                   # reach the server before any work
    runner = make_runner(explainer, cache=ResponseCache(), domain=load_domain("medical"))
    seconds = run_sync(runner, samples_reader, labels.append)   # one label record per expert record

See :mod:`moetools.explain.runner` for the method and formats/labels.md for the output.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Container, Iterable

from ..lazy import lazy_exports
from ..llm.cache import ResponseCache, default_cache_dir
from ..progress import ProgressFactory, no_progress
from .method import ExplainAccounting, Explainer, ExplainJob, ExplainSettings
from .parse import check_explanation, parse_explanation
from .prompts import BUILTIN_DOMAINS, Domain, build_messages, load_domain
from .registry import available, backend_table, describe_backends, make_explainer, register_explainer
from .runner import ExplainRunner, logit_lens_pieces, select_examples


def make_runner(explainer: Explainer | str, options: dict | None = None, *, cache: ResponseCache | None,
                domain: Domain | None = None, settings: ExplainSettings | None = None) -> ExplainRunner:
    """A runner for ``explainer`` (an :class:`Explainer`, or a ``--backend`` name with its options)."""
    if isinstance(explainer, str):
        explainer = make_explainer(explainer, options, settings=settings)
    return ExplainRunner(explainer, cache=cache, domain=domain)


def run_sync(runner: ExplainRunner, records: Iterable[dict], emit: Callable[[dict], None],
             skip: Callable[[dict], bool] | None = None, progress: ProgressFactory = no_progress,
             only: Container | None = None) -> float:
    """Run ``runner`` to the end on a fresh event loop; returns the seconds it took.

    ``progress(description)`` (moetools.progress) is advanced per expert labelled (or failed);
    ``only``: label just these (layer, expert) pairs (:func:`listed_experts`), skipping the rest.
    """
    started = time.perf_counter()
    with progress("labelling experts") as bar:
        def emit_and_count(label: dict) -> None:
            emit(label)
            bar.advance()

        asyncio.run(runner.run(records, emit_and_count, skip, only=only))
    return time.perf_counter() - started


def listed_experts(path, model: dict | None) -> set[tuple[int, int]]:
    """The (layer, expert) pairs of an experts file (formats/experts.md, as moe-select writes it).

    ``model`` is the samples header's model identity: a set selected on another model, or naming
    layers or ids that model lacks, is refused (ModelMismatchError / FormatError, exit 2).
    """
    from ..select import read_experts

    return read_experts(path, model=model).pairs()


#: the tool's entry point (CONTRIBUTING.md, "Add a tool"), imported when first used
__getattr__ = lazy_exports(__name__, {"explain_samples": "run"})


__all__ = [
    "BUILTIN_DOMAINS",
    "Domain",
    "ExplainAccounting",
    "ExplainJob",
    "ExplainRunner",
    "ExplainSettings",
    "Explainer",
    "ResponseCache",
    "available",
    "backend_table",
    "build_messages",
    "check_explanation",
    "default_cache_dir",
    "describe_backends",
    "explain_samples",
    "listed_experts",
    "load_domain",
    "logit_lens_pieces",
    "make_explainer",
    "make_runner",
    "parse_explanation",
    "register_explainer",
    "run_sync",
    "select_examples",
]
