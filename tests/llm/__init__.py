"""Tests of moetools.llm (moetools/llm/)."""
