"""Tests of moetools.trace (moetools/trace/)."""
