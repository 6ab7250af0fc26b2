"""moe-report's eval table: each loss change with moe-eval's 95% interval, and random controls of several seeds
as one band per domain."""

from __future__ import annotations

import json

from moetools.report import build_report


def masked(index: int, name: str, criterion: dict) -> dict:
    return {"type": "model", "model": index, "identity": {"name": name, "fingerprint": f"sha256:{name}"},
            "masked": {"mode": "pruned", "base": {"name": "base", "fingerprint": "sha256:base"},
                       "experts": {"file": None, "provenance": {"criterion": criterion}}}}


def domain(model: int, name: str, loss: float, delta, interval=None) -> dict:
    record = {"type": "domain", "model": model, "domain": name, "documents": 4, "tokens": 100, "loss": loss,
              "perplexity": 2.718 ** loss, "delta_loss": delta}
    if interval is not None:
        record["delta_loss_ci95"] = interval
    return record


def test_intervals_beside_each_change_and_a_band_of_the_random_seeds(tmp_path):
    rows = [{"type": "header", "format": "moetools", "version": 1, "kind": "eval", "tool": {"name": "moe-eval"},
             "model": None, "models": ["base", "masked/code", "masked/random-0", "masked/random-1", "masked/random-2"],
             "data": "val.jsonl", "choices": None, "domain_field": "domain", "max_length": 64},
            {"type": "model", "model": 0, "identity": {"name": "base", "fingerprint": "sha256:base"}, "masked": None},
            domain(0, "code", 3.0, None), domain(0, "legal", 2.0, None),
            masked(1, "code", {"by": "das", "domain": "code", "top": 2}),
            domain(1, "code", 3.4, 0.4, [0.31, 0.52]), domain(1, "legal", 2.05, 0.05, [-0.02, 0.11])]
    for seed, (code, legal) in enumerate(((0.1, 0.02), (0.2, -0.01), (0.15, 0.04))):
        rows += [masked(2 + seed, f"random-{seed}", {"random": 2, "seed": seed}),
                 domain(2 + seed, "code", 3.0 + code, code, [code - 0.05, code + 0.05]),
                 domain(2 + seed, "legal", 2.0 + legal, legal)]
    rows.append({"type": "end", "count": len(rows) - 1})
    path = tmp_path / "eval.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "r.html"
    build_report([path], out)
    text = out.read_text()
    assert "3.400 (+0.400 [+0.310, +0.520])" in text and "2.050 (+0.050 [-0.020, +0.110])" in text
    assert "2.040 (+0.040)" in text                      # no interval written: none shown
    assert "random controls: 3 random sets (seeds 0, 1, 2)" in text
    assert "<tr><th>code</th><td>+0.100</td><td>+0.200</td><td>+0.150</td></tr>" in text
    assert "<tr><th>legal</th><td>-0.010</td><td>+0.040</td><td>+0.017</td></tr>" in text
