"""Benchmarks named in DESIGN.md; see :mod:`webaccel.bench.core` for the contract."""
