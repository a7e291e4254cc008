"""Benchmarks: `make bench` prints one table of figures (no timing assertions anywhere)."""
