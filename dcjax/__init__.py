"""dcjax: dataset compression in JAX.

The data's path is the package layout: sources (read a dataset) -> select (pick examples) ->
store (write/read a compressed set) -> augment / models / train (evaluate by training a fresh
network) -> benchmark (the runner that ties them together and writes results.json).
"""

__version__ = "0.1.0"
