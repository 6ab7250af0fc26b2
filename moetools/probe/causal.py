"""``moe-probe causal``: does a label predict what its expert *does*? (paper 002, trigger/target attribution)

For each ``ok`` label of a labels stream (formats/labels.md): a proposer (an LLM of
:mod:`moetools.llm`, or the offline fallback of :mod:`.causal_prompts`) gives trigger texts
and target tokens; the model runs on the triggers and every expert of the label's layer is
ranked by direct logit attribution onto the targets (:mod:`.dla`, formula there and in
formats/probe.md). Per label: the labelled expert's rank; per layer: top-1/top-5 hit rates
beside a random-label baseline (labels permuted among the layer's experts, seeded, averaged
over ``shuffles`` permutations) and chance (1/E, min(5, E)/E).
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

from ..errors import UsageError
from ..llm.exchange import ask, refusing_truncated
from .causal_prompts import (
    DEFAULT_TARGETS,
    DEFAULT_TRIGGERS,
    OFFLINE_METHOD,
    RETRY,
    SYSTEM,
    USER,
    build_messages,
    offline_proposal,
    parse_answer,
    retry_messages,
)
from .dla import layer_dla, rank_of

FORMULA = "DLA_i = sum_{p in trigger positions} sum_{t in targets} p_i(x_p) * W_U[t] . (gamma * E_i(x_p)) / rms(h_p)"
OFFLINE_PROPOSER = {"backend": "offline", "model": None, "method": OFFLINE_METHOD}


@dataclass
class Proposal:
    """What one label's proposer gave: triggers/targets, or why not; every prompt it was sent."""

    label: dict
    triggers: list[str] | None = None
    targets: list[str] | None = None
    messages: list[dict] | None = None  # the whole conversation sent (retries included); None offline
    attempts: int = 0
    requests: int = 0
    cache_hits: int = 0
    error: str | None = None
    raw: str | None = None


