"""Tests for dcjax.scorefile: round trip with provenance, atomic writes, refusals of files made
for other data, and importing score arrays made elsewhere."""

import json
import os

import numpy as np
import pytest

import dcjax
from dcjax.data import scorefile
from dcjax.errors import UserError

FP = "f" * 64
CONFIG = dict(scores=["el2n", "aum"], model="convnet", epochs=20, k=4, seed=0,
              recipe=dict(optimizer="adamw", lr=1e-3, batch_size=128))


def some_scores(n=10, seed=0):
  rng = np.random.default_rng(seed)
  return {"el2n": rng.random(n).astype(np.float32), "aum": rng.normal(size=n)}


def save(path, scores=None, **kw):
  args = dict(dataset="fashion_mnist", split="train", fingerprint=FP, score_config=CONFIG)
  scorefile.save_scores(str(path), some_scores() if scores is None else scores,
                        **dict(args, **kw))


def test_round_trip_with_provenance(tmp_path):
  path = tmp_path / "sub" / "s.npz"  # the directory is created
  scores = some_scores()
  save(path, scores)
  loaded, meta = scorefile.load_scores(str(path), fingerprint=FP, n=10)
  assert list(loaded) == ["el2n", "aum"]
  for name, a in scores.items():
    assert loaded[name].dtype == np.float32
    np.testing.assert_array_equal(loaded[name], a.astype(np.float32))
  assert meta["dataset"] == "fashion_mnist" and meta["split"] == "train"
  assert meta["fingerprint"] == FP and meta["num_rows"] == 10
  assert meta["score_config"] == CONFIG and meta["dcjax_version"] == dcjax.__version__
  assert meta["created"].endswith("+00:00")
  # Arrays only, no pickle; the metadata is JSON stored as bytes.
  with np.load(path, allow_pickle=False) as npz:
    assert sorted(npz.files) == ["__meta__", "aum", "el2n"]
    assert json.loads(npz["__meta__"].tobytes())["format"] == "dcjax.scores"
  assert [p for p in os.listdir(path.parent)] == ["s.npz"]  # no temporary left behind


def test_indices_put_rows_in_dataset_order(tmp_path):
  order = np.array([3, 0, 2, 1])
  save(tmp_path / "s.npz", {"x": np.array([30.0, 0.0, 20.0, 10.0])}, indices=order)
  loaded, _ = scorefile.load_scores(str(tmp_path / "s.npz"), fingerprint=FP, n=4)
  np.testing.assert_array_equal(loaded["x"], [0, 10, 20, 30])
  # Rows covering only part of a larger dataset are refused, naming how many are missing.
  with pytest.raises(UserError, match="2 of the dataset's 6 examples have no score, e.g. "
                                      "examples \\[4, 5\\]"):
    scorefile.load_scores(str(tmp_path / "s.npz"), fingerprint=FP, n=6)
  with pytest.raises(UserError, match="index 3 \\(row 0\\) is outside the dataset's 3 examples"):
    scorefile.load_scores(str(tmp_path / "s.npz"), fingerprint=FP, n=3)


class Crash(Exception):
  pass


@pytest.mark.parametrize("where", ["mid_write", "before_rename"])
def test_crash_mid_write_leaves_the_previous_file(tmp_path, monkeypatch, where):
  path = tmp_path / "s.npz"
  save(path, some_scores(seed=0))
  before = path.read_bytes()

  if where == "mid_write":
    def crashing_write(f, arrays):
      f.write(b"PK\x03\x04 half a zip")  # some bytes reach the temporary file, then a crash
      raise Crash

    monkeypatch.setattr(scorefile, "_write_npz", crashing_write)
  else:
    def crashing_replace(src, dst):
      raise Crash

    monkeypatch.setattr(scorefile.os, "replace", crashing_replace)
  with pytest.raises(Crash):
    save(path, some_scores(seed=1))
  monkeypatch.undo()
  assert path.read_bytes() == before
  assert os.listdir(tmp_path) == ["s.npz"]  # the temporary file is gone
  loaded, _ = scorefile.load_scores(str(path), fingerprint=FP, n=10)
  np.testing.assert_array_equal(loaded["el2n"], some_scores(seed=0)["el2n"])


def test_refuses_other_data(tmp_path):
  path = str(tmp_path / "s.npz")
  save(path)
  with pytest.raises(UserError, match="holds scores for 10 examples, but the dataset has 11"):
    scorefile.load_scores(path, fingerprint=FP, n=11)
  with pytest.raises(UserError, match=f"its fingerprint is {FP}, this dataset's is abc"):
    scorefile.load_scores(path, fingerprint="abc", n=10)
  with pytest.raises(UserError, match="does not exist"):
    scorefile.load_scores(str(tmp_path / "none.npz"), fingerprint=FP, n=10)
  np.savez(tmp_path / "plain.npz", x=np.zeros(10))
  with pytest.raises(UserError, match="not a dcjax score file"):
    scorefile.load_scores(str(tmp_path / "plain.npz"), fingerprint=FP, n=10)
  (tmp_path / "junk.npz").write_bytes(b"not a zip")
  with pytest.raises(UserError, match="not a readable score file"):
    scorefile.load_scores(str(tmp_path / "junk.npz"), fingerprint=FP, n=10)


