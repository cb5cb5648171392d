"""Benchmarks: commands that measure and save figures (not tests)."""
