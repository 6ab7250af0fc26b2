"""``moetools``: the umbrella command for jobs that are not pipeline stages.

Subcommands are registered by the modules that own them (``moetools corpus build``
lives in ``moetools.corpus``); this module only collects them.
"""

from __future__ import annotations

import importlib

from .common import tool_group

#: modules that define a click command or group named in their ``SUBCOMMAND`` attribute
SUBCOMMAND_MODULES = (
    "moetools.cli.corpus",
)


@tool_group("moetools", example="moetools --version")
def command():
    """Project-level jobs of moetools (corpus, models, demo).

    The pipeline stages are separate programs: moe-cat, moe-trace, moe-sample,
    moe-explain, monet-train. See moetools(1) and moe-formats(5).
    """


for _module in SUBCOMMAND_MODULES:
    command.add_command(importlib.import_module(_module).SUBCOMMAND)

main = command.main
