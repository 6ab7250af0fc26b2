"""Tests of moetools.mask (moetools/mask/)."""
