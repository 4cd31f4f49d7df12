"""A minimal TensorBoard scalar writer and reader, with neither TensorFlow nor `tensorboard`.

An event file is a TFRecord file: a sequence of records, each framed as

    uint64 length | uint32 masked_crc32c(length) | data[length] | uint32 masked_crc32c(data)

(little-endian), where masked_crc = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2**32). Each
record holds one `tensorflow.Event` protobuf, encoded here by hand with only the fields needed:

    Event:         wall_time = 1 (double), step = 2 (int64), file_version = 3 (string),
                   summary = 5 (Summary)
    Summary:       value = 1 (repeated Summary.Value)
    Summary.Value: tag = 1 (string), simple_value = 2 (float)

The first event carries file_version "brain.Event:2", which TensorBoard uses to recognise the
file. Scalars are stored as `simple_value` (float32), which TensorBoard's scalar dashboard reads.
"""

from __future__ import annotations

import math
import operator
import os
import socket
import struct
import time
from typing import BinaryIO, Iterator

from dcjax.errors import UserError

FILE_VERSION = "brain.Event:2"
_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1


# ---- CRC32C (Castagnoli), reflected polynomial 0x82F63B78, byte-at-a-time table ----

def _crc_table() -> tuple[int, ...]:
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    table.append(crc)
  return tuple(table)


_TABLE = _crc_table()


def crc32c(data: bytes, crc: int = 0) -> int:
  """CRC-32C of `data` (continuing from `crc`, the CRC of preceding bytes), as an int < 2**32.

  Pure Python: event records are tens of bytes, so a table loop is fast enough and avoids a
  compiled dependency.
  """
  crc ^= _U32
  table = _TABLE
  for b in data:
    crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
  return crc ^ _U32


def masked_crc32c(data: bytes) -> int:
  """TFRecord's masked CRC-32C: masking keeps the CRC of data that embeds CRCs well-behaved."""
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def frame_record(data: bytes) -> bytes:
  """One TFRecord: length, its masked CRC, the data, the data's masked CRC."""
  length = struct.pack("<Q", len(data))
  return (length + struct.pack("<I", masked_crc32c(length)) + data
          + struct.pack("<I", masked_crc32c(data)))


# ---- protobuf wire format, just the pieces an Event needs ----

def _varint(n: int) -> bytes:
  n &= _U64  # negative int64s are encoded as their 64-bit two's complement (10 bytes)
  out = bytearray()
  while n >= 0x80:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
  return _varint(field << 3 | wire_type)


def _bytes_field(field: int, payload: bytes) -> bytes:
  return _key(field, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int = 0, *, file_version: str | None = None,
                 scalars: tuple[tuple[str, float], ...] = ()) -> bytes:
  """Serialize an Event holding either `file_version` or a Summary of simple_value scalars."""
  out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
  if file_version is not None:
    out += _bytes_field(3, file_version.encode())
  if scalars:
    summary = b"".join(
        _bytes_field(1, _bytes_field(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value))
        for tag, value in scalars)
    out += _bytes_field(5, summary)
  return out


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
  result = shift = 0
  while True:
    if pos >= len(buf) or shift > 63:
      raise ValueError("bad varint")
    b = buf[pos]
    pos += 1
    result |= (b & 0x7F) << shift
    shift += 7
    if not b & 0x80:
      return result, pos


def _fields(buf: bytes) -> Iterator[tuple[int, int, int | bytes]]:
  """(field number, wire type, value) for each field of a protobuf message: an int for varints,
  raw bytes for fixed64/fixed32/length-delimited. Raises ValueError on malformed input."""
  pos = 0
  while pos < len(buf):
    key, pos = _read_varint(buf, pos)
    field, wire = key >> 3, key & 7
    if wire == 0:
      value, pos = _read_varint(buf, pos)
    elif wire in (1, 5):
      size = 8 if wire == 1 else 4
      value, pos = buf[pos:pos + size], pos + size
    elif wire == 2:
      size, pos = _read_varint(buf, pos)
      value, pos = buf[pos:pos + size], pos + size
    else:
      raise ValueError(f"unsupported wire type {wire}")
    if pos > len(buf):
      raise ValueError("message truncated")
    yield field, wire, value


