"""Tests of moetools.probe (moetools/probe/)."""
