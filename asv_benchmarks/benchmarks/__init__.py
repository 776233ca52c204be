"""asv benchmarks of numlayers: one module per layer family, one class per layer.

Shared helpers live in :mod:`.common`; ``NUMLAYERS_BENCH_TINY=1`` shrinks every
size so ``tests/test_benchmarks.py`` can run each benchmark once in seconds.
"""
