"""Benchmarks: commands that print figures and ratios against a baseline from the same run.
They are not tests; nothing fails on wall-clock time."""
