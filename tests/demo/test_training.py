"""The demo's models train their step budget whatever the load: under a slowdown injected with the training
core's testing hook (MOETOOLS_TRAIN_STEP_DELAY) a tiny model still trains every step, the first steps give
an estimate, and a run that a --max-minutes cap stopped is named in the verdict line."""

import json

import pytest

from moetools import demo
from moetools.demo.chain import skew_significance_lines
from moetools.demo.training import estimate_lines, training_shortfall
from moetools.training.stopping import STEP_DELAY_VARIABLE

TINY_TRAIN = ["--batch-size", "2", "--seq-len", "16", "--d-model", "16", "--layers", "1", "--heads", "2",
              "--vocab-size", "280", "--eval-batches", "1", "-q"]
# idle_step_seconds far below what the injected delay makes a step take: the demo must call this machine slow
RECIPE = demo.Recipe("moe", "moe", TINY_TRAIN, idle_step_seconds=0.01)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    words = {"pets": "the cat sat on a mat and the dog barked", "code": "def loop return value for item in list"}
    with open(root / "train.jsonl", "w") as handle:
        for index in range(40):
            domain = list(words)[index % 2]
            handle.write(json.dumps({"id": str(index), "text": " ".join([words[domain]] * 4), "domain": domain}) + "\n")
    return root


def metadata(directory):
    return json.loads((directory / "training_metadata.json").read_text())


def _skew_scores(path, significant, specialised, expected):
    header = {"type": "header", "format": "moetools", "version": 1, "kind": "scores",
              "tool": {"name": "hand", "version": "0", "args": {}}, "model": None, "source": "routing",
              "layers": [0], "num_experts": 8, "top_k": 2, "domain_field": "domain", "domains": ["a", "b"],
              "general": {"kind": "rest"}, "target_field": None, "metrics": {}, "options": {}, "inputs": []}
    skew = {"min_ratio": 2.0, "specialised_total": specialised, "permutations": 1000, "exact": False, "seed": 0,
            "expected_under_null_total": expected, "q_threshold": 0.05, "significant_total": significant}
    path.write_text("".join(json.dumps(r) + "\n" for r in (header, {"type": "end", "count": 0,
                                                                    "summary": {"skew": skew}})))
    return path


