"""Tests of moetools.cat (moetools/cat/)."""
