"""Helpers that tests and benchmarks share, and that a plugin's own tests may use: nothing here imports pytest.

- :mod:`~moetools.testing.tiny_models`: tiny real transformers models (a 2-layer OLMoE) and a word tokenizer,
  saved as ``from_pretrained`` loads them;
- :mod:`~moetools.testing.llm_stub`: a real OpenAI-compatible chat-completions server on 127.0.0.1, with
  latency, concurrency limits and faults;
- :mod:`~moetools.testing.trace_factory`: synthetic ``trace`` streams with known activations;
- :mod:`~moetools.testing.judge_fixture`: ``samples`` and ``labels`` streams for the LLM judge and its
  keyword-answering scorer.

``tests/`` re-exports them under their old module names; ``bench/`` imports them from here.
"""
