"""Tests of moetools.report (moetools/report/)."""
