"""Tests of moetools.eval (moetools/eval/)."""
