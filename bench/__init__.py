"""Benchmarks of issue #8, run on demand: `python -m bench.run` (see bench/README.md)."""
