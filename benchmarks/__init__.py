"""Benchmarks: scripts that print figures (`python -m benchmarks.bench_inference`, `python -m benchmarks.bench_app`).

They are not tests; tests/test_benchmarks.py only checks that they run. Results: benchmarks/RESULTS.md.
"""
