"""Tiny real transformers models saved to disk with a word-level tokenizer, shared by the CLI tests."""

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
