"""Thin click commands, one module per tool; the shared conventions live in ``common``.

``TOOLS`` maps each console script to the module holding its ``command``; the man
pages (``make man``) and their drift test iterate it, and pyproject.toml's
``[project.scripts]`` must list the same names (tested).
"""

TOOLS = {
    "moe-cat": "moetools.cli.cat",
    "moe-trace": "moetools.cli.trace",
    "moe-sample": "moetools.cli.sample",
    "moe-explain": "moetools.cli.explain",
    "moe-score": "moetools.cli.score",
    "moe-select": "moetools.cli.select",
    "moe-tune": "moetools.cli.tune",
    "moe-mask": "moetools.cli.mask",
    "moe-eval": "moetools.cli.eval",
    "moe-report": "moetools.cli.report",
    "moe-probe": "moetools.cli.probe",
    "monet-train": "moetools.cli.monet_train",
    "moetools": "moetools.cli.main",
}


def load_command(name: str):
    """The click command of tool ``name``."""
    import importlib

    return importlib.import_module(TOOLS[name]).command
