"""Tests of moetools.corpus (moetools/corpus/)."""
