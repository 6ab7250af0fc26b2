"""Labelling every expert of a samples stream: many requests in flight, cached, resumable.

The runner turns each ``expert`` record of a samples stream (formats/samples.md)
into one ``label`` record (formats/labels.md):

1. the examples the explainer may see — ``explain.top`` and ``explain.weighted``,
   never the holdout — ordered from most to least strongly activating (paper 000:
   "in order from most strongly activating to least strongly activating"), at most
   ``max_examples`` (paper 002 shows 20), plus the top logit-lens tokens (paper 002: 3);
2. the prompt (P_mono or P_domain(d), :mod:`moetools.explain.prompts`);
3. the answer, through the one LLM exchange (:func:`moetools.llm.exchange.exchange`):
   from the response cache when it holds this exact request and the answer there
   is a label, else from the method, then cached when it is a label; an answer
   that is not a label (:mod:`moetools.explain.parse`) is asked again (``attempts``
   in all) and finally recorded as failed with the raw text and why.

Up to ``window`` experts are being worked on at once, and at most the method's
``concurrency`` of them wait for an answer (a client also bounds its own requests
in flight); labels are emitted in input order as soon as every earlier
one is done, so the output is deterministic. A killed run loses no answer that
came back: it is in the cache, and a rerun asks only for the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Container, Iterable

import numpy as np

from ..errors import UsageError
from ..llm.cache import ResponseCache
from ..llm.exchange import exchange
from .evidence import label_evidence
from .method import DEFAULT_LOGIT_LENS_TOP, DEFAULT_MAX_EXAMPLES, ExplainAccounting, Explainer, ExplainJob
from .prompts import COMPACT_EXAMPLES, Domain, build_compact_messages, build_messages


def max_activation(context: dict) -> float:
    activation = context.get("activation")
    if activation is None or len(activation) == 0:
        return float(context.get("score") or 0.0)
    return float(np.max(np.asarray(activation, dtype=np.float32)))


def select_examples(record: dict, max_examples: int = DEFAULT_MAX_EXAMPLES) -> list[dict]:
    """The explainer's contexts: top + weighted (deduplicated), strongest first, at most ``max_examples``.

    Only contexts in which the expert is active somewhere are kept (the prompt
    promises "documents on which the expert is activated"). Ties keep stream order.
    """
    explain = record.get("explain") or {}
    seen: set[str] = set()
    contexts: list[dict] = []
    for name in ("top", "weighted"):
        for context in explain.get(name) or []:
            identifier = str(context.get("id"))
            if identifier in seen or max_activation(context) <= 0.0:
                continue
            seen.add(identifier)
            contexts.append(context)
    ranked = sorted(range(len(contexts)), key=lambda index: (-max_activation(contexts[index]), index))
    return [contexts[index] for index in ranked[:max_examples]]


def logit_lens_pieces(record: dict, top: int = DEFAULT_LOGIT_LENS_TOP) -> list[str]:
    """The expert's ``top`` most frequent logit-lens tokens (empty when the samples have none)."""
    entries = record.get("logit_lens") or []
    if top <= 0:
        return []
    ranked = sorted(enumerate(entries), key=lambda item: (-int(item[1].get("count", 0)), item[0]))
    return [str(entry["piece"]) for _, entry in ranked[:top] if "piece" in entry]


