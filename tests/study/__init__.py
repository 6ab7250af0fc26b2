"""Tests of moetools.study (moetools/study/)."""
