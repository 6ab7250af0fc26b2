"""moe-eval --loss-definition lm-eval equals lm-evaluation-harness's own loglikelihood_rolling (its `hf` model on a
local task over the same JSON-lines documents, offline): per-document log-likelihood, word and byte perplexity and
bits per byte, long documents in its rolling windows; the default no-prefix definition as documented."""

from __future__ import annotations

import io
import json
import math

import pytest
from click.testing import CliRunner

from moetools.cli.eval import command as eval_command
from moetools.streams import StreamReader
from tests.tiny_bpe import save_tiny_bpe_olmoe
from tests.tiny_models import save_tiny_olmoe

TRAINING = ["the court held that the law of the land applies", "def main(): return the value of x",
            "patients with the disease were given a dose"] * 20
DOCUMENTS = [
    "the court held that",
    "Møller said the dose was 5 µg, not 50",
    "  leading and trailing white space \n",
    "def main(): return x",
    # longer than --max-length tokens several times over: lm-eval's rolling windows, the last one partial
    " ".join(["the law of the land applies to the patients with the disease"] * 6),
    "日本語 text: 東京",
]
MAX_LENGTH = 16
TASK = """\
task: moetools_local_rolling
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("rolling")
    save_tiny_bpe_olmoe(root / "model", TRAINING)
    docs = root / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": f"d{n}", "name": f"d{n}", "text": text, "set": "all"}) + "\n"
                            for n, text in enumerate(DOCUMENTS)))
    return root, docs


def run_eval(args) -> list[dict]:
    """The header, then the records."""
    result = CliRunner().invoke(eval_command, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    reader = StreamReader(io.BytesIO(result.stdout_bytes), validate=True)
    records = list(reader)
    return [reader.header, *records]


def domains(records) -> dict:
    return {r["domain"]: r for r in records if r["type"] == "domain"}


def test_rolling_windows_are_lm_evals(setup):
    """Every (length, context) pair: the same windows as lm_eval.utils builds for HFLM.loglikelihood_rolling."""
    lm_utils = pytest.importorskip("lm_eval.utils")
    from moetools.eval.rolling import rolling_windows

    for length in range(40):
        ids = list(range(100, 100 + length))
        for max_length in (1, 2, 3, 7, 16, 39, 40, 64):
            theirs = [lm_utils.make_disjoint_window(pair) for pair in lm_utils.get_rolling_token_windows(
                token_list=ids, prefix_token=7, max_seq_len=max_length, context_len=1)]
            mine = rolling_windows(ids, 7, max_length)
            # lm-eval's model reads (context + continuation)[-(max_length + 1):][:-1], scores len(continuation)
            assert [(list(c + t)[-(max_length + 1):], len(t)) for c, t in theirs] == mine, (length, max_length)
            assert sum(count for _, count in mine) == length


@pytest.mark.slow
def test_lm_eval_definition_equals_lm_evals_loglikelihood_rolling(setup, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    root, docs = setup
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "rolling.yaml").write_text(TASK.format(docs=docs))
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    output = simple_evaluate(model="hf", model_args=f"pretrained={root / 'model'},dtype=float32,max_length={MAX_LENGTH}",
                             tasks=["moetools_local_rolling"], task_manager=TaskManager(include_path=str(tmp_path / "tasks")),
                             num_fewshot=0, batch_size=1, device="cpu", log_samples=True)
    theirs = output["results"]["moetools_local_rolling"]
    per_document = {sample["doc"]["id"]: float(sample["filtered_resps"][0]) for sample in output["samples"]["moetools_local_rolling"]}
    assert len(per_document) == len(DOCUMENTS)

    common = [root / "model", "--data", docs, "--loss-definition", "lm-eval", "--max-length", MAX_LENGTH,
              "--batch-tokens", 40]
    records = run_eval([*common, "--domain-field", "name"])
    assert records[0]["loss_definition"] == "lm-eval"
    mine = domains(records)
    for name, loglikelihood in per_document.items():
        record = mine[name]
        assert record["loglikelihood"] == pytest.approx(loglikelihood, rel=1e-5, abs=1e-5), name
        text = DOCUMENTS[int(name[1:])]
        assert record["bytes"] == len(text.encode("utf-8"))
        assert record["word_perplexity"] == pytest.approx(math.exp(-loglikelihood / record["words"]), rel=1e-5)
    assert mine["d4"]["tokens"] > 3 * MAX_LENGTH  # the long document took several windows

    (everything,) = domains(run_eval([*common, "--domain-field", "set"])).values()
    assert everything["loglikelihood"] == pytest.approx(sum(per_document.values()), rel=1e-5)
    assert everything["word_perplexity"] == pytest.approx(theirs["word_perplexity,none"], rel=1e-5)
    assert everything["byte_perplexity"] == pytest.approx(theirs["byte_perplexity,none"], rel=1e-5)
    assert everything["bits_per_byte"] == pytest.approx(theirs["bits_per_byte,none"], rel=1e-5)


def test_default_definition_scores_tokens_two_to_n_without_a_prefix(setup):
    """no-prefix (the default): each window's first token is context only, no word or byte fields; lm-eval's
    definition scores every token."""
    root, docs = setup
    plain = run_eval([root / "model", "--data", docs, "--domain-field", "name", "--max-length", 64])
    assert plain[0]["loss_definition"] == "no-prefix"
    rolling = domains(run_eval([root / "model", "--data", docs, "--domain-field", "name", "--max-length", 64,
                                "--loss-definition", "lm-eval"]))
    for name, record in domains(plain).items():
        assert "word_perplexity" not in record and "loglikelihood" not in record
        every = rolling[name]["tokens"]
        assert record["tokens"] == every - math.ceil(every / 64)
        assert record["loss"] != pytest.approx(rolling[name]["loss"])


def test_lm_eval_definition_needs_an_end_of_text_token(tmp_path):
    save_tiny_olmoe(tmp_path / "model", ["w1", "w2"])  # a word-level tokenizer with neither BOS nor EOS
    (tmp_path / "docs.jsonl").write_text(json.dumps({"text": "w1 w2 w1"}) + "\n")
    result = CliRunner().invoke(eval_command, [str(tmp_path / "model"), "--data", str(tmp_path / "docs.jsonl"),
                                               "--loss-definition", "lm-eval"])
    assert result.exit_code == 2, result.output
    assert "neither a BOS nor an EOS" in result.output
