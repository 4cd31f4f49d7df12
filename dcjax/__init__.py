"""dcjax: dataset compression in JAX.

The data's path is the layout: pure kernels at the top (scores -> select -> combine ->
augment / mixing / models -> protocols + training, the one training core; rded), host data I/O
in `dcjax.data` (sources, splits, store, scorefile), stateful loops in `dcjax.runners` (student,
dynamics, scoring, teacher, checkpoints), and the benchmark runner in `dcjax.benchmark` (the
method registry, the config adapters, the workdir policy, results.json and reports).
"""

__version__ = "0.1.0"
