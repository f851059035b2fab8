"""GPU benchmarks and the scripts behind the committed results. Run each from the repository root
as a module, e.g. ``python -m benchmarks.bench_attention --help``: that puts the root on the
path, so the scripts import ``kernels`` and ``benchmarks.results_csv`` without editing it."""
