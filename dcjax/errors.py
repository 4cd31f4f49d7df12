"""Errors: ValueError/TypeError from library code, `UserError` at the command-line boundary.

Pure kernels (scores, select, combine, augment, mixing, models, protocols, the training core)
raise ValueError or TypeError for bad arguments, as any Python library does. Data I/O and the
runner raise `UserError` (a ValueError) for the user's input being wrong — a missing dataset,
an ipc too large, a corrupt file, a workdir that already holds a run — with a message that says
what is wrong and what to do; the runner turns a kernel's ValueError raised while it checks and
prepares a run into a UserError too (`user_input`). `main.py` prints a UserError as one line and
exits 2.
"""

from __future__ import annotations

import contextlib


class UserError(ValueError):
  """Bad input from the user: the message is the whole explanation."""


def unknown(kind: str, name, known) -> ValueError:
  """A ValueError for a name that is not registered, listing the known ones."""
  return ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(map(str, known)))}")


def unknown_name(kind: str, name, known) -> UserError:
  """A `UserError` for a name that is not registered, listing the known ones."""
  return UserError(str(unknown(kind, name, known)))


@contextlib.contextmanager
def user_input(prefix: str = ""):
  """Re-raise a ValueError/TypeError from the enclosed calls as a UserError (with `prefix`):
  for the runner's checking and preparing stages, where such an error is the user's input."""
  try:
    yield
  except UserError:
    raise
  except (ValueError, TypeError) as e:
    raise UserError(f"{prefix}{e}") from e
