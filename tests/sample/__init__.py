"""Tests of moetools.sample (moetools/sample/)."""
