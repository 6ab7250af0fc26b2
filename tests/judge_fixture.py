"""The judge's samples/labels fixture, kept importable under this name for the tests (it lives in
moetools.testing.judge_fixture, which bench/ imports too)."""

from moetools.testing.judge_fixture import KEYWORD, LABEL, MODEL, keyword_answer, write_labels, write_samples

__all__ = ["KEYWORD", "LABEL", "MODEL", "keyword_answer", "write_labels", "write_samples"]
