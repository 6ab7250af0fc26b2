"""Explainer backends behind one registry (see :mod:`moetools.llm.registry`).

Built-ins: ``openai`` (any OpenAI-compatible chat-completions endpoint),
``local`` (a transformers causal LM from a directory or GGUF file), ``self``
(MONET self-explanation, paper 004 §4.3) and ``offline`` (no LLM).
"""

from .base import Accounting, BackendError, Completion, Explainer, ExplainJob, FatalBackendError
from .registry import ENTRY_POINT_GROUP, available, get_explainer, load_plugins, register_explainer

__all__ = [
           "ENTRY_POINT_GROUP",
           "Accounting",
           "BackendError",
           "Completion",
           "ExplainJob",
           "Explainer",
           "FatalBackendError",
           "available",
           "get_explainer",
           "load_plugins",
           "register_explainer",
]
