"""Cluster recipes shipped with the package: SLURM scripts for moe-trace (a job array and its join) and
moe-tune (torchrun on several nodes and the merge). ``python -m moetools.cluster`` prints their directory:

    cp "$(python -m moetools.cluster)"/trace-*.sh .
    MODEL=models/olmoe CORPUS=corpus.jsonl bash trace-submit.sh

The man pages of moe-trace and moe-tune show the same files in EXAMPLES.
"""

from __future__ import annotations

from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent

#: the recipes of each tool, in the order they are read: the submit script first
RECIPES = {
    "moe-trace": ("trace-submit.sh", "trace-array.sh", "trace-join.sh"),
    "moe-tune": ("tune-submit.sh", "tune-nodes.sh", "tune-merge.sh"),
}


def recipe_text(name: str) -> str:
    """The text of the recipe file ``name`` (one of :data:`RECIPES`' values)."""
    return (DIRECTORY / name).read_text(encoding="utf-8")
