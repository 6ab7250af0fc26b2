"""Tests of moetools.demo (moetools/demo/)."""
