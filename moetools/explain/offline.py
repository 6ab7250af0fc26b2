"""``offline``: a statistical summary of each expert's activating tokens; no language model at all.

Method ``offline-log-odds-v4`` (what the label records say in ``explainer.method``
and, with the numbers, in ``details``):

1. Background: every token of every context the explainer may see (``explain``
   sets: top, weighted and negative; never the holdout), each distinct context
   counted once, over the whole samples stream. Tokens are normalized by
   stripping surrounding white space and lower-casing; a piece that is only
   white space is named by its escapes (``\\n``, ``\\t``, ``␣`` per space), since
   experts that fire on indentation or line ends are common in code; empty
   pieces are ignored.
2. Foreground: the tokens at the expert's activating positions (activation > 0)
   in the contexts shown to it (the same selection an LLM explainer gets).
3. Each token t is ranked by the smoothed log ratio
   ``log((c_e(t) + 1) / (n_e + V)) - log((c_b(t) + 1) / (n_b + V))``
   (c: counts, n: totals, V: background vocabulary size; add-one smoothing),
   ties by foreground count then text; only tokens seen at least MIN_TOKEN_COUNT (3) times at the
   expert's activating positions are ranked (a fragment seen once says nothing); the top 5 are named.
   An expert with no such token gets no label (status failed, with the reason).
4. The top 3 logit-lens tokens (paper 002) when the samples carry them, and the
   dominant document domain (``meta.domain`` of the shown contexts) when it holds
   at least half of them.

The label reads ``This expert specializes in the tokens "fever", "dose" in medical
text and promotes "fevers" (a statistical summary of its activating tokens, not an
LLM label)``: the sentence says what it is, so nobody takes it for an LLM's
reading. Deterministic: the same stream gives the same labels byte for byte
(``seconds`` aside).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ..llm.base import Completion
from .method import Explainer, ExplainJob
from .runner import logit_lens_pieces, select_examples

# v1 ignored white-space-only pieces (no label for such experts); v2's sentence did not say it was no LLM's;
# v3 named tokens seen once
METHOD = "offline-log-odds-v4"
DESCRIPTION = (f"{METHOD}: the tokens most over-represented at the expert's activating positions against all "
               "tokens of the samples' explain contexts (add-one smoothed log ratio; tokens seen at least 3 times), its top logit-lens tokens "
               "and its dominant document domain; no language model")
SUMMARY_NOTE = " (a statistical summary of its activating tokens, not an LLM label)"
TOP_TOKENS = 5
#: a token is named only when seen at least this many times at the expert's activating positions
MIN_TOKEN_COUNT = 3
TOP_LOGIT_LENS = 3
DOMINANT_SHARE = 0.5


def normalize(piece: str) -> str:
    """Lower-cased and stripped; a white-space-only piece as visible escapes ("\\n", "␣␣")."""
    token = piece.strip().lower()
    if token or not piece:
        return token
    return piece.replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t").replace(" ", "␣")


def quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


class OfflineExplainer(Explainer):
    """See the module docstring."""

    summary = "no LLM: a statistical summary of the tokens at each expert's activating positions"
    cacheable = False
    uses_chat_prompt = False
    deterministic = True
    needs_corpus_pass = True
    prompt_kind = "offline"

    def __init__(self, options, accounting):
        super().__init__(options, accounting)
        self.background: Counter = Counter()
        self.background_domains: Counter = Counter()
        self.select: Callable[[dict], list[dict]] | None = None

    @property
    def model(self) -> None:
        return None

    @property
    def concurrency(self) -> int:
        return 1

    def identity(self) -> dict:
        return {"backend": self.name, "model": None, "method": DESCRIPTION}

    def interpret(self, completion: Completion) -> tuple[str | None, str | None]:
        if completion.text:
            return completion.text, None
        return None, f"no activating token seen at least {MIN_TOKEN_COUNT} times to summarize"

    def corpus_pass(self, records: Iterable[dict]) -> Iterator[dict]:
        """Read the whole stream once: background counts, and a small summary per expert."""
        seen_contexts: set[str] = set()
        summaries = []
        for record in records:
            if record.get("type") != "expert":
                continue
            explain = record.get("explain") or {}
            for name in ("top", "weighted", "negative"):
                for context in explain.get(name) or []:
                    identifier = str(context.get("id"))
                    if identifier in seen_contexts:
                        continue
                    seen_contexts.add(identifier)
                    self.background.update(token for token in map(normalize, context.get("pieces") or []) if token)
                    self.background_domains[str((context.get("meta") or {}).get("domain"))] += 1
            shown = select_examples(record, self.settings.max_examples)
            foreground: Counter = Counter()
            domains: Counter = Counter()
            for context in shown:
                activation = np.asarray(context["activation"], dtype=np.float32)
                for piece, value in zip(context["pieces"], activation):
                    token = normalize(piece)
                    if value > 0 and token:
                        foreground[token] += 1
                domains[str((context.get("meta") or {}).get("domain"))] += 1
            summaries.append({"type": "expert", "layer": int(record["layer"]), "expert": int(record["expert"]),
                              "stats": record.get("stats"), "activating_positions": sum(foreground.values()),
                              "shown": [{"id": str(context.get("id"))} for context in shown],
                              "foreground": foreground, "domains": domains,
                              "logit_lens": logit_lens_pieces({"logit_lens": record.get("logit_lens")},
                                                              TOP_LOGIT_LENS)})
        return iter(summaries)

    def _ranked_tokens(self, foreground: Counter) -> list[dict]:
        total_foreground = sum(foreground.values())
        total_background = sum(self.background.values())
        vocabulary = max(1, len(self.background))
        rows = []
        for token, count in foreground.items():
            if count < MIN_TOKEN_COUNT:
                continue
            background = self.background.get(token, 0)
            ratio = math.log((count + 1) / (total_foreground + vocabulary)) \
                - math.log((background + 1) / (total_background + vocabulary))
            rows.append({"piece": token, "count": count, "background": background,
                         "log_ratio": round(ratio, 4)})
        rows.sort(key=lambda row: (-row["log_ratio"], -row["count"], row["piece"]))
        return rows[:TOP_TOKENS]

    async def complete(self, job: ExplainJob) -> Completion:
        summary = job.record
        tokens = self._ranked_tokens(summary["foreground"])
        shown = sum(summary["domains"].values())
        contexts_total = max(1, sum(self.background_domains.values()))
        domains = [{"domain": domain, "share": round(count / shown, 4),
                    "background_share": round(self.background_domains.get(domain, 0) / contexts_total, 4)}
                   for domain, count in sorted(summary["domains"].items(), key=lambda item: (-item[1], item[0]))]
        if not tokens:
            return Completion(text="")
        text = "This expert specializes in the tokens " + ", ".join(quote(row["piece"]) for row in tokens)
        if domains and domains[0]["share"] >= DOMINANT_SHARE and domains[0]["domain"] != "None":
            text += f" in {domains[0]['domain']} text"
        if summary["logit_lens"]:
            text += " and promotes " + ", ".join(quote(piece) for piece in summary["logit_lens"])
        text += SUMMARY_NOTE
        details = {"method": METHOD, "min_count": MIN_TOKEN_COUNT, "tokens": tokens, "logit_lens": summary["logit_lens"], "domains": domains,
                   "activating_positions": sum(summary["foreground"].values())}
        return Completion(text=text, details=details)