class ExplainRunner:
    """Drives one explainer method over a stream of expert records (see the module docstring).

    ``max_examples``, ``logit_lens_top`` and ``attempts`` come from the method's
    :class:`moetools.explain.method.ExplainSettings`.
    """

    def __init__(self, backend: Explainer, *, cache: ResponseCache | None, domain: Domain | None = None,
                 window: int | None = None):
        self.backend = backend
        self.cache = cache
        self.accounting: ExplainAccounting = backend.accounting
        self.domain = domain
        self.max_examples = backend.settings.max_examples
        self.logit_lens_top = backend.settings.logit_lens_top
        self.attempts = max(1, backend.settings.attempts)
        #: the compact prompt form (chat methods only; see moetools.explain.prompts)
        self.compact = backend.uses_chat_prompt and backend.settings.prompt_form == "compact"
        if self.compact and domain is not None:
            raise UsageError("--prompt-form compact has no P_domain(d) form; leave out --domain or use --prompt-form "
                             "paper")
        self.window = window or max(2, 2 * backend.concurrency)
        self._slots = asyncio.Semaphore(max(1, backend.concurrency))
        #: why experts failed, by kind (a BackendError's kind, "answer", "length"), for the advice line
        self.failure_kinds: Counter = Counter()
        #: experts of the stream left out by ``run(only=...)``, and the listed experts the stream had
        self.unlisted = 0
        self.listed_seen: set[tuple[int, int]] = set()
        #: top_k / num_experts of the samples header, for the always-on flag (:mod:`moetools.explain.evidence`)
        self.uniform_share: float | None = None

    # -- one expert ------------------------------------------------------------------------------
    def prompt_record(self) -> dict:
        if not self.backend.uses_chat_prompt:
            return {"kind": self.backend.prompt_kind or self.backend.name, "domain": None}
        form = {"form": "compact"} if self.compact else {}   # absent: the paper's prompt
        if self.domain is None:
            return {"kind": "mono", "domain": None, **form}
        return {"kind": "domain", "domain": self.domain.name, **form}

    def make_job(self, record: dict) -> ExplainJob:
        # a method's corpus pass may have chosen the examples already (and dropped the rest of the record)
        examples = record["shown"] if "shown" in record else select_examples(record, self.max_examples)
        if self.compact:
            examples = examples[:COMPACT_EXAMPLES]
        messages = []
        if self.backend.uses_chat_prompt and examples:
            lens = logit_lens_pieces(record, self.logit_lens_top)
            messages = build_compact_messages(examples, lens) if self.compact else \
                build_messages(examples, self.domain, lens)
        return ExplainJob(layer=int(record["layer"]), expert=int(record["expert"]), messages=messages,
                          examples=examples, record=record)

    async def label(self, record: dict) -> dict:
        """The label record of one expert (status ok or failed; never a made-up explanation)."""
        started = time.perf_counter()
        job = self.make_job(record)
        label = {"type": "label", "layer": job.layer, "expert": job.expert, "explanation": None,
                 "status": "failed", "prompt": self.prompt_record(), "explainer": self.backend.identity(),
                 "examples": [str(context.get("id")) for context in job.examples],
                 "evidence": label_evidence(record, job.examples, self.uniform_share)}
        usage = {"prompt_tokens": 0, "completion_tokens": 0, "requests": 0, "cache_hits": 0}
        if job.examples:
            answer = await self._exchange(job)
            usage.update(prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens,
                         cache_hits=answer.cache_hits)
            if answer.value is not None:
                label["explanation"], label["status"] = answer.value, "ok"
                if answer.completion.details:
                    label["details"] = answer.completion.details
            error, raw, kind = answer.error, answer.raw, answer.kind
        else:
            status = record.get("status")
            error = "no activating examples in the explain sets" + (f" (samples status: {status})"
                                                                    if status and status != "ok" else "")
            raw, kind = None, None
            self.accounting.failures += 1     # no exchange: nothing else counts it
            self.accounting.no_examples += 1
        usage["requests"] = job.requests
        label["usage"] = usage
        label["attempts"] = job.attempt + 1 if job.examples else 0
        label["seconds"] = round(time.perf_counter() - started, 4)
        if label["status"] != "ok":
            label["error"] = error
            label["raw"] = raw
            if kind is not None:
                self.failure_kinds[kind] += 1
        else:
            self.accounting.labelled += 1
        return label

    async def _exchange(self, job: ExplainJob):
        """The method's answer to ``job`` through the one exchange (:func:`moetools.llm.exchange.exchange`)."""

        async def send(messages, attempt, max_tokens=None):
            job.attempt, job.max_tokens = attempt, max_tokens
            async with self._slots:
                return await self.backend.complete(job)

        def key(messages, attempt, max_tokens=None):
            job.attempt, job.max_tokens = attempt, max_tokens
            return self.backend.request_identity(job)

        return await exchange(send, job.messages, lambda completion: self.backend.interpret(completion),
                              attempts=self.attempts, cache=self.cache if self.backend.cacheable else None, key=key,
                              accounting=self.accounting, max_tokens=self.backend.max_tokens)

    def advice(self) -> str | None:
        """One line on what to change, from the most common reason experts failed (None when nothing to say)."""
        if not self.failure_kinds:
            return None
        kind, _ = self.failure_kinds.most_common(1)[0]
        return self.backend.advice(kind)
    # -- the stream ------------------------------------------------------------------------------
    async def run(self, records: Iterable[dict], emit: Callable[[dict], None],
                  skip: Callable[[dict], bool] | None = None, only: Container | None = None) -> None:
        """Label every record not skipped; ``emit`` gets each label, in input order.

        ``only`` (a set of (layer, expert), e.g. an experts file's ``ExpertSet.pairs()``) labels just
        those experts: the rest are neither labelled nor emitted (counted in ``unlisted``). It applies
        after a method's corpus pass, so the offline method's background still counts the whole stream
        and a listed expert gets the label it would get without ``only``.
        """
        if self.backend.needs_corpus_pass:
            records = self.backend.corpus_pass(records)
        await self.backend.start()
        pending: set[asyncio.Task] = set()
        finished: dict[int, dict] = {}
        next_to_emit = 0

        def collect(done: set[asyncio.Task]) -> None:
            nonlocal next_to_emit
            failure = None
            for task in done:  # retrieve every result, so no task's exception goes unobserved
                if task.exception() is not None:
                    failure = failure or task.exception()
                    continue
                index, label = task.result()
                finished[index] = label
            if failure is not None:
                raise failure  # a fatal backend error (or a bug) stops the run
            while next_to_emit in finished:
                emit(finished.pop(next_to_emit))
                next_to_emit += 1

        async def numbered(index: int, record: dict) -> tuple[int, dict]:
            return index, await self.label(record)

        try:
            index = 0
            for record in records:
                if record.get("type") != "expert":
                    continue
                if only is not None:
                    key = (int(record["layer"]), int(record["expert"]))
                    if key not in only:
                        self.unlisted += 1
                        continue
                    self.listed_seen.add(key)
                if skip is not None and skip(record):
                    self.accounting.skipped += 1
                    continue
                while len(pending) >= self.window:
                    done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    collect(done)
                pending.add(asyncio.create_task(numbered(index, record)))
                index += 1
                await asyncio.sleep(0)  # let started tasks reach the backend while we read on
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                collect(done)
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await self.backend.aclose()