@dataclass
class CausalOptions:
    triggers: int = DEFAULT_TRIGGERS
    targets: int = DEFAULT_TARGETS
    attempts: int = 3
    seed: int = 0
    shuffles: int = 100
    max_length: int = 128

    def check(self) -> None:
        for name in ("triggers", "targets", "attempts", "shuffles", "max_length"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1")


@dataclass
class Summary:
    labels: int = 0
    evaluated: int = 0
    skipped: dict = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def read_labels(path: str, identity: dict, layers: dict[int, int], summary: Summary) -> list[dict]:
    """The ``ok`` labels of ``path``; UsageError for labels of another model or experts it does not have."""
    from ..streams.files import read_input

    reader = read_input(path, kinds="labels", validate=True)
    records = [record for record in reader if record.get("type") == "label"]
    fingerprint = (reader.header.get("model") or {}).get("fingerprint")
    if fingerprint != identity.get("fingerprint"):
        name = (reader.header.get("model") or {}).get("name")
        raise UsageError(f"{path} labels another model ({name!r}, fingerprint {fingerprint}), not {identity.get('name')!r}")
    kept = []
    for record in records:
        summary.labels += 1
        layer, expert = record["layer"], record["expert"]
        if layer not in layers or not 0 <= expert < layers[layer]:
            raise UsageError(f"{path}: layer {layer} expert {expert} is not an expert of this model")
        if record.get("status") != "ok" or not record.get("explanation"):
            summary.skip("failed_label")
            continue
        kept.append(record)
    return kept


def propose_offline(labels: list[dict], options: CausalOptions) -> list[Proposal]:
    proposals = []
    for label in labels:
        found, why = offline_proposal(label, options.triggers, options.targets)
        proposals.append(Proposal(label, *(found or (None, None)), error=why))
    return proposals


TRUNCATED = 'it was cut off at --max-tokens (finish_reason "length")'


async def _ask(client, cache, label: dict, options: CausalOptions) -> Proposal:
    """One label's exchange: a refused answer is asked again with the reason (:func:`retry_messages`)."""
    parse = refusing_truncated(lambda text: parse_answer(text, options.triggers, options.targets), TRUNCATED)
    answer = await ask(client, build_messages(label["explanation"], options.triggers, options.targets), parse,
                       attempts=options.attempts, cache=cache, reask=retry_messages)
    proposal = Proposal(label, messages=answer.messages, attempts=answer.attempts, requests=answer.requests,
                        cache_hits=answer.cache_hits, raw=answer.raw)
    if answer.value is not None:
        proposal.triggers, proposal.targets = answer.value
    elif answer.kind in ("answer", "length"):
        proposal.error = f"answer refused: {answer.error}"
    else:
        proposal.error = answer.error
    return proposal


def propose_llm(client, cache, labels: list[dict], options: CausalOptions) -> list[Proposal]:
    """Every label's proposal, all asked at once (the client bounds requests in flight)."""

    async def run():
        await client.start()
        try:
            return list(await asyncio.gather(*(_ask(client, cache, label, options) for label in labels)))
        finally:
            await client.aclose()

    return asyncio.run(run())


def target_tokens(tokenizer, targets: list[str]) -> tuple[list[dict], list[str]]:
    """Each target's first token as the tokenizer splits it; targets with no (or only the unknown) token dropped."""
    kept, dropped = [], []
    for text in targets:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids or ids[0] == tokenizer.unk_token_id:
            dropped.append(text)
            continue
        kept.append({"text": text, "token_id": int(ids[0]), "piece": tokenizer.decode([ids[0]])})
    return kept, dropped


def evaluate(model, tokenizer, adapter, proposals: list[Proposal], proposer: dict, options: CausalOptions,
             summary: Summary, on_label=None):
    """Yield one ``causal`` record per proposal, then one ``causal_layer`` record per layer with labels."""
    num_experts = {layer.index: layer.num_experts for layer in adapter.moe_layers()}
    scored: dict[int, list[tuple[int, list[float]]]] = {}
    for proposal in proposals:
        label = proposal.label
        layer, expert = label["layer"], label["expert"]
        record = {"type": "causal", "layer": layer, "expert": expert, "explanation": label["explanation"],
                  "proposer": proposer, "messages": proposal.messages, "attempts": proposal.attempts,
                  "requests": proposal.requests, "cache_hits": proposal.cache_hits,
                  "triggers": proposal.triggers or [], "targets": [], "dropped_targets": [],
                  "num_experts": num_experts[layer]}
        if proposal.triggers is None:
            summary.skip("no_proposal")
            yield {**record, "status": "failed", "error": proposal.error, "raw": proposal.raw}
            continue
        targets, dropped = target_tokens(tokenizer, proposal.targets)
        record.update(targets=targets, dropped_targets=dropped)
        if not targets:
            summary.skip("no_target_token")
            yield {**record, "status": "failed", "error": "no target is a token of this model's vocabulary",
                   "raw": None}
            continue
        scores = layer_dla(model, tokenizer, adapter, proposal.triggers, [t["token_id"] for t in targets],
                           options.max_length, only={layer})[layer]
        rank = rank_of(scores, expert)
        order = sorted(range(len(scores)), key=lambda i: -scores[i])
        scored.setdefault(layer, []).append((expert, scores))
        summary.evaluated += 1
        if on_label:
            on_label()
        yield {**record, "status": "ok", "rank": rank, "top1": rank == 1, "top5": rank <= 5,
               "dla": scores[expert], "top_experts": [{"expert": i, "dla": scores[i]} for i in order[:5]]}
    rng = random.Random(options.seed)
    for layer in sorted(scored):
        yield layer_record(layer, scored[layer], num_experts[layer], options.shuffles, rng)


def layer_record(layer: int, scored: list[tuple[int, list[float]]], experts: int, shuffles: int,
                 rng: random.Random) -> dict:
    """Hit rates of the labelled experts, of the same labels permuted among the layer's experts, and chance."""
    ranks = [rank_of(scores, expert) for expert, scores in scored]
    base1 = base5 = 0
    for _ in range(shuffles):
        permutation = list(range(experts))
        rng.shuffle(permutation)
        for expert, scores in scored:
            shuffled = rank_of(scores, permutation[expert])
            base1 += shuffled == 1
            base5 += shuffled <= 5
    count = len(scored)
    return {"type": "causal_layer", "layer": layer, "num_experts": experts, "labels": count,
            "top1_rate": sum(r == 1 for r in ranks) / count, "top5_rate": sum(r <= 5 for r in ranks) / count,
            "baseline_top1_rate": base1 / (count * shuffles), "baseline_top5_rate": base5 / (count * shuffles),
            "baseline_shuffles": shuffles, "chance_top1": 1 / experts, "chance_top5": min(5, experts) / experts,
            "mean_rank": sum(ranks) / count}


def header_extra(proposer: dict, options: CausalOptions, labels_path: str) -> dict:
    prompt = None if proposer["backend"] == "offline" else {"system": SYSTEM, "user": USER, "retry": RETRY}
    return {"causal": {"proposer": proposer, "prompt": prompt, "labels": labels_path, "formula": FORMULA,
                       "triggers": options.triggers, "targets": options.targets, "attempts": options.attempts,
                       "seed": options.seed, "baseline_shuffles": options.shuffles,
                       "gate": "full router probability p_i (softmax over all experts), routed or not",
                       "positions": "every token position of each trigger", "target_token": "first token"}}


def layer_table(records: list[dict]) -> str:
    rows = [f"{'layer':>5} {'labels':>6} {'top1':>6} {'top5':>6} {'shuf1':>6} {'shuf5':>6} {'chance1':>7} {'chance5':>7}"]
    for r in records:
        if r["type"] == "causal_layer":
            rows.append(f"{r['layer']:>5} {r['labels']:>6} {r['top1_rate']:>6.2f} {r['top5_rate']:>6.2f} "
                        f"{r['baseline_top1_rate']:>6.2f} {r['baseline_top5_rate']:>6.2f} "
                        f"{r['chance_top1']:>7.2f} {r['chance_top5']:>7.2f}")
    return "\n".join(rows)