def test_nan_is_refused_naming_up_to_5_indices(tmp_path):
  s = np.arange(10, dtype=np.float32)
  s[[1, 2, 4, 6, 7, 9]] = np.nan
  with pytest.raises(UserError, match="NaN at 6 row\\(s\\) \\[1, 2, 4, 6, 7, ...\\]; not saved"):
    save(tmp_path / "s.npz", {"el2n": s})
  assert not (tmp_path / "s.npz").exists()
  # A file that holds NaN anyway (written by hand) is refused on load.
  meta = dict(format="dcjax.scores", format_version=1, fingerprint=FP, num_rows=10)
  np.savez(tmp_path / "h.npz", el2n=s,
           __meta__=np.frombuffer(json.dumps(meta).encode(), np.uint8))
  with pytest.raises(UserError, match="'el2n' is NaN at 6 example\\(s\\), indices "
                                      "\\[1, 2, 4, 6, 7, ...\\]"):
    scorefile.load_scores(str(tmp_path / "h.npz"), fingerprint=FP, n=10)


@pytest.mark.parametrize("kw,match", [
    (dict(scores={}), "at least one score"),
    (dict(scores={"__meta__": np.zeros(3)}), "score name '__meta__' must be"),
    (dict(scores={"a": np.zeros(3), "b": np.zeros(4)}), "'a' has 3, 'b' has 4"),
    (dict(scores={"a": np.zeros((3, 2))}), "must be numbers \\[N\\]"),
    (dict(score_config=dict(f=object())), "score_config must be JSON-serialisable"),
    (dict(indices=np.array([0, 0, 1, 2, 3, 4, 5, 6, 7, 8])), "\\[0\\] occur more than once"),
    (dict(fingerprint=""), "fingerprint must be a non-empty string"),
])
def test_save_refuses_bad_input_writing_nothing(tmp_path, kw, match):
  with pytest.raises(UserError, match=match):
    save(tmp_path / "s.npz", **kw)
  assert os.listdir(tmp_path) == []


def test_score_path_is_readable_and_unique_per_config(tmp_path):
  p = scorefile.score_path(str(tmp_path), "folder:/data/imagenet", "train", CONFIG)
  name = os.path.basename(p)
  assert os.path.dirname(p) == str(tmp_path)
  assert name.startswith("folder_data_imagenet-train-el2n+aum-convnet-e20-k4-s0-")
  assert name.endswith(".npz") and len(name) == len(
      "folder_data_imagenet-train-el2n+aum-convnet-e20-k4-s0-") + 12 + 4
  assert p == scorefile.score_path(str(tmp_path), "folder:/data/imagenet", "train",
                                   dict(reversed(CONFIG.items())))  # key order is irrelevant
  others = [("folder:/data/imagenet", "test", CONFIG),
            ("folder:/data/imagenet", "train", dict(CONFIG, seed=1)),
            ("folder:/data/imagenet", "train", dict(CONFIG, recipe=dict(CONFIG["recipe"], lr=1))),
            ("folder:/data/imagenet2", "train", CONFIG)]
  paths = {scorefile.score_path(str(tmp_path), *o) for o in others}
  assert len(paths) == 4 and p not in paths


# ---------------------------------------------------------------------------------------------
# Import.


def test_import_plain_arrays_without_index(tmp_path):
  a = np.array([0.5, 1.5, -2.0, 3.0])
  np.save(tmp_path / "a.npy", a)
  np.savez(tmp_path / "a.npz", forgetting=a, other=a + 1)
  np.savetxt(tmp_path / "a.txt", a)
  (tmp_path / "a.csv").write_text("idx,forgetting\n0,0.5\n1,1.5\n2,-2.0\n3,3.0\n")
  (tmp_path / "b.csv").write_text("0.5\n1.5\n-2.0\n3.0\n")
  for f in ("a.npy", "a.npz", "a.txt", "a.csv", "b.csv"):
    got = scorefile.import_scores(str(tmp_path / f), None, n=4, fingerprint=FP,
                                  name="forgetting")
    assert got.dtype == np.float32 and got.shape == (4,), f
    np.testing.assert_array_equal(got, a.astype(np.float32), err_msg=f)
  with pytest.raises(UserError, match="has 4 rows, but the dataset has 5 examples"):
    scorefile.import_scores(str(tmp_path / "a.npy"), None, n=5, fingerprint=FP, name="x")
  with pytest.raises(UserError, match="holds arrays forgetting, other; name one"):
    scorefile.import_scores(str(tmp_path / "a.npz"), None, n=4, fingerprint=FP, name="el2n")
  with pytest.raises(UserError, match="has 2 columns; .*column named 'el2n' "
                                      "\\(header: idx, forgetting\\)"):
    scorefile.import_scores(str(tmp_path / "a.csv"), None, n=4, fingerprint=FP, name="el2n")


