"""Benchmarks printing figures measured in one run."""
