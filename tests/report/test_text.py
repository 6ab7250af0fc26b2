"""moe-report shows the text as written: characters whose bytes a byte-level BPE splits over tokens read whole
(a real tiny model through moe-trace, moe-sample and moe-report), domain names are plain text in the figures
(not matplotlib mathtext), and the eval table names models by short names with the full path on hover."""

from __future__ import annotations

import html
import json
import re

from click.testing import CliRunner

from moetools.cli import load_command
from moetools.report.page import read_data_block
from tests.tiny_bpe import save_tiny_bpe_olmoe
from tests.trace_factory import MODEL, make_records, write_trace

TRAINING = ["the court held that the law of the land applies", "patients with the disease were given a dose"] * 20
NAMES = ["Møller", "Ørsted", "Müller", "Gödel", "日本"]  # none in TRAINING: their characters stay split into bytes


def run_tool(name: str, args: list) -> str:
    result = CliRunner().invoke(load_command(name), [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_characters_split_over_tokens_read_whole_on_the_page(tmp_path):
    save_tiny_bpe_olmoe(tmp_path / "model", TRAINING)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert any("\ufffd" in tokenizer.decode([t]) for t in tokenizer.encode("Møller"))  # ø is two tokens
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": f"d{n}", "domain": ["law", "med"][n % 2], "text": " ".join(
        f"{NAMES[(n + k) % len(NAMES)]} said the law of the land" for k in range(6))}) + "\n" for n in range(8)))
    trace, samples, report = tmp_path / "trace.msgpack.zst", tmp_path / "samples.jsonl", tmp_path / "report.html"
    run_tool("moe-trace", [tmp_path / "model", corpus, "-o", trace, "--max-length", 64, "-q"])
    run_tool("moe-sample", [trace, "--min-count", "1", "--format", "jsonl", "-o", samples, "-q"])
    run_tool("moe-report", [trace, samples, "-o", report, "-q"])

    page = report.read_text(encoding="utf-8")
    data = read_data_block(page)
    contexts = ["".join(context["p"]) for expert in data["experts"] for context in expert.get("c") or []]
    assert contexts and any("Møller" in text for text in contexts)
    assert any("日本" in text for text in contexts)
    assert "\ufffd" not in json.dumps(data, ensure_ascii=False) and "\ufffd" not in page


def test_domain_names_are_plain_text_in_the_figures(tmp_path):
    odd = r"$\frac{1}{$ 50% _under_ ^hat"
    trace, scores, report = tmp_path / "trace.msgpack.zst", tmp_path / "scores.jsonl", tmp_path / "report.html"
    trace.write_bytes(write_trace(make_records(documents=6, tokens=120, domains=("code", odd))))
    run_tool("moe-score", [trace, "--permutations", "20", "-o", scores, "-q"])
    run_tool("moe-report", [trace, scores, "-o", report, "-q"])
    svgs = re.findall(r"<svg\b.*?</svg>", report.read_text(encoding="utf-8"), flags=re.DOTALL)
    assert svgs and any(html.escape(odd, quote=False) in svg for svg in svgs)


def write_eval(target, models: list[str]) -> None:
    lines = [{"type": "header", "format": "moetools", "version": 1, "kind": "eval", "tool": {"name": "moe-eval"},
              "model": None, "models": models, "data": "val.jsonl", "choices": None, "domain_field": "domain",
              "max_length": 64}]
    for index, path in enumerate(models):
        fingerprint = MODEL["fingerprint"] if index == 0 else f"sha256:other{index}"
        lines.append({"type": "model", "model": index, "identity": {"name": path.rstrip("/").rsplit("/", 1)[-1],
                                                                     "fingerprint": fingerprint}, "masked": None})
        lines.append({"type": "domain", "model": index, "domain": "code", "documents": 4, "tokens": 600,
                      "loss": 3.2 + index, "perplexity": 24.5, "delta_loss": None if index == 0 else float(index)})
    lines.append({"type": "end", "count": len(lines) - 1})
    target.write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_eval_table_names_models_by_short_names_with_the_path_on_hover(tmp_path):
    models = [f"{tmp_path}/runs/one/olmoe", f"{tmp_path}/runs/two/olmoe", f"{tmp_path}/masked/olmoe-legal/"]
    trace, evaluated, report = tmp_path / "trace.msgpack.zst", tmp_path / "eval.jsonl", tmp_path / "report.html"
    trace.write_bytes(write_trace(make_records(documents=4, tokens=80)))
    write_eval(evaluated, models)
    run_tool("moe-report", [trace, evaluated, "-o", report, "-q"])
    page = report.read_text(encoding="utf-8")
    table = re.search(r"<table class=eval>(.*?)</table>", page, flags=re.DOTALL).group(1)
    headers = re.findall(r"<th>(.*?)</th>", table.split("</tr>")[0])[1:]
    assert headers == [f'<span title="{html.escape(path)}">{short}</span>'
                       for path, short in zip(models, ["one/olmoe", "two/olmoe", "olmoe-legal"])]
    assert str(tmp_path) not in re.sub(r'title="[^"]*"', "", table)


def test_short_names_tell_equal_base_names_apart():
    from moetools.report.page import short_names

    assert short_names(["/a/b/olmoe", "/a/c/olmoe", "/x/masked"]) == ["b/olmoe", "c/olmoe", "masked"]
    assert short_names(["/r/x/m", "/s/x/m", "/t/y/m"]) == ["r/x/m", "s/x/m", "y/m"]
    assert short_names(["models/olmoe/", "models/olmoe"]) == ["models/olmoe (#1)", "models/olmoe (#2)"]
    assert short_names(["olmoe", "/abs/olmoe"]) == ["olmoe", "abs/olmoe"]
