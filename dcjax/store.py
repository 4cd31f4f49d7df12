"""Kept import path `dcjax.store`: the compressed-set format lives in `dcjax.data.store`."""

from dcjax.data.store import *  # noqa: F401,F403
from dcjax.data.store import read_compressed, read_manifest, write_compressed  # noqa: F401
