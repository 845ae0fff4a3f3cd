#!/usr/bin/python3
"""evl.scores (evl's C++ score-file reader and writer) against h5py: what
evl.scores.write produces, h5py reads as evaluate/SCORES.md says; what h5py
writes in that schema (and evl_eval wrote), evl.scores.read returns; bad files
and bad arguments raise evl.Error naming the file and what is wrong.

Usage: scores_test.py FIXTURE_DIR  (PYTHONPATH holds the built package)
"""
import os
import shutil
import sys
import tempfile
import unittest

import h5py
import numpy as np

import evl

FIXTURE = None


class ScoresTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="evl_py_scores_")

    def tearDown(self):
        shutil.rmtree(self.tmp)

    def test_reads_what_evl_eval_wrote(self):
        path = os.path.join(FIXTURE, "scores-qk-fp16.h5")
        s = evl.scores.read(path)
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(s.scores, f["scores"][...])
            np.testing.assert_array_equal(s.labels, f["labels"][...])
            self.assertEqual(s.video_ids, [v.decode() for v in f["video_ids"][...]])
            self.assertEqual(s.kind, f.attrs["kind"])
            self.assertEqual(s.num_views, f.attrs["num_views"])
            self.assertEqual(s.model, f.attrs["model"])
            self.assertEqual(s.evl_version, f.attrs["evl_version"])
        self.assertEqual(s.scores.dtype, np.float32)
        self.assertEqual(s.labels.dtype, np.int64)

    def test_round_trip_with_h5py(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(size=(5, 7)).astype(np.float64)  # float64 in: stored float32
        labels = np.array([0, 6, -1, 3, 2], dtype=np.int32)
        ids = ["a/v1.mp4", "b/v2.mp4", "ünï.mp4", "d", "e"]
        path = os.path.join(self.tmp, "w.h5")
        evl.scores.write(path, logits, labels, ids, kind="logits", num_views=30, model="tsm")
        with h5py.File(path, "r") as f:
            self.assertEqual(f["scores"].dtype, np.float32)
            np.testing.assert_array_equal(f["scores"][...], logits.astype(np.float32))
            self.assertEqual(f["labels"].dtype, np.int64)
            np.testing.assert_array_equal(f["labels"][...], labels)
            self.assertEqual([v.decode() for v in f["video_ids"][...]], ids)
            self.assertEqual((f.attrs["kind"], f.attrs["num_views"], f.attrs["model"]),
                             ("logits", 30, "tsm"))
        back = evl.scores.read(path)
        np.testing.assert_array_equal(back.scores, logits.astype(np.float32))
        self.assertEqual((back.video_ids, back.kind, back.num_views, back.model),
                         (ids, "logits", 30, "tsm"))
        # h5py's file in the schema, read back; model defaults to the file's stem
        probs = rng.dirichlet(np.ones(4), size=3).astype(np.float32)
        path2 = os.path.join(self.tmp, "mine.h5")
        with h5py.File(path2, "w") as f:
            f.create_dataset("scores", data=probs)
            f.create_dataset("labels", data=np.array([1, 2, 3], dtype=np.int64))
            f.create_dataset("video_ids", data=np.array(["x", "y", "z"],
                                                        dtype=h5py.string_dtype()))
            f.attrs["kind"] = "probabilities"
        s = evl.scores.read(path2)
        np.testing.assert_array_equal(s.scores, probs)
        self.assertEqual((s.model, s.num_views, s.kind), ("mine", 1, "probabilities"))
        evl.scores.write(os.path.join(self.tmp, "again.h5"), s)  # a ScoreFile writes back
        np.testing.assert_array_equal(evl.scores.read(os.path.join(self.tmp, "again.h5")).scores,
                                      probs)

    def test_bad_input_is_a_clear_error(self):
        path = os.path.join(self.tmp, "bad.h5")
        ok = dict(scores=np.full((2, 3), 1 / 3), labels=[0, 1], video_ids=["a", "b"])
        cases = [(dict(ok, scores=np.array([[np.nan, 0, 1], [0, 0, 1]])), "nan"),
                 (dict(ok, video_ids=["a", "a"]), "video_ids"),
                 (dict(ok, labels=[0, 3]), "labels"),
                 (dict(ok, scores=np.full((2, 3), 2.0)), "scores"),
                 (dict(ok, video_ids=["a"]), "video_ids")]
        for args, what in cases:
            with self.subTest(what=what):
                with self.assertRaises(evl.Error) as e:
                    evl.scores.write(path, **args)
                self.assertIn(what, str(e.exception))
                self.assertIn("bad.h5", str(e.exception))
        with self.assertRaises(evl.Error):
            evl.scores.write(path, **ok, kind="probabilites")
        with self.assertRaises(evl.Error) as e:
            evl.scores.read(os.path.join(self.tmp, "missing.h5"))
        self.assertIn("missing.h5", str(e.exception))
        with h5py.File(path, "w") as f:  # no 'kind'
            f.create_dataset("scores", data=np.zeros((1, 2), np.float32))
            f.create_dataset("labels", data=np.zeros(1, np.int64))
            f.create_dataset("video_ids", data=np.array(["a"], dtype=h5py.string_dtype()))
        with self.assertRaises(evl.Error) as e:
            evl.scores.read(path)
        self.assertIn("kind", str(e.exception))


if __name__ == "__main__":
    FIXTURE = sys.argv.pop(1)
    unittest.main()
