"""moe-trace end to end: a tiny OLMoE with its own tokenizer saved to disk, driven through the CLI."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from moetools.cli.trace import command
from moetools.errors import TruncatedStreamError
from moetools.streams import StreamReader
from tests import tiny_models
from tests.tiny_models import save_tiny_olmoe, save_word_tokenizer

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "on", "with", "as", "was", "he", "she", "they", "we", "you", "code", "law", "math", "cell", "expert", "model", "token", "court", "patient", "theorem"]


def save_tokenizer(directory):
    save_word_tokenizer(directory, WORDS)


@pytest.fixture(scope="module")
def olmoe_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("olmoe")
    save_tiny_olmoe(directory, WORDS)
    return directory


def make_corpus(path, documents=12):
    rng = np.random.default_rng(0)
    with open(path, "w") as handle:
        for number in range(documents):
            words = rng.choice(WORDS, size=int(rng.integers(3, 40)))
            handle.write(json.dumps({"id": f"doc{number}", "text": " ".join(words), "domain": ["law", "med"][number % 2],
                                     "toxicity": number / 10}) + "\n")
    return path


def run(*args, input=None):
    result = CliRunner().invoke(command, [str(a) for a in args], input=input)
    return result


def read_all(path):
    with open(path, "rb") as handle:
        reader = StreamReader(handle, kinds="trace")
        records = list(reader)
        return reader.header, records, reader.ends


def key(record):
    return (record["doc_id"], record["window"])


def canonical(record):
    """A record as comparable bytes (arrays by dtype, shape and content)."""
    out = {}
    for name, value in record.items():
        out[name] = (value.dtype.str, value.shape, value.tobytes()) if isinstance(value, np.ndarray) else value
    return json.dumps(out, sort_keys=True, default=lambda b: b.hex() if isinstance(b, bytes) else str(b))


@pytest.fixture(scope="module")
def full_trace(olmoe_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("trace")
    corpus = make_corpus(work / "corpus.jsonl")
    output = work / "full.msgpack.zst"
    result = run(olmoe_dir, corpus, "--max-length", 16, "--batch-size", 1, "-o", output)
    assert result.exit_code == 0, result.output
    return corpus, output, read_all(output)


def test_records_follow_the_trace_format(full_trace, olmoe_dir):
    _, _, (header, records, ends) = full_trace
    assert header["kind"] == "trace" and header["layers"] == [0, 1] and header["top_k"] == 2
    assert header["model"]["fingerprint"].startswith("v2:sha256:") and header["model"]["num_experts"] == 8
    assert ends[0]["count"] == len(records) and ends[0]["documents"] == 12
    tokenizer = transformers.AutoTokenizer.from_pretrained(olmoe_dir)
    with open(full_trace[0]) as handle:
        corpus_docs = {json.loads(line)["id"]: json.loads(line) for line in handle}
    assert {record["doc_id"] for record in records} == set(corpus_docs)
    for record in records:
        doc = corpus_docs[record["doc_id"]]
        assert record["meta"] == {"domain": doc["domain"], "toxicity": doc["toxicity"]}
        ids = tokenizer(doc["text"])["input_ids"]
        assert record["offset"] == 16 * record["window"]
        tokens = record["tokens"]
        assert tokens.tolist() == ids[record["offset"]:record["offset"] + 16]
        assert record["pieces"] == [tokenizer.decode([t]) for t in tokens.tolist()]
        length = len(tokens)
        assert record["experts"].shape == (2, length, 2) and record["experts"].dtype == np.uint8
        assert record["gates"].shape == record["contribution"].shape == (2, length, 2)
        assert record["prob_sum"].shape == (2, 8) and record["prob_sum"].dtype == np.float32
        assert np.allclose(record["prob_sum"].sum(axis=1), length, rtol=1e-5)
        assert (record["contribution"] > 0).all() and (record["experts"] < 8).all()


def test_prob_sum_and_routing_match_the_model_run_directly(full_trace, olmoe_dir):
    _, _, (_, records, _) = full_trace
    model = transformers.AutoModelForCausalLM.from_pretrained(olmoe_dir).eval()
    record = max(records, key=lambda r: len(r["tokens"]))
    routing = []
    for layer in model.model.layers:
        layer.mlp.gate.register_forward_hook(lambda m, a, o: routing.append(o))
    with torch.no_grad():
        model(torch.tensor(record["tokens"].astype(np.int64))[None])
    for layer, (router_logits, gates, ids) in enumerate(routing):
        expected = torch.softmax(router_logits.double(), dim=-1).sum(0).numpy()
        assert np.allclose(record["prob_sum"][layer], expected, atol=1e-5)
        assert np.array_equal(record["experts"][layer], ids.numpy())
        assert np.allclose(record["gates"][layer], gates.numpy(), atol=1e-3)  # stored as float16


def test_shards_concatenated_equal_the_unsharded_trace(full_trace, olmoe_dir, tmp_path):
    corpus, _, (_, records, _) = full_trace
    joined = io.BytesIO()
    for shard in range(3):
        output = tmp_path / f"shard{shard}.msgpack.zst"
        result = run(olmoe_dir, corpus, "--max-length", 16, "--batch-size", 1, "--shard", f"{shard}/3",
                     "--shard-by", "hash", "-o", output)
        assert result.exit_code == 0, result.output
        joined.write(output.read_bytes())
    joined.seek(0)
    sharded = list(StreamReader(joined, kinds="trace"))
    assert len(sharded) == len(records)
    assert sorted(map(canonical, sharded)) == sorted(map(canonical, records))


@pytest.mark.parametrize("fraction,uncompressed", [(0.55, True), (0.8, False), (0.0, True)])
def test_resume_after_a_kill_gives_the_same_records(full_trace, olmoe_dir, tmp_path, fraction, uncompressed):
    corpus = full_trace[0]
    flags = ["--max-length", 16, "--batch-size", 1] + (["--uncompressed"] if uncompressed else [])
    complete = tmp_path / "complete.msgpack"
    assert run(olmoe_dir, corpus, *flags, "-o", complete).exit_code == 0
    _, expected, _ = read_all(complete)
    output = tmp_path / "resumed.msgpack"
    data = complete.read_bytes()
    (tmp_path / "resumed.msgpack.partial").write_bytes(data[:int(len(data) * fraction)])  # the kill
    if fraction:
        with pytest.raises(TruncatedStreamError):
            read_all(tmp_path / "resumed.msgpack.partial")
    result = run(olmoe_dir, corpus, *flags, "--resume", "-o", output)
    assert result.exit_code == 0, result.output
    _, resumed, ends = read_all(output)
    assert [canonical(r) for r in resumed] == [canonical(r) for r in expected]
    assert len({key(r) for r in resumed}) == len(resumed) == ends[0]["count"]
    assert not (tmp_path / "resumed.msgpack.partial").exists()
    assert not (tmp_path / "resumed.msgpack.partial.resume").exists()


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7])
def test_resume_inside_a_batch_gives_the_same_records(full_trace, olmoe_dir, tmp_path, fraction):
    """Killed in the middle of a batch: the resumed run reruns that whole batch (same shapes, same rounding)."""
    corpus = full_trace[0]
    flags = ["--max-length", 16, "--batch-tokens", 64, "--uncompressed"]  # batches of up to 4 windows
    complete = tmp_path / "complete.msgpack"
    assert run(olmoe_dir, corpus, *flags, "-o", complete).exit_code == 0
    _, expected, _ = read_all(complete)
    output = tmp_path / "resumed.msgpack"
    data = complete.read_bytes()
    (tmp_path / "resumed.msgpack.partial").write_bytes(data[:int(len(data) * fraction)])
    result = run(olmoe_dir, corpus, *flags, "--resume", "-o", output)
    assert result.exit_code == 0, result.output
    _, resumed, _ = read_all(output)
    assert [canonical(r) for r in resumed] == [canonical(r) for r in expected]


def test_resume_refuses_other_options(full_trace, olmoe_dir, tmp_path):
    corpus = full_trace[0]
    complete = tmp_path / "complete.msgpack"
    assert run(olmoe_dir, corpus, "--max-length", 16, "--batch-size", 1, "--uncompressed", "-o", complete).exit_code == 0
    data = complete.read_bytes()
    target = tmp_path / "t.msgpack"
    (tmp_path / "t.msgpack.partial").write_bytes(data[:len(data) // 2])
    result = run(olmoe_dir, corpus, "--max-length", 8, "--batch-size", 1, "--resume", "-o", target)
    assert result.exit_code == 2 and "max_length" in result.output


def test_bad_lines_are_skipped_and_named(olmoe_dir, tmp_path):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_bytes(b'{"text": "the law"}\n{"txt": "no text"}\nnot json\n{"text": "caf\xe9 bad utf8"}\n'
                       b'{"text": "' + b" ".join([b"code"] * 100) + b'"}\n')
    output = tmp_path / "t.jsonl"
    result = run(olmoe_dir, corpus, "--max-length", 32, "--format", "jsonl", "-o", output)
    assert result.exit_code == 0, result.output
    # one warning counts them (the corpus rule of every tool); the end record names each
    assert result.output.count("warning") == 1
    assert "bad.jsonl: skipped 3 unusable line(s), the first at line 2: no string field 'text'" in result.output
    _, records, ends = read_all(output)
    assert ends[0]["skipped_lines"] == 3 and [s["line"] for s in ends[0]["skipped"]] == [2, 3, 4]
    assert [s["reason"].split(" (")[0] for s in ends[0]["skipped"]] == [
        "no string field 'text'", "not valid JSON", "invalid UTF-8 at byte 13"]
    # the long document (100 tokens, context 64) is cut into windows of 32
    long = sorted((r for r in records if r["doc_id"] == "bad.jsonl:5"), key=lambda r: r["window"])
    assert [(r["window"], r["offset"], len(r["tokens"])) for r in long] == [(0, 0, 32), (1, 32, 32), (2, 64, 32),
                                                                            (3, 96, 4)]


def test_plain_text_corpus_from_stdin_and_logit_lens(olmoe_dir, tmp_path):
    output = tmp_path / "t.msgpack.zst"
    result = run(olmoe_dir, "-", "--logit-lens", 2, "-o", output, input="the code of law\nshe was a cell expert\n")
    assert result.exit_code == 0, result.output
    _, records, _ = read_all(output)
    assert sorted(r["doc_id"] for r in records) == ["-:1", "-:2"]
    for record in records:
        assert record["logit_lens"].shape == (2, len(record["tokens"]), 2, 2)
        assert set(record["logit_lens_pieces"]) == {str(t) for t in np.unique(record["logit_lens"])}


@pytest.mark.parametrize("problem", ["not-moe", "missing", "no-config", "empty", "all-lines-bad", "no-corpus",
                                     "too-long"])
def test_bad_models_and_inputs_exit_2_or_3_with_a_message(olmoe_dir, tmp_path, problem):
    corpus = make_corpus(tmp_path / "c.jsonl", documents=2)
    model = olmoe_dir
    args, code = [], 2
    if problem == "not-moe":
        model = tmp_path / "llama"
        config = transformers.LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                          num_attention_heads=4, num_key_value_heads=2)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(model)
        save_tokenizer(model)
        message = "not a supported MoE model: found LlamaForCausalLM (model_type 'llama')"
    elif problem == "missing":
        model, message = tmp_path / "nowhere", "does not exist"
    elif problem == "no-config":
        model = tmp_path / "weights-only"
        model.mkdir()
        (model / "model.safetensors").write_bytes(b"")
        message = "is not a transformers model directory (no config.json)"
    elif problem == "all-lines-bad":
        corpus.write_bytes(b'{"body": "no text field"}\n{"text": "caf\xe9"}\n')
        message = "no usable documents in the corpus (2 lines skipped, the first at line 1: no string field"
    elif problem == "no-corpus":
        corpus, message = tmp_path / "absent.jsonl", "does not exist"
    elif problem == "empty":  # nothing to read: empty input, exit 3 (as an empty stream)
        corpus.write_text("\n\n")
        message, code = "c.jsonl: empty input: no documents", 3
    else:
        args, message = ["--max-length", 65], "exceeds the model's context of 64 tokens"
    output = tmp_path / "out.msgpack.zst"
    result = run(model, corpus, *args, "-o", output)
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not output.exists()


def test_resume_of_a_finished_output_does_nothing(full_trace, olmoe_dir, tmp_path):
    corpus, output, _ = full_trace
    target = tmp_path / "done.msgpack.zst"
    target.write_bytes(output.read_bytes())
    before = target.stat().st_mtime_ns
    result = run(olmoe_dir, corpus, "--max-length", 16, "--batch-size", 1, "--resume", "-o", target)
    assert result.exit_code == 0 and "complete already" in result.output
    assert target.stat().st_mtime_ns == before


def save_tiny_monet(directory, *, layers: int, moe_experts: int):
    """A random tiny MONET whose layers all share one router (moe_groups = layers), with a tokenizer."""
    return tiny_models.save_tiny_monet(directory, WORDS, layers=layers, moe_experts=moe_experts)


def test_monet_model_traces_composed_experts(tmp_path):
    directory = save_tiny_monet(tmp_path / "monet", layers=2, moe_experts=4)
    output = tmp_path / "monet.msgpack.zst"
    result = run(directory, "-", "--logit-lens", 1, "-o", output, input="the law of the cell\nshe was a model\n")
    assert result.exit_code == 0, result.output
    header, records, _ = read_all(output)
    assert header["model"]["model_type"] == "monet" and header["num_experts"] == 16 and header["top_k"] == 2
    assert header["experts_implementation"] is None
    for record in records:
        length = len(record["tokens"])
        assert record["experts"].shape == (2, length, 2) and record["prob_sum"].shape == (2, 16)
        live = record["gates"] > 0
        assert (record["experts"][live] < 16).all() and (record["experts"][~live] == 255).all()
        assert np.allclose(record["prob_sum"].sum(axis=1), 2 * length, rtol=1e-3)  # H = 2 heads
        assert record["logit_lens"].shape == (2, length, 2, 1)


def test_256_composed_experts_keep_the_padding_id_out_of_the_expert_ids(tmp_path):
    """16² = 256 experts: ids in <u2 (padding 65535); in |u1 expert 255 would read as padding."""
    from moetools.cli.sample import command as moe_sample
    from moetools.trace.records import id_dtype

    assert [id_dtype(n).str for n in (4, 255, 256, 65535, 65536)] == ["|u1", "|u1", "<u2", "<u2", "<u4"]
    directory = save_tiny_monet(tmp_path / "monet", layers=1, moe_experts=16)
    output = tmp_path / "monet.msgpack.zst"
    text = "\n".join(["the law of the cell", "she was a model", "a cell of the law was she"] * 30) + "\n"
    result = run(directory, "-", "-o", output, input=text)
    assert result.exit_code == 0, result.output
    header, records, _ = read_all(output)
    assert header["num_experts"] == 256
    ids = np.concatenate([record["experts"].reshape(-1) for record in records])
    gates = np.concatenate([record["gates"].reshape(-1) for record in records])
    assert ids.dtype == np.uint16 and (ids[gates > 0] < 256).all() and (ids[gates == 0] == 65535).all()
    sampled = CliRunner().invoke(moe_sample, ["-q", "--min-count", "1", str(output), "-o", str(tmp_path / "s.jsonl"),
                                              "--format", "jsonl"])
    assert sampled.exit_code == 0, sampled.output


EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples" / "trace"


def test_trace_examples_and_real_records_validate(full_trace):
    from moetools.errors import FormatError
    from moetools.trace.validate import check_sequence

    _, _, (header, records, _) = full_trace
    for number, record in enumerate(records):
        check_sequence(record, header, number)
    manifest = json.loads((EXAMPLES / "manifest.json").read_text())
    for name in manifest["valid"]:
        header, records, _ = read_all(EXAMPLES / name)
        assert records
        for record in records:
            check_sequence(record, header)
    for name, message in manifest["invalid"].items():
        header, records, _ = read_all(EXAMPLES / name)
        with pytest.raises(FormatError, match=re.escape(message)):
            for record in records:
                check_sequence(record, header)


@pytest.mark.parametrize(("dtype", "batch", "padded"), [("bfloat16", [], True), ("bfloat16", ["--batch-size", 1], False),
                                                        ("float32", [], False)])
def test_header_records_padded_batches_in_reduced_precision(olmoe_dir, tmp_path, dtype, batch, padded):
    corpus = make_corpus(tmp_path / "c.jsonl", documents=3)
    output = tmp_path / "out.msgpack.zst"
    result = run(olmoe_dir, corpus, "--max-length", 16, "--dtype", dtype, *batch, "-o", output)
    assert result.exit_code == 0, result.output
    header, records, _ = read_all(output)
    assert header["reduced_precision_padding"] is padded and len(records) >= 3
