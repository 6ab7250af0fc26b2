"""No wrong number at exit 0: NaN and ±inf are refused wherever a number is read, and never written.

One finite rule in the stream schemas (a stream field or float array holding NaN/±inf: exit 2 naming
the record and the field), one click type for every float option, strict JSON for everything the tools
write, and training that stops at the first non-finite loss or gradient (exit 1, no finished result).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click
import pytest

from moetools.cli import TOOLS, load_command
from moetools.errors import FormatError
from moetools.streams import StreamReader
from tests.cli_checks import invoke, one_line
from tests.tiny_models import save_tiny_olmoe


def strict_loads(text: str):
    """A strict JSON parser: the tokens NaN, Infinity and -Infinity raise."""
    def refuse(token: str):
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)

EXAMPLES = Path(__file__).resolve().parents[2] / "formats" / "examples"
WORDS = ["the", "a", "of", "court", "law", "judge", "patient", "dose", "fever", "code", "loop", "def"]




# -- options ------------------------------------------------------------------------------------------

def _options(command, path=()):
    """(command path, option) of every option of ``command`` and its subcommands."""
    for param in command.params:
        if isinstance(param, click.Option):
            yield " ".join(path), param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _options(sub, (*path, name))


def test_every_float_option_of_every_tool_is_finite():
    from moetools.cli.common import FiniteFloat

    floats = [(tool, where, option.opts[-1]) for tool in sorted(TOOLS)
              for where, option in _options(load_command(tool), (tool,))
              if isinstance(option.type, click.types.FloatParamType)]
    assert len(floats) >= 20  # --threshold, --min-ratio, --cumulative, --lr, --temperature, ...
    loose = [f"{where} {flag}" for tool, where, flag in floats
             if not isinstance(load_option(tool, where, flag).type, FiniteFloat)]
    assert loose == []


def load_option(tool, where, flag):
    command = load_command(tool)
    for name in where.split()[1:]:
        command = command.commands[name]
    return next(p for p in command.params if isinstance(p, click.Option) and flag in p.opts)


@pytest.mark.parametrize("tool,args,flag", [
    ("moe-select", ["--by", "das", "--threshold", "{value}", "{scores}"], "--threshold"),
    ("moe-select", ["--by", "esft_token", "--cumulative", "{value}", "{scores}"], "--cumulative"),
    ("moe-select", ["--min-ratio", "{value}", "{scores}"], "--min-ratio"),
    ("moe-select", ["--by", "skew", "--max-q", "{value}", "{scores}"], "--max-q"),
    ("moe-score", ["--min-ratio", "{value}", "{scores}"], "--min-ratio"),
])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_numeric_options_refuse_nan_and_inf(tool, args, flag, value):
    scores = EXAMPLES / "scores" / "valid" / "spec-example.jsonl"
    result = invoke(tool, [a.format(value=value, scores=scores) for a in args])
    one_line(result, tool, 2, flag, "not a finite number")
    assert result.stdout == ""


# -- streams: the finite rule in the schemas -------------------------------------------------------

def _spec_scores_with(tmp_path, old: str, new: str) -> Path:
    text = (EXAMPLES / "scores" / "valid" / "spec-example.jsonl").read_text()
    assert old in text
    path = tmp_path / "scores.jsonl"
    path.write_text(text.replace(old, new, 1))
    return path


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_moe_select_refuses_a_non_finite_score_naming_record_and_field(tmp_path, token):
    scores = _spec_scores_with(tmp_path, '"code":{"af":0.75,"das":0.3', f'"code":{{"af":0.75,"das":{token}')
    result = invoke("moe-select", ["--by", "das", "--domain", "code", "--top", "2", scores])
    shown = {"NaN": "nan", "Infinity": "inf", "-Infinity": "-inf"}[token]
    one_line(result, "moe-select", 2, "scores record 1 (layer 0, expert 0)", f"domains.code.das is {shown}",
             "not a finite number")
    assert result.stdout == ""  # not {"0": [], "1": []}


def test_moe_cat_check_and_the_reader_refuse_a_non_finite_skew_ratio(tmp_path):
    scores = _spec_scores_with(tmp_path, '"ratio":2.5', '"ratio":Infinity')
    with open(scores, "rb") as source, pytest.raises(FormatError, match="skew.ratio is inf"):
        list(StreamReader(source, validate=True))
    one_line(invoke("moe-cat", ["--check", scores]), "moe-cat", 2, "skew.ratio is inf")


@pytest.mark.parametrize("name,field", [("gates-nan.jsonl", "'gates'"), ("prob-sum-inf.jsonl", "'prob_sum'")])
def test_moe_score_refuses_a_trace_with_non_finite_arrays(tmp_path, name, field):
    trace = EXAMPLES / "trace" / "hand-written" / "invalid" / name
    out = tmp_path / "scores.jsonl"
    result = invoke("moe-score", [trace, "-o", out])
    one_line(result, "moe-score", 2, "sequence record 1 (doc 'd1')", f"{field} holds 1 non-finite value(s)")
    assert not out.exists()


def test_moe_score_refuses_a_trace_whose_experts_is_not_an_array(tmp_path):
    """A trace record with ``experts: "oops"``: exit 2 naming the field, not 1 (internal error)."""
    lines = (EXAMPLES / "trace" / "hand-written" / "valid" / "full.jsonl").read_text().splitlines(keepends=True)
    record = json.loads(lines[1])
    record["experts"] = "oops"
    trace = tmp_path / "oops.jsonl"
    trace.write_text(lines[0] + json.dumps(record) + "\n" + lines[2])
    one_line(invoke("moe-score", [trace]), "moe-score", 2, "sequence record 1", "'experts' is missing or not an array")


def test_the_experts_file_refuses_a_non_finite_score():
    from moetools.select import read_experts

    with pytest.raises(FormatError, match="is nan, not a finite number"):
        read_experts(EXAMPLES / "experts" / "invalid" / "score-nan.json")


def test_float_arrays_are_checked_as_whole_arrays():
    """One np.isfinite pass per array (its cost is measured in bench/bench_validation.py, not here)."""
    import numpy as np

    from moetools.streams.schema import check_finite_array

    gates = np.random.default_rng(0).random((16, 4096, 8)).astype("<f2")
    check_finite_array(gates, "sequence record 1", "gates")  # 524 288 finite values: accepted
    gates = gates.copy()
    gates[3, 7, 1] = np.nan
    with pytest.raises(FormatError, match=r"'gates' holds 1 non-finite value\(s\).*nan at index \[3, 7, 1\]"):
        check_finite_array(gates, "sequence record 1", "gates")


# -- writers: strict JSON ------------------------------------------------------------------------------

def test_strict_json_refuses_nan_and_names_where():
    from moetools.streams.strict_json import NonFiniteJSONError, dumps

    with pytest.raises(NonFiniteJSONError, match=r"\$\.steps\[1\]\.loss = nan"):
        dumps({"steps": [{"loss": 1.0}, {"loss": math.nan}]})
    with pytest.raises(ValueError, match="NaN"):
        strict_loads('{"loss": NaN}')
    assert strict_loads(dumps({"loss": 1.5})) == {"loss": 1.5}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("nonfinite")
    save_tiny_olmoe(root / "olmoe", WORDS)
    domains = {"legal": WORDS[3:6], "medical": WORDS[6:9], "code": WORDS[9:]}
    lines = [json.dumps({"id": f"{d}{i}", "domain": d, "text": " ".join((words * 4)[i:i + 9])})
             for d, words in domains.items() for i in range(4)]
    (root / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _strict_json_files(root: Path) -> list[Path]:
    """Every .json and .jsonl file under ``root``, parsed with a strict parser (NaN/Infinity raise)."""
    parsed = []
    for path in sorted(root.rglob("*")):
        if path.suffix == ".json":
            strict_loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    strict_loads(line)
        else:
            continue
        parsed.append(path)
    return parsed


def test_every_json_a_tool_writes_is_strict_json(tiny, tmp_path):
    model, corpus, out = tiny / "olmoe", tiny / "corpus.jsonl", tmp_path
    steps = [
        ("moe-trace", [model, corpus, "--format", "jsonl", "-o", out / "trace.jsonl"]),
        ("moe-sample", [out / "trace.jsonl", "--format", "jsonl", "--context", "2", "-o", out / "samples.jsonl"]),
        ("moe-explain", [out / "samples.jsonl", "--backend", "offline", "--no-cache", "-o", out / "labels.jsonl"]),
        ("moe-score", [out / "trace.jsonl", "-o", out / "scores.jsonl"]),
        ("moe-select", ["--by", "das", "--domain", "legal", "--top", "2", out / "scores.jsonl",
                        "-o", out / "experts.json"]),
        ("moe-mask", [model, "--experts", out / "experts.json", "-o", out / "masked"]),
        ("moe-eval", [model, out / "masked", "--data", corpus, "-o", out / "eval.jsonl"]),
        ("moe-tune", [model, "--data", corpus, "--eval", corpus, "--mode", "experts", "--experts",
                      out / "experts.json", "--steps", "2", "--batch-size", "2", "--seq-len", "8",
                      "--checkpoint-every", "1", "-o", out / "tuned"]),
        ("moe-tune", ["merge", out / "tuned", "-o", out / "merged"]),
        ("moe-cat", ["--summary", out / "scores.jsonl", "-o", out / "summary.json"]),
        ("moe-probe", ["neurons", model, corpus, "--min-count", "2", "-o", out / "probe.jsonl"]),
        ("monet-train", ["--data", corpus, "-o", out / "monet", "--steps", "2", "--batch-size", "2", "--seq-len", "8",
                         "--d-model", "16", "--layers", "1", "--heads", "2", "--moe-experts", "4", "--moe-topk", "2",
                         "--moe-dim", "4", "--moe-heads", "2", "--moe-groups", "1", "--vocab-size", "260",
                         "--eval-every", "1", "--checkpoint-every", "1", "--eval-fraction", "0.3"]),
    ]
    for tool, args in steps:
        result = invoke(tool, [*args, "-q"])
        assert result.exit_code == 0, (tool, result.output)
    parsed = {str(p.relative_to(out)) for p in _strict_json_files(out)}
    for name in ("trace.jsonl", "samples.jsonl", "labels.jsonl", "scores.jsonl", "experts.json", "eval.jsonl",
                 "masked/config.json", "tuned/tune.json", "tuned/tune_log.jsonl", "merged/config.json",
                 "merged/moetools_tuned.json", "summary.json", "probe.jsonl", "monet/train_log.jsonl",
                 "monet/training_metadata.json", "monet/config.json"):
        assert name in parsed, sorted(parsed)


# -- training: the first non-finite loss or gradient stops it -------------------------------------------

def test_moe_tune_lr_nan_is_a_usage_error_and_leaves_no_directory(tiny, tmp_path):
    out = tmp_path / "tuned"
    result = invoke("moe-tune", [tiny / "olmoe", "--data", tiny / "corpus.jsonl", "--mode", "full", "--lr", "nan",
                                 "--steps", "1", "--batch-size", "2", "--seq-len", "8", "-o", out])
    one_line(result, "moe-tune", 2, "--lr", "'nan' is not a finite number")
    assert not out.exists()


def test_moe_tune_stops_at_the_first_non_finite_loss_without_an_adapter(tiny, tmp_path):
    out = tmp_path / "tuned"
    result = invoke("moe-tune", [tiny / "olmoe", "--data", tiny / "corpus.jsonl", "--mode", "full", "--lr", "1e30",
                                 "--steps", "6", "--batch-size", "2", "--seq-len", "8", "--warmup", "0",
                                 "--checkpoint-every", "1", "-o", out, "-q"])
    line = one_line(result, "moe-tune", 1, "training diverged (non-finite)", "without writing the adapter")
    assert "--resume continues from it" in line
    assert not (out / "tune.json").exists() and not (out / "adapter.safetensors").exists()
    assert (out / "checkpoint" / "trainer_state.json").exists()
    log = [strict_loads(line) for line in (out / "tune_log.jsonl").read_text().splitlines()]
    assert log and all(math.isfinite(r["loss"]) for r in log if r["type"] == "train")


def test_moe_tune_diverging_before_a_checkpoint_leaves_nothing(tiny, tmp_path):
    out = tmp_path / "tuned"
    result = invoke("moe-tune", [tiny / "olmoe", "--data", tiny / "corpus.jsonl", "--mode", "full", "--lr", "1e30",
                                 "--steps", "6", "--batch-size", "2", "--seq-len", "8", "--warmup", "0",
                                 "--checkpoint-every", "100", "-o", out, "-q"])
    one_line(result, "moe-tune", 1, "training diverged (non-finite)", f"{out} removed")
    assert not out.exists()


def test_monet_train_stops_at_the_first_non_finite_loss_without_a_model(tiny, tmp_path):
    out = tmp_path / "monet"
    tiny_args = ["--steps", "6", "--batch-size", "4", "--seq-len", "16", "--d-model", "32", "--layers", "2",
                 "--heads", "2", "--moe-experts", "4", "--moe-topk", "2", "--moe-dim", "4", "--moe-heads", "2",
                 "--moe-groups", "2", "--vocab-size", "300", "--eval-every", "100", "--checkpoint-every", "100",
                 "--warmup", "0", "--lr", "1e30", "-q"]
    result = invoke("monet-train", ["--data", tiny / "corpus.jsonl", "-o", out, *tiny_args])
    one_line(result, "monet-train", 1, "training diverged (non-finite)", "without writing the model")
    assert not out.exists()
