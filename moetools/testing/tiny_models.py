"""Tiny real transformers models saved to disk with a word-level tokenizer, shared by the tests and benchmarks."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers


def save_word_tokenizer(directory, words) -> None:
    """A fast tokenizer over ``words`` ([UNK] = 0, [PAD] = 1, then the words), split on white space."""
    vocab = {"[UNK]": 0, "[PAD]": 1, **{word: index + 2 for index, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]",
                                         pad_token="[PAD]").save_pretrained(directory)


def save_tiny_olmoe(directory, words, seed: int = 0) -> None:
    """A random 2-layer OLMoE (8 experts, top-2, d=32) and its tokenizer, as from_pretrained loads them."""
    config = transformers.OlmoeConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      num_experts=8, num_experts_per_tok=2, pad_token_id=1, bos_token_id=None,
                                      eos_token_id=None)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    save_word_tokenizer(directory, words)


def save_tiny_mixtral(directory, words, seed: int = 0) -> None:
    """A random 2-layer Mixtral of save_tiny_olmoe's sizes (8 experts, top-2, d=32) and its tokenizer."""
    config = transformers.MixtralConfig(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        num_local_experts=8, num_experts_per_tok=2, pad_token_id=1,
                                        bos_token_id=None, eos_token_id=None)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    save_word_tokenizer(directory, words)


def save_tiny_monet(directory, words, *, layers: int, moe_experts: int, groups: int | None = None,
                    decompose: str = "vertical"):
    """A random tiny MONET (moe_experts² composed experts, top-2 per factor) and its tokenizer.

    ``groups`` is ``moe_groups``: that many consecutive layers share one router (default: all
    ``layers``, one router for the whole model, as the demo's 4-layer MONET-VD with moe_groups = 4).
    """
    import moetools.models.monet  # noqa: F401  (registers MONET with the Auto classes)
    from moetools.models.monet.configuration_monet import MonetConfig

    config = MonetConfig(vocab_size=64, hidden_size=16, num_hidden_layers=layers, num_attention_heads=4, moe_dim=4,
                         moe_heads=2, moe_experts=moe_experts, moe_topk=2, moe_groups=groups or layers,
                         moe_decompose=decompose, max_position_embeddings=64)
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    save_word_tokenizer(directory, words)
    return directory
