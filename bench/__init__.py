"""Benchmarks: ``python -m bench.<name>`` prints one summary line and writes
bench/results/<name>.json."""
