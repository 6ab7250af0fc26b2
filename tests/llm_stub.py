"""The loopback OpenAI-compatible server, kept importable under this name for the tests (it lives in
moetools.testing.llm_stub, which bench/ imports too)."""

from moetools.testing.llm_stub import (
    DOMAIN_WORDS,
    FILLER,
    LLMStub,
    default_answer,
    synthetic_expert,
    write_samples,
)

__all__ = ["DOMAIN_WORDS", "FILLER", "LLMStub", "default_answer", "synthetic_expert", "write_samples"]
