"""cfiguard's benchmark suite: runtime overhead, rewrite cost and dynamic guard counts.

Entry point: `python -m benchmarks.run` (see benchmarks/run.py and docs/performance.md). Not part of the
installed package: it measures cfiguard from the outside, through its command line.
"""
