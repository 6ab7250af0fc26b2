"""Streams never lose work and never pass on altered or incomplete data.

Interrupts between compressing and writing, single-byte flips, a cut-off checksum, Ctrl-C
and .partial files, stale resume state, model identity, long documents.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import zstandard

from moetools import cat
from moetools.cli.cat import command as moe_cat
from moetools.errors import FormatError, MoetoolsError, TruncatedStreamError
from moetools.streams import StreamReader, StreamWriter, read_stream
from moetools.streams import writer as writer_module
from tests.conftest import MODEL, stream_bytes


def float_records(count: int = 24, seed: int = 0) -> list[dict]:
    """Records whose float arrays turn into plausible garbage when a compressed byte flips."""
    rng = np.random.default_rng(seed)
    return [{"type": "sequence", "doc_id": f"d{index}", "window": 0,
             "prob_sum": rng.random(16).astype("<f4"), "tokens": rng.integers(0, 50, 8).astype("<i4")}
            for index in range(count)]


class Trickle(io.BytesIO):
    """Input that arrives a few bytes at a time, as from a pipe: the decoder sees frames in pieces."""

    def read1(self, size=-1):
        return super().read1(37)


def jsonl_lines(records, **kwargs) -> list[bytes]:
    """The JSON lines moe-cat writes for a complete stream of ``records``."""
    out = io.BytesIO()
    cat.copy_streams([("x", io.BytesIO(stream_bytes(records, **kwargs)))], out, encoding="jsonl", compress=False)
    return out.getvalue().splitlines(keepends=True)


class InterruptingCompressor:
    """A zstd compressor whose ``compress`` is interrupted on its ``at``-th call after compressing.

    The data went into the frame (and its checksum) and a block of compressed bytes came out,
    then Ctrl-C lands before the writer writes them: the moment a kill used to lose them.
    """

    def __init__(self, real, at: int):
        self.real, self.at, self.calls = real, at, 0

    def compressobj(self, size=-1):
        outer = self
        inner = self.real.compressobj(size=size)

        class Frame:
            def compress(self, data):
                out = inner.compress(data) + inner.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
                outer.calls += 1
                if outer.calls == outer.at:
                    raise KeyboardInterrupt
                return out

            def flush(self, mode=zstandard.COMPRESSOBJ_FLUSH_FINISH):
                return inner.flush(mode)

        return Frame()


# -- 1. an interrupt between compress and write ---------------------------------------------------

def test_an_interrupt_between_compress_and_write_leaves_a_truncated_stream_not_a_bad_checksum():
    records = float_records(30)
    for at in range(1, 31):
        buffer = io.BytesIO()
        writer = StreamWriter(buffer, "trace", model=MODEL, frame_bytes=300)
        writer.flush()  # the header's frame; the next frames come from the interrupting compressor
        writer._compressor = InterruptingCompressor(writer._compressor, at)
        with pytest.raises(KeyboardInterrupt):
            for record in records:
                writer.write(record)
            writer.close()
        writer.abandon()  # what open_stream_writer does on the way out
        seen = []
        with pytest.raises(TruncatedStreamError):  # never "corrupt zstd frame ... checksum"
            for record in read_stream(io.BytesIO(buffer.getvalue())):
                seen.append(record["doc_id"])
        assert seen == [f"d{index}" for index in range(len(seen))]
        assert len(seen) >= at - 1 - 3  # only the interrupted frame's records are lost (300-byte frames)


# -- 3. a frame's records only after its checksum ---------------------------------------------------

def test_every_single_byte_flip_of_a_stream_lets_no_altered_record_out():
    raw = stream_bytes(float_records(12), frame_bytes=400)
    assert raw.count(b"\x28\xb5\x2f\xfd") >= 4
    good = jsonl_lines(float_records(12), frame_bytes=400)
    altered = complete = 0
    for offset in range(len(raw)):
        damaged = bytearray(raw)
        damaged[offset] ^= 0x5A
        out = io.BytesIO()
        try:
            cat.copy_streams([("x", Trickle(bytes(damaged)))], out, encoding="jsonl", compress=False)
            complete += 1
        except MoetoolsError as error:
            assert error.exit_code in (2, 3)
        lines = out.getvalue().splitlines(keepends=True)
        altered += sum(1 for line, expected in zip(lines, good, strict=False) if line != expected)
        assert len(lines) <= len(good)
    assert altered == 0
    assert complete <= len(raw) // 50  # a flip passes only where it changes no content (window size)


def test_a_frame_larger_than_the_bound_is_refused_without_holding_it(monkeypatch):
    from moetools.streams import reader as reader_module

    monkeypatch.setattr(reader_module, "MAX_FRAME_BYTES", 4096)
    raw = stream_bytes(float_records(200), frame_bytes=1 << 20)  # one frame of ~30 KB
    with pytest.raises(FormatError, match="more than"):
        list(read_stream(io.BytesIO(raw)))


def test_the_writer_starts_a_new_frame_before_a_record_would_pass_the_bound(monkeypatch):
    monkeypatch.setattr(writer_module, "MAX_FRAME_BYTES", 1000)
    raw = stream_bytes(float_records(40), frame_bytes=1 << 20)
    assert raw.count(b"\x28\xb5\x2f\xfd") >= 5
    assert len(list(read_stream(io.BytesIO(raw)))) == 40


# -- 2. no end record before the input's own end is verified ---------------------------------------

@pytest.mark.parametrize("cut", [1, 2, 3, 4])
def test_a_cut_checksum_never_passes_an_end_record_on(run_tool, cut):
    raw = stream_bytes(float_records(6), frame_bytes=300)
    result = run_tool(moe_cat, ["--format", "jsonl"], input=raw[:-cut])
    assert result.exit_code == 3
    assert b'"type":"end"' not in result.stdout_bytes and result.stdout_bytes.count(b"\n") >= 3
    with pytest.raises(TruncatedStreamError):  # what the next tool in the pipe sees
        list(StreamReader(io.BytesIO(result.stdout_bytes)))


def test_bytes_after_a_plain_end_record_withhold_the_end_record(run_tool):
    raw = stream_bytes(float_records(3), compress=False) + b"\xc1"  # 0xc1: never valid msgpack
    result = run_tool(moe_cat, ["--format", "jsonl"], input=raw)
    assert result.exit_code == 2
    assert b'"type":"end"' not in result.stdout_bytes and result.stdout_bytes.count(b"\n") == 4


# -- 5. one rule for .partial on Ctrl-C ------------------------------------------------------------

def test_moe_cat_keeps_its_partial_output_on_ctrl_c(run_tool, tmp_path, monkeypatch):
    source = tmp_path / "in.msgpack.zst"
    source.write_bytes(stream_bytes(float_records(10)))
    target = tmp_path / "out.jsonl"
    real_write = StreamWriter.write

    def interrupted(self, record):
        if self.count == 5:
            raise KeyboardInterrupt
        real_write(self, record)

    monkeypatch.setattr(StreamWriter, "write", interrupted)
    result = CliRunnerNoCatch().invoke(moe_cat, [str(source), "--format", "jsonl", "-o", str(target)])
    assert result.exit_code == 130
    assert not target.exists()
    partial = tmp_path / "out.jsonl.partial"
    assert partial.exists() and partial.read_bytes().count(b"\n") == 6  # header + 5 records, no end
    with pytest.raises(TruncatedStreamError):
        list(StreamReader(io.BytesIO(partial.read_bytes())))


def test_the_man_pages_say_the_rule_for_partial_outputs_and_sigterm():
    from moetools.cli.common import EXIT_STATUS_TEXT

    assert "NAME.partial" in EXIT_STATUS_TEXT and "SIGTERM" in EXIT_STATUS_TEXT and "143" in EXIT_STATUS_TEXT


class CliRunnerNoCatch:
    def invoke(self, command, args):
        from click.testing import CliRunner

        return CliRunner().invoke(command, args)


# -- 8. -v and the traceback hint -----------------------------------------------------------------

def test_the_traceback_hint_is_not_given_with_v(run_tool, monkeypatch, tmp_path):
    source = tmp_path / "in.msgpack.zst"
    source.write_bytes(stream_bytes(float_records(2)))

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(cat, "check_streams", broken)
    quiet = run_tool(moe_cat, ["--check", str(source)])
    assert quiet.exit_code == 1 and "(rerun with -v for a traceback)" in quiet.stderr
    verbose = run_tool(moe_cat, ["-v", "--check", str(source)])
    assert verbose.exit_code == 1 and "Traceback" in verbose.stderr
    assert "rerun with -v" not in verbose.stderr


def test_json_lines_of_good_streams_are_unchanged():
    lines = jsonl_lines(float_records(3))
    assert json.loads(lines[-1]) == {"type": "end", "count": 3}


# -- 1 and 4 through moe-trace: resume after an interrupt, a damaged tail, stale resume state ---------

WORDS = ["the", "a", "of", "to", "and", "in", "is", "it", "that", "for", "code", "law", "math", "cell", "expert"]
TRACE_FLAGS = ("--max-length", "16", "--batch-size", "1")


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    """(model dir, corpus, complete trace path, its canonical records)."""
    from tests.tiny_models import save_tiny_olmoe

    work = tmp_path_factory.mktemp("robust-trace")
    save_tiny_olmoe(work / "model", WORDS)
    rng = np.random.default_rng(1)
    corpus = work / "corpus.jsonl"
    with open(corpus, "w") as handle:
        for number in range(14):
            words = rng.choice(WORDS, size=int(rng.integers(10, 60)))
            handle.write(json.dumps({"id": f"doc{number}", "text": " ".join(words)}) + "\n")
    output = work / "full.msgpack.zst"
    result = trace(work / "model", corpus, "-o", output)
    assert result.exit_code == 0, result.output
    return work / "model", corpus, output, canonical_records(output)


def trace(model, corpus, *args):
    from click.testing import CliRunner

    from moetools.cli.trace import command

    return CliRunner().invoke(command, [str(model), str(corpus), *TRACE_FLAGS, *[str(a) for a in args]])


def canonical_records(path) -> list[str]:
    with open(path, "rb") as handle:
        return [json.dumps({name: (value.dtype.str, value.shape, value.tobytes().hex())
                            if isinstance(value, np.ndarray) else value for name, value in record.items()},
                           sort_keys=True, default=str) for record in StreamReader(handle)]


@pytest.mark.parametrize("at", [3, 17])
def test_moe_trace_interrupted_between_compress_and_write_resumes_bit_identically(traced, tmp_path,
                                                                                  monkeypatch, at):
    model, corpus, _, expected = traced
    assert len(expected) > 20
    real_init = StreamWriter.__init__

    def interrupting_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self.flush()
        self._frame_bytes = 1500  # several complete frames before the interrupt
        self._compressor = InterruptingCompressor(self._compressor, at)

    monkeypatch.setattr(StreamWriter, "__init__", interrupting_init)
    output = tmp_path / "t.msgpack.zst"
    assert trace(model, corpus, "-o", output).exit_code == 130
    monkeypatch.undo()
    partial = tmp_path / "t.msgpack.zst.partial"
    with pytest.raises(TruncatedStreamError):  # truncated at the interrupted frame, not corrupt
        list(read_stream(io.BytesIO(partial.read_bytes())))
    result = trace(model, corpus, "--resume", "-o", output)
    assert result.exit_code == 0, result.output
    assert ("resuming after" in result.output) == (at > 5)  # at 3 the first records' frame was cut
    assert canonical_records(output) == expected
    assert not partial.exists() and not (tmp_path / "t.msgpack.zst.partial.resume").exists()


def test_resume_keeps_every_complete_record_before_a_damaged_tail(traced, tmp_path):
    """A .partial whose last frame fails its checksum (what the old writer left on Ctrl-C)."""
    model, corpus, complete, expected = traced
    data = bytearray(partial_of(complete, 0.5))
    data[-6] ^= 0x10  # inside the last frame: its checksum no longer matches
    with pytest.raises(FormatError, match="corrupt zstd frame"):
        list(read_stream(io.BytesIO(bytes(data))))
    (tmp_path / "t.msgpack.zst.partial").write_bytes(bytes(data))
    output = tmp_path / "t.msgpack.zst"
    result = trace(model, corpus, "--resume", "-o", output)
    assert result.exit_code == 0, result.output
    assert "resuming after" in result.output
    assert canonical_records(output) == expected


def partial_of(path, fraction: float) -> bytes:
    """The first ``fraction`` of the records of a trace as a killed run leaves them (several frames)."""
    with open(path, "rb") as handle:
        reader = StreamReader(handle)
        records = list(reader)
    buffer = io.BytesIO()
    writer = StreamWriter(buffer, "trace", header=reader.header, frame_bytes=1500)
    for record in records[:int(len(records) * fraction)]:
        writer.write(record)
    writer.abandon()
    return buffer.getvalue()


def test_a_finished_output_counts_as_finished_despite_stale_resume_state(traced, tmp_path):
    model, corpus, _, expected = traced
    output = tmp_path / "t.msgpack.zst"
    other = tmp_path / "other.msgpack.zst"  # another --max-length
    assert trace(model, corpus, "--max-length", "8", "-o", other).exit_code == 0
    partial, stale = tmp_path / "t.msgpack.zst.partial", tmp_path / "t.msgpack.zst.partial.resume"
    partial.write_bytes(partial_of(other, 0.5))
    refused = trace(model, corpus, "--resume", "-o", output)  # a resume refused for other options
    assert refused.exit_code == 2 and "max_length" in refused.output
    assert stale.exists()  # the moved-aside partial stays for a resume with the right options
    assert trace(model, corpus, "-o", output).exit_code == 0  # a run that completes clears resume state
    assert not stale.exists() and not partial.exists()
    stale.write_bytes(partial_of(other, 0.5))
    done = trace(model, corpus, "--resume", "-o", output)  # finished: stale state does not matter
    assert done.exit_code == 0 and "complete already" in done.output, done.output
    assert not stale.exists()
    assert canonical_records(output) == expected


# -- 7. model identity: weights sampled, tokenizer by content ----------------------------------------

@pytest.fixture(scope="module")
def identity_dirs(tmp_path_factory):
    import torch
    import transformers

    from tests.tiny_models import save_tiny_olmoe

    work = tmp_path_factory.mktemp("identity")
    save_tiny_olmoe(work / "base", WORDS)
    model = transformers.AutoModelForCausalLM.from_pretrained(work / "base")
    tokenizer = transformers.AutoTokenizer.from_pretrained(work / "base")
    model.save_pretrained(work / "sharded", max_shard_size="20KB")
    tokenizer.save_pretrained(work / "sharded")
    with torch.no_grad():  # "fine-tune" one expert of one layer: same config, other weights
        model.model.layers[1].mlp.experts.gate_up_proj[5].add_(1e-3)
    model.save_pretrained(work / "tuned")
    tokenizer.save_pretrained(work / "tuned")
    return work


def identity_of(directory) -> str:
    import transformers

    from moetools.models.identity import fingerprint

    return fingerprint(transformers.AutoConfig.from_pretrained(directory), directory)


def test_a_fine_tuned_checkpoint_with_the_same_config_is_another_model(identity_dirs):
    base = identity_of(identity_dirs / "base")
    assert base.startswith("v2:sha256:") and len(base) == len("v2:sha256:") + 64
    assert identity_of(identity_dirs / "tuned") != base
    assert identity_of(identity_dirs / "sharded") == base  # sharding is no change of identity


def test_a_re_saved_tokenizer_config_keeps_the_identity_and_new_content_changes_it(identity_dirs, tmp_path):
    import shutil

    base = identity_of(identity_dirs / "base")
    copy = tmp_path / "copy"
    shutil.copytree(identity_dirs / "base", copy)
    config_path = copy / "tokenizer_config.json"
    settings = json.loads(config_path.read_text())
    settings.update({"clean_up_tokenization_spaces": False, "extra_special_tokens": {}})  # what a re-save adds
    config_path.write_text(json.dumps(settings, indent=4))
    assert identity_of(copy) == base
    settings["bos_token"] = "the"  # a special token is content
    config_path.write_text(json.dumps(settings))
    assert identity_of(copy) != base
    config_path.write_text(json.dumps({key: value for key, value in settings.items() if key != "bos_token"}))
    tokenizer = json.loads((copy / "tokenizer.json").read_text())
    tokenizer["model"]["vocab"]["brand-new"] = len(tokenizer["model"]["vocab"])  # so is the vocabulary
    (copy / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert identity_of(copy) != base


def test_old_and_new_fingerprints_of_one_model_do_not_concatenate(run_tool):
    from moetools.errors import ModelMismatchError

    old = stream_bytes(float_records(1), model=dict(MODEL, fingerprint="sha256:" + "a1" * 32))
    new = stream_bytes(float_records(1), model=dict(MODEL, fingerprint="v2:sha256:" + "a1" * 32))
    with pytest.raises(ModelMismatchError, match="identity scheme"):
        list(read_stream(io.BytesIO(old + new)))


def test_monet_train_reads_its_data_before_creating_the_output_directory(tmp_path):
    from click.testing import CliRunner

    from moetools.cli.monet_train import command

    data = tmp_path / "data.jsonl"
    data.write_bytes(b'{"text": "one"}\n{"body": "two"}\n')
    result = CliRunner().invoke(command, ["--data", str(data), "-o", str(tmp_path / "out"), "--steps", "1"])
    assert result.exit_code == 2 and "no string field 'text'" in result.output, result.output
    assert not (tmp_path / "out").exists()


# -- 6. one huge document: tokenised and windowed in pieces ----------------------------------------

def byte_level_bpe(text: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([text], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>")


def awkward_text(words: int = 3000, seed: int = 0) -> str:
    """Words with runs of spaces, tabs, newlines and punctuation between them: where cuts could go wrong."""
    rng = np.random.default_rng(seed)
    gaps = [" ", " ", " ", "  ", "   ", "\n", " \n ", "\t", ", ", ". "]
    return "".join(str(rng.choice(WORDS)) + str(rng.choice(gaps)) for _ in range(words)) + "end"


@pytest.mark.parametrize("family", ["word", "byte-level BPE"])
def test_a_document_tokenised_in_pieces_gives_the_same_ids_and_windows(family, tmp_path):
    import transformers

    from moetools.corpus.documents import Document
    from moetools.corpus.tokenize import token_pieces
    from moetools.trace.corpus import windows_of, windows_of_pieces
    from tests.tiny_models import save_word_tokenizer

    text = awkward_text()
    if family == "word":
        save_word_tokenizer(tmp_path, WORDS)
        tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    else:
        tokenizer = byte_level_bpe(text)
    whole = tokenizer(text, add_special_tokens=True)["input_ids"]
    for piece_chars in (40, 97, 1000):
        pieces = list(token_pieces(text, tokenizer, long_chars=0, piece_chars=piece_chars))
        assert len(pieces) > 5
        assert np.concatenate(pieces).tolist() == whole, piece_chars
        document = Document(0, 1, "d", text)
        assert [(w.window, w.offset, w.token_ids.tolist()) for w in windows_of_pieces(document, pieces, 16)] \
            == [(w.window, w.offset, w.token_ids.tolist()) for w in windows_of(document, whole, 16)]


def test_moe_trace_never_hands_the_tokenizer_a_whole_long_document(traced, tmp_path, monkeypatch):
    """Memory bounded by a piece: the tokenizer sees at most PIECE_CHARS characters at a time."""
    import transformers

    from moetools.corpus.tokenize import LONG_DOCUMENT_CHARS, PIECE_CHARS
    from moetools.trace.corpus import read_documents
    from moetools.trace.runner import TraceOptions, TraceSummary, iter_windows

    model, _, _, _ = traced
    tokenizer = transformers.AutoTokenizer.from_pretrained(model)
    seen = []

    class Watching:
        def __call__(self, text, **kwargs):
            seen.append(len(text))
            return tokenizer(text, **kwargs)

    text = awkward_text(words=int(LONG_DOCUMENT_CHARS / 3))
    assert len(text) > LONG_DOCUMENT_CHARS
    corpus = tmp_path / "long.jsonl"
    corpus.write_text(json.dumps({"id": "long", "text": text}) + "\n" + json.dumps({"text": "a law"}) + "\n")
    with open(corpus, "rb") as source:
        documents = read_documents(source, name="long.jsonl")
        windows = list(iter_windows(documents, Watching(), TraceOptions(max_length=64), TraceSummary()))
    assert max(seen) <= PIECE_CHARS
    ids = np.concatenate([w.token_ids for w in windows if w.doc_id == "long"]).tolist()
    assert ids == tokenizer(text, add_special_tokens=True)["input_ids"]
    assert [w.doc_id for w in windows][-1] == "long.jsonl:2"


def test_monet_train_packs_and_learns_its_tokenizer_from_a_long_document_in_pieces(monkeypatch):
    from moetools.corpus.documents import Document
    from moetools.corpus.tokenize import LONG_DOCUMENT_CHARS, PIECE_CHARS
    from moetools.train import data as data_lib

    text = awkward_text(words=int(LONG_DOCUMENT_CHARS / 3))
    documents = [Document(0, 1, "long", text), Document(1, 2, "short", "a law of code")]
    in_pieces = data_lib.train_tokenizer(documents, 400)
    monkeypatch.setattr(data_lib, "LONG_DOCUMENT_CHARS", 10 ** 9)  # the old way: everything whole
    whole = data_lib.train_tokenizer(documents, 400)
    assert in_pieces.get_vocab() == whole.get_vocab()
    reference = data_lib.pack(documents, whole, 32)
    monkeypatch.undo()
    seen = []

    class Watching:
        eos_token_id = whole.eos_token_id

        def __call__(self, text, **kwargs):
            seen.append(max(len(t) for t in text) if isinstance(text, list) else len(text))
            return whole(text, **kwargs)

    packed = data_lib.pack(documents, Watching(), 32)
    assert max(seen) <= PIECE_CHARS
    assert packed.dtype == reference.dtype and torch_equal(packed, reference) and packed.shape[0] > 100


def torch_equal(a, b) -> bool:
    import torch

    return bool(torch.equal(a, b))
