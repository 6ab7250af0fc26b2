"""moe-eval: per-domain loss and multiple-choice accuracy on tiny real models, checked against a direct
computation; the eval stream's schema on hand-written valid and invalid examples."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.cli.eval import command
from moetools.errors import FormatError
from moetools.streams import StreamReader
from tests.tiny_models import save_tiny_olmoe

WORDS = [f"w{i}" for i in range(40)]
EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples" / "eval"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    save_tiny_olmoe(root / "base", WORDS, seed=0)
    save_tiny_olmoe(root / "other", WORDS, seed=1)
    rng = torch.Generator().manual_seed(0)
    docs = []
    for n in range(9):
        length = int(torch.randint(3, 30, (1,), generator=rng))
        words = [WORDS[int(i)] for i in torch.randint(0, 40, (length,), generator=rng)]
        docs.append({"id": f"d{n}", "text": " ".join(words), "domain": ["code", "legal", "medical"][n % 3]})
    corpus = write_jsonl(root / "corpus.jsonl", docs)
    items = [{"question": "w1 w2 w3", "choices": ["w4", "w5 w6", "w7"], "answer": 1},
             {"question": "w8 w9", "choices": ["w10", "w11"], "answer": 0},
             {"question": "w12", "choices": ["w13 w14 w15", "w16", "w17 w18"], "answer": 2}]
    choices = write_jsonl(root / "items.jsonl", items)
    return root, docs, items, corpus, choices


def direct_domain_loss(path, docs, max_length):
    model = transformers.AutoModelForCausalLM.from_pretrained(path).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    sums = {}
    for doc in docs:
        ids = tokenizer(doc["text"])["input_ids"]
        for start in range(0, len(ids), max_length):
            window = torch.tensor([ids[start:start + max_length]])
            if window.shape[1] < 2:
                continue
            with torch.no_grad():
                loss = model(window, labels=window).loss  # mean over window.shape[1] - 1 tokens
            entry = sums.setdefault(doc["domain"], [0.0, 0])
            entry[0] += float(loss) * (window.shape[1] - 1)
            entry[1] += window.shape[1] - 1
    return {d: (s / n, n) for d, (s, n) in sums.items()}


def run_eval(args):
    result = CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return list(StreamReader(__import__("io").BytesIO(result.stdout_bytes), validate=True))


def test_domain_loss_equals_direct_computation_with_deltas(setup):
    root, docs, _, corpus, _ = setup
    records = run_eval([root / "base", root / "other", "--data", corpus, "--max-length", 8, "--batch-tokens", 40])
    domains = [r for r in records if r["type"] == "domain"]
    assert [r["type"] for r in records].count("model") == 2
    for position, name in enumerate(("base", "other")):
        expected = direct_domain_loss(root / name, docs, 8)
        mine = {r["domain"]: r for r in domains if r["model"] == position}
        assert set(mine) == {"code", "legal", "medical"}
        for domain, (loss, tokens) in expected.items():
            assert mine[domain]["tokens"] == tokens and mine[domain]["documents"] == 3
            assert math.isclose(mine[domain]["loss"], loss, rel_tol=1e-5)
            assert math.isclose(mine[domain]["perplexity"], math.exp(loss), rel_tol=1e-5)
    first = {r["domain"]: r["loss"] for r in domains if r["model"] == 0}
    for r in domains:
        expected = None if r["model"] == 0 else r["loss"] - first[r["domain"]]
        assert r["delta_loss"] == pytest.approx(expected)


def test_choice_accuracy_equals_direct_loglikelihoods(setup):
    root, _, items, _, choices = setup
    records = run_eval([root / "base", "--choices", choices])
    (choice,) = [r for r in records if r["type"] == "choice"]
    model = transformers.AutoModelForCausalLM.from_pretrained(root / "base").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(root / "base")
    hits = hits_norm = 0
    for item in items:
        context = tokenizer(item["question"], add_special_tokens=False)["input_ids"]
        scores = []
        for text in item["choices"]:
            whole = tokenizer(item["question"] + " " + text, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0], -1)
            scores.append(sum(float(logprobs[t - 1, whole[t]]) for t in range(len(context), len(whole))))
        hits += int(max(range(len(scores)), key=scores.__getitem__) == item["answer"])
        normed = [s / len(c) for s, c in zip(scores, item["choices"])]
        hits_norm += int(max(range(len(normed)), key=normed.__getitem__) == item["answer"])
    assert choice["items"] == 3
    assert choice["acc"] == pytest.approx(hits / 3) and choice["acc_norm"] == pytest.approx(hits_norm / 3)


def test_usage_errors_exit_2(setup, tmp_path):
    root, *_ = setup
    runner = CliRunner()
    assert runner.invoke(command, [str(root / "base")]).exit_code == 2  # neither --data nor --choices
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "w1", "choices": ["w2"], "answer": 0}\n')
    result = runner.invoke(command, [str(root / "base"), "--choices", str(bad)])
    assert result.exit_code == 2 and "choices" in result.output


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.jsonl")), ids=lambda p: p.name)
def test_valid_examples_pass(path):
    with open(path, "rb") as handle:
        assert list(StreamReader(handle, validate=True)) is not None


@pytest.mark.parametrize("path", sorted((EXAMPLES / "invalid").glob("*.jsonl")), ids=lambda p: p.name)
def test_invalid_examples_fail(path):
    with open(path, "rb") as handle, pytest.raises(FormatError):
        list(StreamReader(handle, validate=True))


def test_per_document_losses_add_up_to_the_domain_and_bound_a_bootstrap_interval(setup):
    root, docs, _, corpus, _ = setup
    records = run_eval([root / "base", root / "other", "--data", corpus, "--max-length", 8, "--batch-tokens", 40])
    documents = [r for r in records if r["type"] == "document"]
    assert len(documents) == 2 * len(docs)
    for domain_record in (r for r in records if r["type"] == "domain"):
        mine = [d for d in documents if d["model"] == domain_record["model"] and d["domain"] == domain_record["domain"]]
        assert sorted(d["doc"] for d in mine) == sorted(x["id"] for x in docs if x["domain"] == domain_record["domain"])
        assert sum(d["tokens"] for d in mine) == domain_record["tokens"]
        total = sum(d["loss"] * d["tokens"] for d in mine if d["tokens"])
        assert math.isclose(total / domain_record["tokens"], domain_record["loss"], rel_tol=1e-9)
        if domain_record["model"] == 0:
            assert "delta_loss_ci95" not in domain_record
            continue
        low, high = domain_record["delta_loss_ci95"]
        # the point estimate of three documents lies inside its interval, and the interval is not a point
        assert low <= domain_record["delta_loss"] <= high and low < high


def test_the_paired_bootstrap_interval_is_seeded_paired_and_covers_a_constant_shift():
    from moetools.eval.bootstrap import paired_delta_interval

    base = {i: (10 + i, 2.0 * (10 + i) + i) for i in range(20)}
    shifted = {i: (n, s + 0.5 * n) for i, (n, s) in base.items()}      # every document 0.5 nats worse
    assert paired_delta_interval(base, shifted) == pytest.approx([0.5, 0.5])   # paired: no spread at all
    noisy = {i: (n, s + (0.5 + (0.3 if i % 2 else -0.3)) * n) for i, (n, s) in base.items()}
    low, high = paired_delta_interval(base, noisy)
    assert low < 0.5 < high and paired_delta_interval(base, noisy) == [low, high]
    assert paired_delta_interval({0: (5, 1.0)}, {0: (5, 2.0)}) is None           # one document: no interval
