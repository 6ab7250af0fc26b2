"""Tests of moetools.cli (moetools/cli/)."""
