"""Tests of moetools.train (moetools/train/)."""
