"""The `skelcl bench` CPU cases as a pytest-benchmark module (the same test the command runs).

    python -m pytest bench/bench_suite.py --benchmark-enable [-k augment] [--benchmark-json F]
    SKELCL_BENCH_QUICK=1 python -m pytest bench/bench_suite.py --benchmark-enable     # CI sizes

Each test times one case (skelcl/benchmark/cases.py) with its variants interleaved round by round; the
per-variant figures are in each benchmark's extra_info["skelcl"] (`skelcl bench` turns them into its
table and JSON). Environment variables: see skelcl/benchmark/suite.py.
"""

from skelcl.benchmark.suite import test_case  # noqa: F401
