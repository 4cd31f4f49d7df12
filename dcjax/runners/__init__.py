"""Stateful loops around the pure training core: the student runner, the k-model dynamics
(scoring) runner, the teacher stage, checkpoints, TensorBoard logs and multi-process start-up.
Every function takes explicit arguments; none reads a config."""
