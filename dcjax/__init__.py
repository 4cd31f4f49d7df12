"""dcjax: dataset compression in JAX.

The data's path is the package layout: sources (read a dataset) -> scores / dynamics /
scorefile (rank examples) -> select / methods (pick examples) -> combine (PCA tiles) -> store
(write/read a compressed set) -> augment / mixing / models / protocols / train / teacher
(evaluate by training a fresh network) -> benchmark (the runner that ties them together and
writes results.json) -> report (tables and plots over many runs).
"""

__version__ = "0.1.0"
