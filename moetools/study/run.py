"""The chain of tools on one model and corpus: trace → sample → explain → score (routing + judged) →
select (each domain's experts and random controls) → mask → eval → report, into one directory::

    moetools study models/olmoe corpus.jsonl --domain-field topic -o study/

Each step is one command line of the installed tools, printed (stderr) and appended to
``DIR/study.log`` before it runs, so any one can be rerun or swapped by hand. A step is skipped when
its command and inputs are unchanged (a stamp beside its first output, :mod:`moetools.demo.cache`),
so a rerun after a kill redoes only the step that did not finish, and the ones after it.

The output directory: a new or empty one is made a study directory (the suite's marker, tool
``moetools study``); an existing study directory is resumed without ``--force``; ``--force`` starts a
study directory over; any other directory is refused (the suite's rule, ``moetools.streams.outputs``).

Labels: ``--backend auto`` (the default) uses an OpenAI-compatible endpoint when ``$OPENAI_BASE_URL``
is set, else the offline method (no LLM) with the embedding judge; the summary says which.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import time
from pathlib import Path

from ..demo.chain import ChainSettings, command_log, run_chain, run_front, summarise_chain
from ..errors import MoetoolsError, UsageError
from ..streams.outputs import MARKER, check_not_an_input, is_suite_directory, write_marker

#: the study's log of every step's command, in its directory
LOG_NAME = "study.log"
#: the marker's tool: a directory with it is a study to resume
STUDY_TOOL = "moetools study"
#: moe-eval's --max-length unless the model's context is shorter
EVAL_MAX_LENGTH = 512
OFFLINE_HINT = ("for an LLM's labels set $OPENAI_BASE_URL (and $OPENAI_API_KEY), or pass --backend openai "
                "--api-base URL --llm-model NAME, or --backend local (a transformers model in this process)")


def _is_study(directory: Path) -> bool:
    try:
        return json.loads((directory / MARKER).read_text()).get("tool") == STUDY_TOOL
    except (OSError, ValueError, AttributeError):
        return False


def prepare_directory(out: Path, *, inputs: list[Path], force: bool) -> str:
    """Make ``out`` ready: "new", "resumed" (a study directory) or "restarted" (``force``); UsageError else."""
    check_not_an_input(out, inputs)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} exists and is not a directory: choose another output")
    verdict = "new"
    if out.is_dir() and any(out.iterdir()):
        if _is_study(out) and not force:
            return "resumed"
        if not is_suite_directory(out):
            raise UsageError(f"-o {out}: this directory was not written by moetools; refusing to use it, even "
                             "with --force (remove it yourself, or choose another output)")
        if not force:
            raise UsageError(f"-o {out} exists and is not a study directory: use --force to replace it")
        shutil.rmtree(out)
        verdict = "restarted"
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, STUDY_TOOL)
    return verdict


def domains_of(corpus: Path, field: str) -> dict[str, int]:
    """Documents per value of ``field`` in a JSON-lines corpus (lines that are not JSON objects are skipped)."""
    counts: dict[str, int] = {}
    with open(corpus, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get(field), str):
                counts[record[field]] = counts.get(record[field], 0) + 1
    return counts


def labelling(backend: str, api_base: str | None, llm_model: str | None) -> dict:
    """The explain and judge flags of ``backend`` (auto: openai with $OPENAI_BASE_URL set, else offline)."""
    if backend == "auto":
        backend = "openai" if (api_base or os.environ.get("OPENAI_BASE_URL")) else "offline"
    if backend == "offline":
        return {"backend": "offline", "explain": "--backend offline --no-cache", "judge": "--backend embedding",
                "labels_name": "offline",
                "judge_name": "the embedding scorer (all-MiniLM-L6-v2, no LLM)"}
    if backend == "openai" and not llm_model:
        raise UsageError("--backend openai needs --llm-model NAME (the endpoint's model)")
    flags = f"--backend {shlex.quote(backend)}"
    flags += f" --api-base {shlex.quote(api_base)}" if api_base else ""
    flags += f" --model {shlex.quote(llm_model)}" if llm_model else ""
    return {"backend": backend, "explain": flags, "judge": flags, "labels_name": backend,
            "judge_name": f"the {backend} backend" + (f" ({llm_model})" if llm_model else "")}


def model_context(model: Path) -> int | None:
    """The model's context length from its config.json (None when it does not say)."""
    try:
        config = json.loads((model / "config.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_len"):
        if isinstance(config.get(key), int) and config[key] > 1:
            return config[key]
    return None


def run_study(model, corpus, out, *, domain_field: str = "domain", text_field: str = "text", backend: str = "auto",
              api_base: str | None = None, llm_model: str | None = None, top: int = 1, force: bool = False,
              permutations: int = 1000, log=print, echo=print) -> list[str]:
    """Run the chain on ``model`` and ``corpus`` into ``out``; print and return the summary's lines."""
    model, corpus, out = Path(model), Path(corpus), Path(out)
    if not (model / "config.json").is_file():
        raise UsageError(f"{model}: not a model directory (no config.json)")
    if not corpus.is_file():
        raise UsageError(f"{corpus}: no such corpus file (JSON lines with a text field)")
    domains = domains_of(corpus, domain_field)
    if len(domains) < 2:
        raise UsageError(f"{corpus}: {len(domains)} domain(s) in field {domain_field!r}; a study compares at least "
                         "two (--domain-field names the field)")
    chosen = labelling(backend, api_base, llm_model)
    verdict = prepare_directory(out, inputs=[model, corpus], force=force)
    started = time.perf_counter()
    log_path = out / LOG_NAME

    logged = command_log(log_path, log)
    logged(f"# moetools study {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} ({verdict}): model {model}, "
           f"corpus {corpus}, domains {', '.join(f'{d} {n}' for d, n in sorted(domains.items()))}")
    if chosen["backend"] == "offline":
        logged(f"# labels: offline backend (no LLM endpoint configured); {OFFLINE_HINT}")
    context = model_context(model)
    settings = ChainSettings(title=f"moetools study: {model.name}", select_top=top, domain_field=domain_field,
                             text_field=text_field,
                             explain_args=chosen["explain"], judge_args=chosen["judge"],
                             judge_name=chosen["judge_name"], labels_name=chosen["labels_name"],
                             permutations=permutations,
                             eval_max_length=min(EVAL_MAX_LENGTH, context) if context else EVAL_MAX_LENGTH)
    from ..demo.run import run_shell  # the installed tools on PATH, bash -o pipefail

    paths = run_front(settings, model, corpus, out, run_shell, logged)
    made = run_chain(None, model, corpus, out, sorted(domains), paths, run_shell, logged, root=None,
                     shown_limit=0, settings=settings)
    lines = [f"== study of {model} on {corpus} ({len(domains)} domains, field {domain_field!r})",
             f"labels: {chosen['backend']} backend ({paths['labels']})"
             + (f": the offline method, no LLM endpoint configured; {OFFLINE_HINT}" if chosen["backend"] == "offline"
                else ""),
             *summarise_chain(made),
             f"commands: {log_path} (each step's command line; rerun the study to redo only what changed)",
             f"study finished in {time.perf_counter() - started:.0f} s; outputs under {out}"]
    for line in lines:
        echo(line)
    if made["notes"]:
        logged(f"# finished, {len(made['notes'])} step(s) failed")
        raise MoetoolsError(f"{len(made['notes'])} step(s) failed (see 'not done' above); rerun to retry them")
    logged("# finished")
    return lines


__all__ = ["LOG_NAME", "STUDY_TOOL", "domains_of", "labelling", "prepare_directory", "run_study"]
