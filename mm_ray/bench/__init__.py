"""Benchmarks that print a table and a ratio against a baseline measured in the same run."""
