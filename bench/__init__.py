"""Benchmarks of the gateway against peers measured in the same run (see bench/README.md)."""
