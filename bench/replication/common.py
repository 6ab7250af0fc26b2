"""What the replications share: the budget, the per-seed models, cached stages, tools, 95% t-intervals.

Layout under ``$MOETOOLS_HOME/replicate/<budget>/`` (budget ``full`` or ``quick``)::

    models/<moe|monet-vd|dense>-seed<S>/         monet-train (resumes a killed run from its checkpoint)
    slices/{train,validation,test}.jsonl         per-domain balanced slices of the corpus splits
    <replication>/seed<S>/<stage>.json           one finished stage: its figures and compute (atomic)
    <replication>/seed<S>/<stage>/               that stage's streams and models

A stage whose JSON exists is not run again: a rerun after a kill redoes only the unfinished stages.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

from _harness import ROOT, measure

from moetools.demo import balanced_slice
from moetools.demo.run import DEFAULT_RECIPES, Recipe, tool_path
from moetools.demo.training import model_is_complete, train_to_budget

#: two-sided 95% Student t quantiles t(0.975, df) for df = 1..30 (scipy is not installed)
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """t(0.975, df); beyond the table, 1.96 + 2.5/df (within 0.002 of the exact value for df > 30)."""
    if df < 1:
        raise ValueError("a t-interval needs at least 2 values")
    return T975[df - 1] if df <= len(T975) else 1.96 + 2.5 / df


def interval(values: list[float]) -> dict:
    """Mean and 95% t-interval over seeds: {mean, low, high, n, sd}; low/high None with fewer than 2 values."""
    values = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(values)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0, "sd": None}
    mean = sum(values) / n
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1, "sd": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": n, "sd": sd}


def verdict(ci: dict, direction: int = 1) -> str:
    """``reproduced`` when the interval excludes 0 on the claimed side (``direction`` +1: the figure is claimed
    positive), ``opposite`` when it excludes 0 on the other side, ``not reproduced (null)`` when it holds 0."""
    if ci.get("low") is None:
        return "undecided (fewer than 2 seeds)"
    low, high = ci["low"] * direction, ci["high"] * direction
    low, high = min(low, high), max(low, high)
    return "reproduced" if low > 0 else "opposite" if high < 0 else "not reproduced (null)"


def claim(name: str, per_seed: dict, direction: int = 1, unit: str = "") -> dict:
    """One measured figure: its value per seed, mean, 95% interval and verdict."""
    ci = interval(list(per_seed.values()))
    return {"figure": name, "unit": unit, "claimed_sign": "+" if direction > 0 else "-",
            "per_seed": per_seed, **ci, "verdict": verdict(ci, direction)}


@dataclass
class Budget:
    """The sizes of one run: ``full`` (the default) or ``quick`` (the test's: a couple of minutes)."""

    name: str
    train_steps: int
    shape: list[str] = field(default_factory=list)   # monet-train flags after the recipe's
    monet_shape: list[str] = field(default_factory=list)
    seq_len: int = 256
    tokens_per_domain: int = 4000
    ks: tuple[int, ...] = (1, 2, 4)
    tune_steps: int = 40
    permutations: int = 1000


def budget(quick: bool) -> Budget:
    if quick:
        return Budget("quick", train_steps=30, shape=["--d-model", "64", "--layers", "2", "--seq-len", "64",
                                                      "--vocab-size", "512", "--eval-batches", "2"],
                      monet_shape=["--moe-groups", "2"], seq_len=64, tokens_per_domain=600, ks=(1, 2, 4),
                      tune_steps=4, permutations=50)
    from moetools.demo.run import DEFAULT_STEPS

    return Budget("full", train_steps=DEFAULT_STEPS)


class Context:
    """One run: where things go, the budget, the device, the log; trains and caches what the stages share."""

    def __init__(self, quick: bool, device: str, seeds: list[int], log=None):
        self.budget = budget(quick)
        self.device = device
        self.seeds = seeds
        self.home = Path(os.environ.get("MOETOOLS_HOME") or ROOT / ".moetools")
        self.root = self.home / "replicate" / self.budget.name
        self.corpus = self.home / "corpus"
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.trained: list[str] = []     # models this run trained (a resumed run: none already finished)
        self.compute: dict = {}          # stage key -> {wall_s, cpu_s} of the stages this run ran
        self.env = {**os.environ, "PATH": tool_path()}
        if device == "cpu":  # monet-train and moe-tune (and this process's base evaluation) take a GPU they see
            self.env["CUDA_VISIBLE_DEVICES"] = os.environ["CUDA_VISIBLE_DEVICES"] = ""

    # -- tools --------------------------------------------------------------------------------------------
    def tool(self, *words) -> None:
        """Run one of the suite's tools (a subprocess, its stderr through); a failure stops the run."""
        line = " ".join(shlex.quote(str(w)) for w in words)
        self.log(f"$ {line}")
        done = subprocess.run([str(w) for w in words], env=self.env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"replicate: this step failed (exit {done.returncode}): {line}")

    def run_shell(self, line: str, log, while_running=None) -> float:
        """moetools.demo.training's runner, with this run's environment (device)."""
        log(f"$ {line}")
        started = time.perf_counter()
        done = subprocess.run(["bash", "-o", "pipefail", "-c", line], env=self.env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"replicate: this step failed (exit {done.returncode}): {line}")
        return time.perf_counter() - started

    # -- shared inputs ------------------------------------------------------------------------------------
    def slice(self, split: str) -> Path:
        """A per-domain balanced slice of a corpus split (``tokens_per_domain`` corpus tokens per domain)."""
        out = self.root / "slices" / f"{split}.jsonl"
        if not out.is_file():
            source = self.corpus / f"{split}.jsonl"
            if not source.is_file():
                raise SystemExit(f"replicate: no corpus at {self.corpus}: run `moetools corpus build` first")
            partial = out.with_suffix(".partial")
            balanced_slice(source, self.budget.tokens_per_domain, partial)
            os.replace(partial, out)
        return out

    def domains(self) -> list[str]:
        with open(self.slice("validation"), encoding="utf-8") as handle:
            return sorted({json.loads(line)["domain"] for line in handle if line.strip()})

    def recipe(self, arch: str) -> Recipe:
        """The demo's MoE and MONET-VD recipes (moetools.demo.run.DEFAULT_RECIPES); dense = the MoE's, --arch llama."""
        recipes = {recipe.name: recipe for recipe in DEFAULT_RECIPES}
        return dataclasses.replace(recipes["moe"], name="dense", arch="llama") if arch == "dense" else recipes[arch]

    def model(self, arch: str, seed: int) -> Path:
        """The ``arch`` model of ``seed`` (moe, monet-vd, dense), trained once with monet-train; the MoE's BPE
        tokenizer is the others' (same vocabulary)."""
        directory = self.root / "models" / f"{arch}-seed{seed}"
        if model_is_complete(directory):
            return directory
        recipe = self.recipe(arch)
        extra = ["--seed", str(seed), *self.budget.shape] + (self.budget.monet_shape if arch == "monet-vd" else [])
        if arch != "moe":
            extra += ["--tokenizer", str(self.model("moe", seed))]
        recipe = dataclasses.replace(recipe, train_args=[*recipe.train_args, *extra])
        directory.parent.mkdir(parents=True, exist_ok=True)
        with measure() as cost:
            train_to_budget(recipe, self.corpus, directory, self.budget.train_steps, None, self.run_shell, self.log)
        self.trained.append(directory.name)
        compute = {"wall_s": round(cost["wall_s"], 1), "cpu_s": round(cost["cpu_s"], 1)}
        self.compute[f"train/{directory.name}"] = compute
        write_json(directory.parent / f"{directory.name}.compute.json", compute)  # a resumed run: this part only
        return directory

    def recorded_compute(self) -> dict:
        """Wall and CPU seconds of every finished stage and training run under this budget, earlier runs too."""
        stages: dict = {}
        for path in sorted(self.root.glob("models/*.compute.json")):
            stages[f"train/{path.name[:-len('.compute.json')]}"] = json.loads(path.read_text())
        for path in sorted(self.root.glob("*/seed*/*.json")):
            compute = json.loads(path.read_text()).get("compute")
            if compute:
                stages[f"{path.parent.parent.name}/{path.parent.name}/{path.stem}"] = compute
        return {"stages": stages, "wall_s": round(sum(v["wall_s"] for v in stages.values()), 1),
                "cpu_s": round(sum(v["cpu_s"] for v in stages.values()), 1)}

    # -- cached stages ------------------------------------------------------------------------------------
    def stage(self, replication: str, seed: int | str, name: str, run) -> dict:
        """``run(directory)``'s result, cached in ``<replication>/seed<S>/<name>.json`` with its compute."""
        where = self.root / replication / (f"seed{seed}" if isinstance(seed, int) else str(seed))
        path = where / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        work = where / name
        work.mkdir(parents=True, exist_ok=True)
        self.log(f"[{replication} seed {seed}] {name} ...")
        with measure() as cost:
            result = run(work)
        result["compute"] = {"wall_s": round(cost["wall_s"], 1), "cpu_s": round(cost["cpu_s"], 1)}
        self.compute[f"{replication}/{seed}/{name}"] = result["compute"]
        write_json(path, result)
        return result


def write_json(path: Path, value) -> None:
    """Atomically: a killed run leaves either the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1) + "\n", encoding="utf-8")
    os.replace(partial, path)


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def eval_loss(model: Path) -> float | None:
    """The last held-out loss monet-train logged (nats/token)."""
    try:
        return (json.loads((model / "training_metadata.json").read_text()).get("last_eval") or {}).get("eval_loss")
    except (OSError, ValueError):
        return None
