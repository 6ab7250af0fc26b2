"""Tests of moetools.streams (moetools/streams/)."""
