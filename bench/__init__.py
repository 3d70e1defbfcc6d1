"""Benchmark scripts (``python bench/NAME.py``); a package so that ``import bench.NAME`` works from the
repository root, as tests/unit/test_bench.py does."""
