"""Tests of moetools.select (moetools/select/)."""
