"""Samples and labels streams for the judge tests and bench: code vs legal contexts, real files.

Layer 0 and 1, experts 0..E-1: even experts fire on code, odd ones on legal text. Each holdout
has ``n`` positives of the expert's domain and ``n`` negatives of the other (meta.domain set);
the explain sets hold other contexts of the same kinds. Labels name the domain's keyword.
"""

from __future__ import annotations

import re

from moetools.streams.files import open_stream_writer

MODEL = {"name": "judge-fixture", "model_type": "olmoe", "num_layers": 2, "num_experts": 4, "top_k": 1,
         "fingerprint": "sha256:judge-fixture"}
CODE = ["def parse(path):\n    return open(path).read()", "import os\nfor name in os.listdir('.'): print(name)",
        "class Stack:\n    def push(self, item): self.items.append(item)", "while True:\n    line = f.readline()",
        "x = [i * i for i in range(10)]", "try:\n    value = int(text)\nexcept ValueError: pass",
        "def main():\n    args = parser.parse_args()", "with open('a.txt') as handle: data = handle.read()"]
LEGAL = ["The licensee shall indemnify the licensor against all claims.",
         "This agreement is governed by the laws of the State of New York.",
         "THE SOFTWARE IS PROVIDED AS IS, WITHOUT WARRANTY OF ANY KIND.",
         "The court held that the contract was void for lack of consideration.",
         "Permission is hereby granted, free of charge, to any person obtaining a copy.",
         "Redistribution in binary form must reproduce the above copyright notice.",
         "The tenant shall pay rent on the first day of each month.",
         "Any dispute arising under this license shall be settled by arbitration."]
KEYWORD = {"code": "python", "legal": "legal"}
LABEL = {"code": "This expert specializes in python source code", "legal": "This expert specializes in legal terms"}


def _context(domain: str, index: int, side: str, positive: bool, expert: int) -> dict:
    texts = CODE if domain == "code" else LEGAL
    text = texts[index % len(texts)]
    pieces = re.findall(r"\s*\S+", text)
    doc = f"{domain}-{side}-{index}"
    return {"id": f"{doc}@0+0", "doc_id": doc, "window": 0, "offset": 0, "mark": 0, "pieces": pieces,
            "activation": [1.0 if positive else 0.0] + [0.0] * (len(pieces) - 1),
            "score": 1.0 if positive else 0.0, "meta": {"domain": domain}, "region": 0 if side == "explain" else 1}


def write_samples(path, *, experts: int = 4, layers=(0, 1), n: int = 10, holdout: bool = True,
                  overlap: bool = False) -> None:
    import numpy as np

    def arr(context):
        context["activation"] = np.asarray(context["activation"], dtype=np.float32)
        return context

    header = {"samples_version": 2, "layers": list(layers), "num_experts": experts, "top_k": 1,
              "activation": "contribution", "context": 32, "seed": 0,
              "split": {"holdout_fraction": 0.2 if holdout else 0.0, "region": 256}}
    with open_stream_writer(str(path), "samples", "jsonl", tool={"name": "judge_fixture"},
                            model={**MODEL, "num_experts": experts},
                            header_extra=header) as writer:
        for layer in layers:
            for expert in range(experts):
                mine, other = ("code", "legal") if expert % 2 == 0 else ("legal", "code")
                record = {"type": "expert", "layer": layer, "expert": expert, "status": "ok",
                          "explain": {"top": [arr(_context(mine, i, "explain", True, expert)) for i in range(4)],
                                      "weighted": [],
                                      "negative": [arr(_context(other, i, "explain", False, expert))
                                                   for i in range(4)]}}
                if holdout:
                    record["holdout"] = {
                        "positive": [arr(_context(mine, i + 4, "holdout", True, expert)) for i in range(n)],
                        "negative": [arr(_context(other, i + 4, "holdout", False, expert)) for i in range(n)]}
                    if overlap:
                        record["holdout"]["positive"][0] = record["explain"]["top"][0]
                writer.write(record)


def write_labels(path, *, experts: int = 4, layers=(0, 1), domain: str | None = None, model=MODEL,
                 failed=()) -> None:
    prompt = {"kind": "domain", "domain": domain} if domain else {"kind": "mono", "domain": None}
    with open_stream_writer(str(path), "labels", "jsonl", tool={"name": "judge_fixture"},
                            model={**model, "num_experts": experts},
                            header_extra={"explain": {"explainer": {"backend": "offline", "model": None,
                                                                    "method": "fixture"}, "prompt": prompt}}) as w:
        for layer in layers:
            for expert in range(experts):
                mine = "code" if expert % 2 == 0 else "legal"
                ok = (layer, expert) not in failed
                w.write({"type": "label", "layer": layer, "expert": expert,
                         "explanation": LABEL[mine] if ok else None, "status": "ok" if ok else "failed",
                         "prompt": prompt, "explainer": {"backend": "offline", "model": None, "method": "fixture"},
                         "examples": [f"{mine}-explain-0@0+0"], **({} if ok else {"error": "x", "raw": None})})


def keyword_answer(body: dict) -> str:
    """A scorer that reads: the example numbers whose text matches the explanation's last word."""
    user = body["messages"][-1]["content"]
    is_code = "python" in re.search(r"Here is the explanation: (.*)", user).group(1)
    chosen = []
    for number, text in re.findall(r"^Example (\d+): (.*)$", user, flags=re.MULTILINE):
        looks_code = any(token in text for token in ("def ", "import", "(", "=", "class"))
        looks_code = looks_code and not text[:1].isupper()
        if looks_code == is_code:
            chosen.append(number)
    return ", ".join(chosen) if chosen else "None"


__all__ = ["CODE", "LABEL", "LEGAL", "MODEL", "keyword_answer", "write_labels", "write_samples"]
