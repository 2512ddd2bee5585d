"""Benchmarks in the netns lab (scripts/bench, docs/performance.md); not collected by pytest."""