def test_a_slow_machine_still_trains_the_full_step_budget(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv(STEP_DELAY_VARIABLE, "0.3")
    logged = []
    model = demo.ensure_model(RECIPE, corpus, tmp_path, steps=6, max_minutes=None, log=logged.append)
    done = metadata(model)
    assert done["steps"] == done["steps_planned"] == 6 and done["finished"] and done["options"]["max_minutes"] is None
    assert training_shortfall(model) is None
    steps = [json.loads(line)["step"] for line in (model / "train_log.jsonl").read_text().splitlines()
             if json.loads(line)["type"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    [command] = [line for line in logged if line.startswith("$ monet-train")]
    assert "--max-minutes" not in command  # no time cap unless the user gives one
    [estimate] = [line for line in logged if "s/step (steps 2-5)" in line]  # read from the log while it trained
    per_step = float(estimate.split(": ")[1].split(" s/step")[0])
    assert per_step >= 0.3  # the injected delay is part of each step's time
    assert "for the other 1 of 6 steps (2 idle cores: 0.01 s/step" in estimate
    [slow] = [line for line in logged if "slower than 2 idle cores" in line]
    assert "still trains all 6 steps" in slow and "`--steps " in slow
    # cached: the budget is met, nothing trains
    logged.clear()
    demo.ensure_model(RECIPE, corpus, tmp_path, steps=6, max_minutes=None, log=logged.append)
    assert logged == [f"model moe: {model} (cached)"]


def test_a_shortened_run_says_so_in_its_verdict_line(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv(STEP_DELAY_VARIABLE, "0.5")
    logged = []
    model = demo.ensure_model(RECIPE, corpus, tmp_path, steps=6, max_minutes=0.02, log=logged.append)  # 1.2 s
    stopped = metadata(model)
    assert 1 <= stopped["steps"] < 6 and not stopped["finished"]
    shortfall = training_shortfall(model)
    assert shortfall == f"trained {stopped['steps']} of 6 steps, stopped by --max-minutes 0.02"
    trained = _skew_scores(tmp_path / "t.jsonl", significant=5, specialised=9, expected=2.5)
    random_init = _skew_scores(tmp_path / "r.jsonl", significant=0, specialised=4, expected=3.0)
    [line] = skew_significance_lines(trained, random_init, shortened=shortfall)
    assert line.endswith(f": learned domain specialisation above random init — on a SHORTENED model ({shortfall}): "
                         "not the verdict of the full budget")
    [line] = skew_significance_lines(random_init, random_init, shortened=shortfall)
    assert "NO learned domain specialisation" in line and "SHORTENED model" in line


@pytest.mark.slow  # three monet-train runs
def test_a_shortened_model_resumes_to_its_budget_and_another_budget_trains_again(tmp_path, corpus, monkeypatch):
    monkeypatch.setenv(STEP_DELAY_VARIABLE, "0.5")
    logged = []
    model = demo.ensure_model(RECIPE, corpus, tmp_path, steps=6, max_minutes=0.02, log=logged.append)
    assert not metadata(model)["finished"]
    # the partial model is not taken as cached: without a cap the rerun resumes it to its budget
    monkeypatch.setenv(STEP_DELAY_VARIABLE, "0")
    logged.clear()
    demo.ensure_model(RECIPE, corpus, tmp_path, steps=6, max_minutes=None, log=logged.append)
    assert logged[-1].startswith("$ monet-train") and logged[-1].endswith("--resume")
    assert metadata(model)["steps"] == 6 and training_shortfall(model) is None
    # another budget is another model: trained again, not resumed or taken as cached
    logged.clear()
    monkeypatch.setenv(STEP_DELAY_VARIABLE, "")
    demo.ensure_model(RECIPE, corpus, tmp_path, steps=3, max_minutes=None, log=logged.append)
    assert "was trained for a budget of 6 steps, not 3; training it again" in logged[0]
    assert metadata(model)["steps"] == metadata(model)["steps_planned"] == 3


def test_estimate_says_when_the_machine_is_much_slower_and_how_to_shorten_it():
    [line] = estimate_lines("moe", 0.6, (2, 5), 400, 0.53)
    assert line == "model moe: 0.60 s/step (steps 2-5): about 4.0 min for the other 395 of 400 steps " \
                   "(2 idle cores: 0.53 s/step, 3.5 min in all)"
    line, slow = estimate_lines("moe", 2.12, (2, 5), 400, 0.53)
    assert "4.0x slower than 2 idle cores" in slow and "`--steps 100`" in slow and "still trains all 400" in slow


def test_a_bad_step_delay_is_a_usage_error(tmp_path, corpus, monkeypatch, run_tool):
    from moetools.cli.monet_train import command

    monkeypatch.setenv(STEP_DELAY_VARIABLE, "soon")
    result = run_tool(command, ["--arch", "moe", "--data", str(corpus / "train.jsonl"), "-o", str(tmp_path / "m"),
                                "--steps", "2", *TINY_TRAIN])
    assert result.exit_code == 2
    assert result.stderr.strip() == f"monet-train: {STEP_DELAY_VARIABLE}='soon' is not a number of seconds >= 0"
    assert not (tmp_path / "m").exists()


def test_a_recipes_model_config_reaches_the_trained_model(tmp_path, corpus):
    """The MoE's expert count, top-k and load-balancing weight have no monet-train flag: the recipe's
    model_config goes in a --config file, and the cached model matches the recipe only with those values."""
    config = {"num_experts": 4, "num_experts_per_tok": 1, "router_aux_loss_coef": 0.1}
    recipe = demo.Recipe("moe", "moe", TINY_TRAIN, model_config=config)
    logged = []
    model = demo.ensure_model(recipe, corpus, tmp_path, steps=2, max_minutes=None, log=logged.append)
    written = json.loads((model / "config.json").read_text())
    assert {key: written[key] for key in config} == config
    assert any("--config " in line for line in logged if line.startswith("$ monet-train"))
    assert demo.recipe_matches(recipe, model)
    other = demo.Recipe("moe", "moe", TINY_TRAIN, model_config={**config, "router_aux_loss_coef": 0.01})
    assert not demo.recipe_matches(other, model)  # another weight: trained again, not reused
