"""Tests of moetools.cluster (moetools/cluster/)."""
