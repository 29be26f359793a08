"""Benchmark harness, supervised-baseline training and published results (see benchmarks/README.md)."""
