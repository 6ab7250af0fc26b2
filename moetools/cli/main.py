"""``moetools``: the umbrella command for jobs that are not pipeline stages.

Subcommands are registered by the modules that own them (``moetools corpus build``
lives in ``moetools.corpus``); this module only collects them.
"""

from __future__ import annotations

import importlib

from .common import tool_group

#: modules that define a click command or group in ``SUBCOMMAND`` (or several in ``SUBCOMMANDS``)
SUBCOMMAND_MODULES = (
    "moetools.cli.corpus",
    "moetools.cli.demo",
    "moetools.cli.study",
)


@tool_group("moetools", example="moetools --version")
def command():
    """Project-level jobs of moetools (corpus, models, demo, study).

    The pipeline stages are separate programs, each with its own --help and man
    page: moe-trace, moe-sample, moe-explain, moe-score, moe-select, moe-mask,
    moe-eval, moe-tune, moe-report, moe-probe, moe-cat, monet-train. The man page
    moetools(1) lists them with what each does; moe-formats(5) describes the
    streams they exchange.
    """


for _module in map(importlib.import_module, SUBCOMMAND_MODULES):
    for _subcommand in getattr(_module, "SUBCOMMANDS", None) or (_module.SUBCOMMAND,):
        command.add_command(_subcommand)

main = command.main


if __name__ == "__main__":
    main(prog_name="moetools")
