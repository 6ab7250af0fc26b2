"""What a label rests on: the ``evidence`` map of every label record (formats/labels.md).

From the samples record (formats/samples.md ``stats``) and the contexts shown to the explainer:

- ``firing_tokens``, ``tokens_seen``, ``firing_share`` (= firing / seen): how often the expert fires;
- ``uniform_share``: what a uniform router gives every expert (``top_k / num_experts`` of the
  samples header; null when the header does not say);
- ``contexts``: explain-side contexts in which the expert fires (``stats.positive_contexts.explain``;
  the number shown when the samples do not say); ``shown``: contexts shown to the explainer;
  ``activating_positions``: tokens with activation > 0 in the contexts shown;
- ``flag``: ``"always-on"`` when the expert fires on at least :data:`ALWAYS_ON_SHARE` of all tokens,
  judged only where the uniform share is at most :data:`ALWAYS_ON_MAX_UNIFORM` or unknown (else a
  uniform router is near that share already) — the rule of moe-score's routing health
  (formats/scores.md), so a label's flag and the report's health badge agree; a label of such an
  expert describes the corpus, not a specialisation;
  ``"rare"`` when it fires on fewer than :data:`RARE_FIRING_TOKENS` tokens or in fewer than
  :data:`RARE_CONTEXTS` contexts (a label resting on a handful of tokens); null otherwise.
"""

from __future__ import annotations

import numpy as np

ALWAYS_ON_SHARE = 0.9
ALWAYS_ON_MAX_UNIFORM = 0.5
RARE_FIRING_TOKENS = 20
RARE_CONTEXTS = 5
FLAGS = ("always-on", "rare")


def uniform_share(header: dict | None) -> float | None:
    """``top_k / num_experts`` of a samples header (None when it lacks either)."""
    header = header or {}
    model = header.get("model") if isinstance(header.get("model"), dict) else {}
    top_k = header.get("top_k") or model.get("top_k")
    experts = header.get("num_experts") or model.get("num_experts")
    if isinstance(top_k, int) and isinstance(experts, int) and experts > 0 and 0 < top_k <= experts:
        return round(top_k / experts, 6)
    return None


def activating_positions(contexts: list[dict]) -> int:
    return int(sum(int((np.asarray(c.get("activation") if c.get("activation") is not None else [],
                                   dtype=np.float32) > 0).sum()) for c in contexts))


def flag_of(firing: int | None, share: float | None, contexts: int | None, uniform: float | None) -> str | None:
    """``always-on``, ``rare`` or None (the thresholds of the module docstring)."""
    if share is not None and share >= ALWAYS_ON_SHARE and (uniform is None or uniform <= ALWAYS_ON_MAX_UNIFORM):
        return "always-on"
    if (firing is not None and firing < RARE_FIRING_TOKENS) or (contexts is not None and contexts < RARE_CONTEXTS):
        return "rare"
    return None


def label_evidence(record: dict, shown: list[dict], uniform: float | None) -> dict:
    """The ``evidence`` map of the label of the samples record ``record`` (see the module docstring).

    A method's corpus pass may have replaced the record by a summary; it then carries ``stats`` and
    ``activating_positions`` itself.
    """
    stats = record.get("stats") or {}
    firing, seen = stats.get("firing_tokens"), stats.get("tokens_seen")
    firing = int(firing) if isinstance(firing, (int, float)) else None
    seen = int(seen) if isinstance(seen, (int, float)) else None
    share = round(firing / seen, 6) if firing is not None and seen else None
    positive = (stats.get("positive_contexts") or {}).get("explain")
    contexts = int(positive) if isinstance(positive, (int, float)) else len(shown)
    positions = record["activating_positions"] if "activating_positions" in record else activating_positions(shown)
    return {"firing_tokens": firing, "tokens_seen": seen, "firing_share": share, "uniform_share": uniform,
            "contexts": contexts, "shown": len(shown), "activating_positions": int(positions),
            "flag": flag_of(firing, share, contexts, uniform)}


def evidence_text(evidence: dict | None) -> str | None:
    """One line for people: "rests on 980 of 1000 tokens (98%), 35 contexts, 12 shown; always-on"."""
    if not isinstance(evidence, dict):
        return None
    parts = []
    firing, seen, share = evidence.get("firing_tokens"), evidence.get("tokens_seen"), evidence.get("firing_share")
    if firing is not None:
        parts.append(f"{firing} firing tokens" + (f" of {seen} ({100 * share:.3g}%)" if seen and share is not None
                                                  else ""))
    if evidence.get("contexts") is not None:
        parts.append(f"{evidence['contexts']} contexts, {evidence.get('shown', 0)} shown")
    text = "rests on " + ", ".join(parts) if parts else "no evidence counts"
    return text + (f"; {evidence['flag']}" if evidence.get("flag") else "")


__all__ = ["ALWAYS_ON_MAX_UNIFORM", "ALWAYS_ON_SHARE", "FLAGS", "RARE_CONTEXTS",
           "RARE_FIRING_TOKENS", "activating_positions", "evidence_text", "flag_of", "label_evidence",
           "uniform_share"]
