"""TensorBoard scalars through `tensorboardX` (pure Python: numpy and protobuf, no TensorFlow).

The writer uses tensorboardX's synchronous `EventsWriter` rather than its `SummaryWriter`:
the latter hands events to a background thread through a multiprocessing queue, so its
`flush()` does not guarantee that an event queued just before is on disk — and a run killed
after an epoch must keep that epoch's point. Here `flush()` writes and fsyncs what was logged.
The reader checks the TFRecord framing (length and data CRCs) and parses each record as a
`tensorflow.Event` with tensorboardX's protobuf classes.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
import struct
import time
from typing import Iterator

from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto import event_pb2, summary_pb2
from tensorboardX.record_writer import masked_crc32c
from google.protobuf.message import DecodeError

from dcjax.errors import UserError

_counter = itertools.count()


class SummaryWriter:
  """Writes scalars to `logdir/events.out.tfevents.<unix time>.<host>.<pid>.<n>`.

      with SummaryWriter(workdir) as tb:
        tb.scalar("train/loss", loss, step)

  `flush()` makes the scalars so far durable (and visible to a running TensorBoard); `close()`
  (or leaving the `with`) flushes and closes. A resumed run opens a new file beside the old
  ones (the pid/counter suffix keeps two writers of one second apart); TensorBoard reads all.
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self._writer: EventsWriter | None = EventsWriter(
        os.path.join(logdir, "events"), filename_suffix=f".{os.getpid()}.{next(_counter)}")
    self.path: str = self._writer._file_name  # pylint: disable=protected-access
    self.flush()  # the header alone makes the run show up in TensorBoard

  def scalar(self, tag: str, value, step: int) -> None:
    """Record `value` (a Python/NumPy/JAX scalar; stored as float32) under `tag` at `step`."""
    if self._writer is None:
      raise UserError(f"SummaryWriter for {self.path} is closed")
    if not isinstance(tag, str) or not tag:
      raise UserError(f"scalar tag must be a non-empty string, got {tag!r}")
    try:
      step = operator.index(step)
    except TypeError:
      raise UserError(f"scalar step must be an integer, got {step!r}") from None
    try:
      value = float(value)
    except (TypeError, ValueError):
      raise UserError(f"scalar {tag!r} needs a single number, got {value!r}") from None
    try:
      struct.pack("<f", value)
    except OverflowError:  # beyond float32's range: store the infinity float32 rounding gives
      value = math.copysign(math.inf, value)
    summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
    self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def read_records(path: str) -> Iterator[bytes]:
  """The data of each TFRecord in the file `path`, verifying both CRCs (UserError if not)."""
  with open(path, "rb") as f:
    buf = f.read()
  pos = 0
  while pos < len(buf):
    if pos + 12 > len(buf):
      raise UserError(f"{path}: truncated record header at byte {pos}")
    length_bytes = buf[pos:pos + 8]
    (length,) = struct.unpack("<Q", length_bytes)
    if struct.unpack("<I", buf[pos + 8:pos + 12])[0] != masked_crc32c(length_bytes):
      raise UserError(f"{path}: corrupt record length at byte {pos} (CRC mismatch)")
    end = pos + 12 + length + 4
    if end > len(buf):
      raise UserError(f"{path}: truncated record at byte {pos}")
    data = buf[pos + 12:pos + 12 + length]
    if struct.unpack("<I", buf[end - 4:end])[0] != masked_crc32c(data):
      raise UserError(f"{path}: corrupt record data at byte {pos} (CRC mismatch)")
    yield data
    pos = end


def read_events(path: str) -> Iterator[event_pb2.Event]:
  """Each record of the event file `path` as an Event (UserError for a corrupt file)."""
  for i, data in enumerate(read_records(path)):
    try:
      yield event_pb2.Event.FromString(data)
    except DecodeError as e:
      raise UserError(f"{path}: record {i} is not a valid Event ({e})") from None


def event_files(path: str) -> list[str]:
  """`path` itself if it is a file, else the *tfevents* files directly in it, sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise UserError(f"no event file or directory at {path}")
  return sorted(os.path.join(path, n) for n in os.listdir(path) if "tfevents" in n)


def read_scalars(path: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} in write order, from an event file or a directory of them
  (simple_value scalars; other summary kinds are skipped)."""
  out: dict[str, list[tuple[int, float]]] = {}
  for file in event_files(path):
    for event in read_events(file):
      for v in event.summary.value:
        if v.WhichOneof("value") == "simple_value":
          out.setdefault(v.tag, []).append((event.step, v.simple_value))
  return out
