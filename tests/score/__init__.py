"""Tests of moetools.score (moetools/score/)."""
