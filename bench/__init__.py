"""Benchmarks for issue 6 (scale & speed); see bench/README.md."""