def decode_event(data: bytes) -> dict:
  """Parse an Event into {wall_time, step, file_version?, scalars: [(tag, value)]}; fields and
  summary values this module does not write (images, tensors, ...) are skipped."""
  event: dict = dict(wall_time=0.0, step=0, scalars=[])
  for field, wire, value in _fields(data):
    if field == 1 and wire == 1:
      event["wall_time"] = struct.unpack("<d", value)[0]
    elif field == 2 and wire == 0:
      event["step"] = value - (1 << 64) if value >= 1 << 63 else value
    elif field == 3 and wire == 2:
      event["file_version"] = value.decode()
    elif field == 5 and wire == 2:
      for f, w, v in _fields(value):
        if f != 1 or w != 2:
          continue
        tag, simple = None, None
        for vf, vw, vv in _fields(v):
          if vf == 1 and vw == 2:
            tag = vv.decode()
          elif vf == 2 and vw == 5:
            simple = struct.unpack("<f", vv)[0]
        if tag is not None and simple is not None:
          event["scalars"].append((tag, simple))
  return event


# ---- writer ----

class SummaryWriter:
  """Writes scalars to `logdir/events.out.tfevents.<unix time>.<host>` for TensorBoard.

      with SummaryWriter(workdir) as tb:
        tb.scalar("train/loss", loss, step)

  Records are buffered; `flush()` makes them visible to a running TensorBoard, `close()` (or
  leaving the `with`) flushes and closes. Not thread-safe; one writer per process and logdir.
  """

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    self.path = ""
    self._file: BinaryIO | None = None
    stem = os.path.join(logdir, f"events.out.tfevents.{int(time.time()):010d}."
                                f"{socket.gethostname()}")
    # Exclusive create: two writers started in the same second must not clobber each other,
    # so a clash gets a pid/counter suffix (TensorBoard reads every *tfevents* file).
    for n in range(100):
      path = stem if n == 0 else f"{stem}.{os.getpid()}.{n}"
      try:
        self._file = open(path, "xb")
        self.path = path
        break
      except FileExistsError:
        continue
    if self._file is None:
      raise UserError(f"could not create a new event file in {logdir}")
    self._write(encode_event(time.time(), 0, file_version=FILE_VERSION))
    self.flush()  # the header alone makes the run show up in TensorBoard

  def _write(self, event: bytes) -> None:
    if self._file is None:
      raise UserError(f"SummaryWriter for {self.path} is closed")
    self._file.write(frame_record(event))

  def scalar(self, tag: str, value, step: int) -> None:
    """Record `value` (a Python/NumPy/JAX scalar; stored as float32) under `tag` at `step`."""
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
    self._write(encode_event(time.time(), step, scalars=((tag, value),)))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None

  def __enter__(self) -> SummaryWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# ---- reader ----

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
    (length_crc,) = struct.unpack("<I", buf[pos + 8:pos + 12])
    if length_crc != masked_crc32c(length_bytes):
      raise UserError(f"{path}: corrupt record length at byte {pos} (CRC mismatch)")
    end = pos + 12 + length + 4
    if end > len(buf):
      raise UserError(f"{path}: truncated record at byte {pos}")
    data = buf[pos + 12:pos + 12 + length]
    if struct.unpack("<I", buf[end - 4:end])[0] != masked_crc32c(data):
      raise UserError(f"{path}: corrupt record data at byte {pos} (CRC mismatch)")
    yield data
    pos = end


def event_files(path: str) -> list[str]:
  """`path` itself if it is a file, else the *tfevents* files directly in it, sorted."""
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise UserError(f"no event file or directory at {path}")
  return sorted(os.path.join(path, n) for n in os.listdir(path) if "tfevents" in n)


def read_scalars(path: str) -> dict[str, list[tuple[int, float]]]:
  """{tag: [(step, value), ...]} in write order, from an event file or a directory of them.

  Raises UserError for a corrupt or truncated file (CRC mismatch, bad protobuf).
  """
  out: dict[str, list[tuple[int, float]]] = {}
  for file in event_files(path):
    for i, data in enumerate(read_records(file)):
      try:
        event = decode_event(data)
      except (ValueError, UnicodeDecodeError, struct.error) as e:
        raise UserError(f"{file}: record {i} is not a valid Event ({e})") from None
      for tag, value in event["scalars"]:
        out.setdefault(tag, []).append((event["step"], value))
  return out
