"""The tiny-model builders, kept importable under this name for the tests (they live in moetools.testing)."""

from moetools.testing.tiny_models import (
    save_tiny_mixtral,
    save_tiny_monet,
    save_tiny_olmoe,
    save_word_tokenizer,
)

__all__ = ["save_tiny_mixtral", "save_tiny_monet", "save_tiny_olmoe", "save_word_tokenizer"]
