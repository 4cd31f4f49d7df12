"""The one exception type users see.

Everything that is the user's input being wrong (a missing dataset, an unknown name, an ipc too
large, a corrupt file, a workdir that already holds a run) raises `UserError` with a message
that says what is wrong and what to do. `main.py` prints it as one line and exits non-zero;
library users can catch it.
"""


class UserError(Exception):
  """Bad input from the user: the message is the whole explanation."""


def unknown_name(kind: str, name: str, known) -> UserError:
  """A `UserError` for a name that is not registered, listing the known ones."""
  return UserError(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")
