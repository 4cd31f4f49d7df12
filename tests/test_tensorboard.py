"""The tensorboardX-backed event writer and our checked reader: framing, round trips, faults."""

import math
import os
import struct

import numpy as np
import pytest

from dcjax.runners import tensorboard as tb
from dcjax.errors import UserError


def test_masked_crc_matches_an_independent_tfrecord_implementation():
  # Masked CRC-32C value from an independent TFRecord implementation's test suite.
  assert tb.masked_crc32c(b"1234567890asdfghjkl") == 4134599430


def test_round_trip(tmp_path):
  with tb.SummaryWriter(str(tmp_path)) as w:
    for step in range(5):
      w.scalar("train/loss", 1.0 / (step + 1), step)
    w.scalar("eval/top1", np.float32(42.5), 4)
    w.scalar("eval/top1", np.asarray(43.25), np.int64(9))
    w.scalar("odd/values", float("inf"), -3)
    w.scalar("odd/values", 1e39, 2**40)  # beyond float32: stored as inf
    w.scalar("ünïcode", 0.1, 0)
  (name,) = os.listdir(tmp_path)
  host = name.split(".", 4)[-1]
  assert name.startswith("events.out.tfevents.") and host
  got = tb.read_scalars(str(tmp_path))
  assert got["train/loss"] == [(s, pytest.approx(1.0 / (s + 1), rel=1e-6)) for s in range(5)]
  assert got["eval/top1"] == [(4, 42.5), (9, 43.25)]
  assert got["odd/values"] == [(-3, math.inf), (2**40, math.inf)]
  assert got["ünïcode"] == [(0, pytest.approx(0.1, rel=1e-6))]
  assert tb.read_scalars(w.path) == got  # a file path works as well as its directory


def test_file_layout(tmp_path):
  with tb.SummaryWriter(str(tmp_path)) as w:
    w.scalar("x", 2.0, 7)
  raw = open(w.path, "rb").read()
  # First record: the file_version event, framed as length | crc | data | crc.
  (length,) = struct.unpack("<Q", raw[:8])
  assert struct.unpack("<I", raw[8:12])[0] == tb.masked_crc32c(raw[:8])
  data = raw[12:12 + length]
  assert struct.unpack("<I", raw[12 + length:16 + length])[0] == tb.masked_crc32c(data)
  first, second = tb.read_events(w.path)
  assert first.file_version == "brain.Event:2" and not first.summary.value
  assert second.step == 7 and [(v.tag, v.simple_value) for v in second.summary.value] == [("x", 2.0)]
  assert abs(second.wall_time - first.wall_time) < 60
  # Hand-checked encoding of the scalar event's summary: Summary{value{tag:"x" simple_value:2}}.
  assert list(tb.read_records(w.path))[1].endswith(
      bytes([0x2A, 0x0A, 0x0A, 0x08, 0x0A, 0x01]) + b"x" + bytes([0x15]) + struct.pack("<f", 2.0))


def test_flush_is_durable_without_close(tmp_path):
  # What a SIGKILL after an epoch relies on: flushed scalars are in the file, nothing queued.
  w = tb.SummaryWriter(str(tmp_path))
  for step in range(3):
    w.scalar("loss", float(step), step)
    w.flush()
    assert tb.read_scalars(w.path)["loss"][-1] == (step, float(step))
  w.close()


def test_flush_makes_events_visible_and_close_is_final(tmp_path):
  w = tb.SummaryWriter(str(tmp_path))
  w.scalar("a", 1.0, 1)
  w.flush()
  assert tb.read_scalars(w.path) == {"a": [(1, 1.0)]}
  w.close()
  w.close()  # idempotent
  with pytest.raises(UserError, match="closed"):
    w.scalar("a", 2.0, 2)


def test_two_writers_same_dir_get_distinct_files(tmp_path):
  with tb.SummaryWriter(str(tmp_path)) as a, tb.SummaryWriter(str(tmp_path)) as b:
    a.scalar("a", 1.0, 0)
    b.scalar("b", 2.0, 0)
  assert a.path != b.path
  assert tb.read_scalars(str(tmp_path)) == {"a": [(0, 1.0)], "b": [(0, 2.0)]}


def test_bad_input(tmp_path):
  with tb.SummaryWriter(str(tmp_path)) as w:
    with pytest.raises(UserError, match="tag"):
      w.scalar("", 1.0, 0)
    with pytest.raises(UserError, match="step"):
      w.scalar("a", 1.0, 1.5)
    with pytest.raises(UserError, match="single number"):
      w.scalar("a", np.ones(3), 0)
  with pytest.raises(UserError, match="no event file"):
    tb.read_scalars(str(tmp_path / "missing"))


def test_corruption_detected(tmp_path):
  with tb.SummaryWriter(str(tmp_path)) as w:
    w.scalar("a", 1.0, 0)
  raw = bytearray(open(w.path, "rb").read())
  bad = tmp_path / "events.out.tfevents.bad"
  raw[-6] ^= 0xFF  # inside the last record's data
  bad.write_bytes(bytes(raw))
  with pytest.raises(UserError, match="CRC"):
    tb.read_scalars(str(bad))
  bad.write_bytes(bytes(raw[:-3]))
  with pytest.raises(UserError, match="truncated"):
    tb.read_scalars(str(bad))


def test_tensorboard_reads_our_files(tmp_path):
  pytest.importorskip("tensorboard")
  from tensorboard.backend.event_processing import event_accumulator
  with tb.SummaryWriter(str(tmp_path)) as w:
    for step in range(3):
      w.scalar("loss", 0.5 * step, step)
  acc = event_accumulator.EventAccumulator(str(tmp_path))
  acc.Reload()
  assert "loss" in acc.Tags()["scalars"]
  assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_valid_framing_bad_protobuf_refused(tmp_path):
  data = b"\xff\xff\xff"  # not a protobuf message
  length = struct.pack("<Q", len(data))
  bad = tmp_path / "events.out.tfevents.garbage"
  bad.write_bytes(length + struct.pack("<I", tb.masked_crc32c(length)) + data
                  + struct.pack("<I", tb.masked_crc32c(data)))
  with pytest.raises(UserError, match="not a valid Event"):
    tb.read_scalars(str(bad))
