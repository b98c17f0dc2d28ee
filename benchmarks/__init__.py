"""Benchmarks: this driver against the Go reference hostpath driver (see docs/benchmarks.md)."""
