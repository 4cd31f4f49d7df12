"""Kept import path `dcjax.train`: the student runner lives in `dcjax.runners.student` and the
pure training core in `dcjax.training`."""

from dcjax.runners.student import Student, evaluate, make_mesh, train_student  # noqa: F401
