"""Regenerate the trace examples: a real moe-trace run of a tiny random OLMoE (valid/) and
copies of it broken one field at a time (invalid/, expected messages in manifest.json).

    .venv/bin/python formats/examples/trace/make_trace_examples.py

Deterministic: fixed seeds; machine paths in the header are replaced by fixed ones.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

CORPUS = [
    {"id": "law-1", "text": "the court is the law of the law", "domain": "legal", "toxicity": 0.0},
    {"id": "med-1", "text": "the patient was a cell expert", "domain": "medical", "toxicity": 0.1},
]
WORDS = ["the", "a", "of", "is", "was", "court", "law", "patient", "cell", "expert", "theorem", "code"]

INVALID = {  # name -> (what to change, expected message fragment)
    "experts-shape": ("experts", "'experts' has shape"),
    "expert-out-of-range": ("experts-range", "ids >= num_experts"),
    "prob-sum-width": ("prob_sum", "'prob_sum' has shape"),
    "pieces-length": ("pieces", "'pieces' must be a list of"),
    "no-contribution": ("contribution", "'contribution' is missing"),
    "lens-pieces": ("logit_lens_pieces", "'logit_lens_pieces' must name every id"),
}


def build_model(directory: Path) -> None:
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[UNK]": 0, "[PAD]": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                         pad_token="[PAD]").save_pretrained(directory)
    config = transformers.OlmoeConfig(vocab_size=16, hidden_size=16, intermediate_size=16, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=2, num_experts=4,
                                      num_experts_per_tok=2, max_position_embeddings=32, pad_token_id=1,
                                      bos_token_id=None, eos_token_id=None)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)


def rewrite(source: Path, target: Path, change=None) -> None:
    """Copy a JSON-lines trace with fixed paths in the header, optionally breaking the first record."""
    import numpy as np

    from moetools.streams import StreamReader, StreamWriter

    with open(source, "rb") as handle:
        reader = StreamReader(handle, kinds="trace")
        header = dict(reader.header)
        records = list(reader)
        end = reader.ends[0]
    header["model"] = {**header["model"], "path": "/models/olmoe-tiny", "name": "olmoe-tiny"}
    header["tool"] = {**header["tool"], "args": {**header["tool"]["args"], "model": "/models/olmoe-tiny",
                                                 "corpus": "corpus.jsonl", "output": "trace.jsonl"}}
    if change is not None:
        first = dict(records[0])
        if change == "experts":
            first["experts"] = first["experts"][:, :-1]
        elif change == "experts-range":
            first["experts"] = np.where(first["experts"] == first["experts"].max(), 7, first["experts"]).astype("|u1")
        elif change == "prob_sum":
            first["prob_sum"] = first["prob_sum"][:, :-1]
        elif change == "pieces":
            first["pieces"] = first["pieces"][:-1]
        elif change == "contribution":
            del first["contribution"]
        elif change == "logit_lens_pieces":
            first["logit_lens_pieces"] = {}
        records[0] = first
    with open(target, "wb") as out:
        header["type"] = "header"
        writer = StreamWriter(out, "trace", encoding="jsonl", header=header)
        for record in records:
            writer.write(record)
        writer.close(**{k: v for k, v in end.items() if k not in ("type", "count")})


def main() -> None:
    from moetools.cli.trace import command

    (HERE / "valid").mkdir(exist_ok=True)
    (HERE / "invalid").mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        build_model(work / "model")
        (work / "corpus.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in CORPUS))
        raw = work / "trace.jsonl"
        command.main(args=[str(work / "model"), str(work / "corpus.jsonl"), "--format", "jsonl", "--logit-lens",
                           "2", "-q", "-o", str(raw)], standalone_mode=False)
        rewrite(raw, HERE / "valid" / "olmoe-tiny.jsonl")
        for name, (change, _) in INVALID.items():
            rewrite(raw, HERE / "invalid" / f"{name}.jsonl", change)
    manifest = {"valid": ["valid/olmoe-tiny.jsonl"],
                "invalid": {f"invalid/{name}.jsonl": message for name, (_, message) in INVALID.items()}}
    (HERE / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
