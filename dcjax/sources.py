"""Kept import path `dcjax.sources`: dataset sources live in `dcjax.data.sources`."""

from dcjax.data.sources import *  # noqa: F401,F403
from dcjax.data.sources import Source, fingerprint, load_images, open_source  # noqa: F401
