"""A tiny byte-level BPE tokenizer (GPT-2's and OLMoE's kind) and a tiny OLMoE over it, saved as from_pretrained
loads them: for tests of text that is not ASCII (a character's UTF-8 bytes split over several tokens) and of
definitions that need an end-of-text token."""

from __future__ import annotations

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

END_OF_TEXT = "<|endoftext|>"


def save_byte_level_tokenizer(directory, texts, vocab_size: int = 300) -> transformers.PreTrainedTokenizerFast:
    """Byte-level BPE trained on ``texts`` (every byte in the alphabet, so any text encodes): a character
    absent from ``texts`` stays split into its UTF-8 bytes, one token each. ``<|endoftext|>`` is EOS (no BOS)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[END_OF_TEXT, "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT,
                                                pad_token="<|padding|>")
    fast.save_pretrained(directory)
    return fast


def save_tiny_bpe_olmoe(directory, texts, seed: int = 0, vocab_size: int = 300) -> None:
    """A random 2-layer OLMoE (8 experts, top-2, d=32) over :func:`save_byte_level_tokenizer`'s tokenizer."""
    tokenizer = save_byte_level_tokenizer(directory, texts, vocab_size)
    config = transformers.OlmoeConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48,
                                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                      max_position_embeddings=128, num_experts=8, num_experts_per_tok=2,
                                      pad_token_id=tokenizer.pad_token_id, bos_token_id=None,
                                      eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
