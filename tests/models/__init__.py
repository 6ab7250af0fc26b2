"""Tests of moetools.models (moetools/models/)."""
