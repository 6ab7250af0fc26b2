"""Tests of moetools.tune (moetools/tune/)."""
