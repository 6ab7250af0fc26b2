"""``moetools study``: the whole chain of tools on a researcher's own model and corpus, in one command.

Entry point: :func:`run_study` (in ``run``). The steps are the demo's chain (:mod:`moetools.demo.chain`).
"""

from .run import LOG_NAME, STUDY_TOOL, domains_of, labelling, prepare_directory, run_study

__all__ = ["LOG_NAME", "STUDY_TOOL", "domains_of", "labelling", "prepare_directory", "run_study"]
