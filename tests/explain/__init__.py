"""Tests of moetools.explain (moetools/explain/)."""