def test_import_with_index_file(tmp_path):
  np.save(tmp_path / "s.npy", np.array([30.0, 10.0, 0.0]))
  np.savetxt(tmp_path / "i.txt", [2, 0, 1], fmt="%d")  # row r scores example i[r]
  np.save(tmp_path / "i.npy", np.array([2, 0, 1]))
  (tmp_path / "i.csv").write_text("index\n2\n0\n1\n")
  for index in ("i.txt", "i.npy", "i.csv"):
    got = scorefile.import_scores(str(tmp_path / "s.npy"), str(tmp_path / index), n=3,
                                  fingerprint=FP, name="el2n")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [10, 0, 30], err_msg=index)
  # A dataset of 5: examples 3 and 4 are not covered by the index file.
  with pytest.raises(UserError, match="2 of the dataset's 5 examples have no score, e.g. "
                                      "examples \\[3, 4\\]"):
    scorefile.import_scores(str(tmp_path / "s.npy"), str(tmp_path / "i.npy"), n=5,
                            fingerprint=FP, name="el2n")


def test_import_index_file_refusals(tmp_path):
  np.save(tmp_path / "s.npy", np.array([30.0, 10.0, 0.0, 5.0]))
  np.save(tmp_path / "full.npy", np.array([3, 1, 0, 2]))
  got = scorefile.import_scores(str(tmp_path / "s.npy"), str(tmp_path / "full.npy"), n=4,
                                fingerprint=FP, name="el2n")
  np.testing.assert_array_equal(got, [0, 10, 5, 30])
  cases = {"short.npy": ([3, 1, 0], "must be \\[M\\] with M=4"),
           "dup.npy": ([3, 1, 1, 0], "\\[1\\] occur more than once"),
           "neg.npy": ([3, -1, 2, 0], "must be >= 0; rows \\[1\\]"),
           "big.npy": ([3, 1, 0, 9], "index 9 \\(row 3\\) is outside the dataset's 4 examples"),
           "frac.npy": ([3, 1.5, 0, 2], "whole numbers; rows \\[1\\]")}
  for f, (idx, match) in cases.items():
    np.save(tmp_path / f, np.array(idx))
    with pytest.raises(UserError, match=match):
      scorefile.import_scores(str(tmp_path / "s.npy"), str(tmp_path / f), n=4, fingerprint=FP,
                              name="el2n")


def test_import_refusals(tmp_path):
  (tmp_path / "s.json").write_text("[1, 2]")
  with pytest.raises(UserError, match="unknown extension '.json'; use one of .npy, .npz, .txt, "
                                      ".csv"):
    scorefile.import_scores(str(tmp_path / "s.json"), None, n=2, fingerprint=FP, name="x")
  with pytest.raises(UserError, match="does not exist"):
    scorefile.import_scores(str(tmp_path / "none.npy"), None, n=2, fingerprint=FP, name="x")
  np.save(tmp_path / "nan.npy", np.array([1.0, np.nan]))
  with pytest.raises(UserError, match="'x' is NaN at 1 example\\(s\\), indices \\[1\\]"):
    scorefile.import_scores(str(tmp_path / "nan.npy"), None, n=2, fingerprint=FP, name="x")
  # An object-dtype .npy (whose payload would be a pickle), written by hand: refused unread.
  with open(tmp_path / "obj.npy", "wb") as f:
    np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False,
                                             "shape": (2,)})
    f.write(b"not read")
  with pytest.raises(UserError, match="not readable"):  # no pickle
    scorefile.import_scores(str(tmp_path / "obj.npy"), None, n=2, fingerprint=FP, name="x")
  np.save(tmp_path / "m.npy", np.zeros((2, 3)))
  with pytest.raises(UserError, match="one number per row \\[M\\], got float64 \\(2, 3\\)"):
    scorefile.import_scores(str(tmp_path / "m.npy"), None, n=2, fingerprint=FP, name="x")


def test_import_reads_dcjax_score_files_checking_the_fingerprint(tmp_path):
  path = str(tmp_path / "s.npz")
  save(path)
  got = scorefile.import_scores(path, None, n=10, fingerprint=FP, name="aum")
  np.testing.assert_array_equal(got, some_scores()["aum"].astype(np.float32))
  with pytest.raises(UserError, match="fingerprint is"):
    scorefile.import_scores(path, None, n=10, fingerprint="other", name="aum")
  with pytest.raises(UserError, match="has no score 'x'; it has el2n, aum"):
    scorefile.import_scores(path, None, n=10, fingerprint=FP, name="x")
