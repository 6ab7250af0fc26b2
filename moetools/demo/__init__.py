"""``moetools demo`` and ``moetools models``: the embedded default, built and run end to end.

Entry points: :func:`run_demo` (``make demo``) and :func:`run_models` (``make models``), both in
``run`` (corpus, models, the trace | sample | explain pipeline and the summary). The rest of the
chain (moe-score, moe-select, moe-mask, moe-eval, moe-report) is ``chain``; SmolLM2's labels and
judgements of the experts shown are ``smollm2``; ``cache`` skips a step whose command and inputs
are unchanged.
Training to the step budget (timed first steps, the estimate, what a shortened model is) is ``training``.
"""

from .run import (
    DEFAULT_MAX_MINUTES,
    DEFAULT_RECIPES,
    DEFAULT_STEPS,
    DEFAULT_TOKENS_PER_DOMAIN,
    Recipe,
    balanced_slice,
    ensure_corpus,
    ensure_model,
    model_is_complete,
    recipe_matches,
    run_demo,
    run_models,
    summarise,
)
from .training import training_shortfall

__all__ = ["DEFAULT_MAX_MINUTES", "DEFAULT_RECIPES", "DEFAULT_STEPS", "DEFAULT_TOKENS_PER_DOMAIN", "Recipe",
           "balanced_slice", "ensure_corpus", "ensure_model", "model_is_complete", "recipe_matches", "run_demo",
           "run_models", "summarise", "training_shortfall"]
