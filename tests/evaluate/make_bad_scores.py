#!/usr/bin/env python3
"""Writes the score-file corruption catalogue with h5py, plus one valid file in
a foreign style, for tests/evaluate/scores_test.cpp.

Usage: make_bad_scores.py OUT_DIR
Writes OUT_DIR/<case>.h5 and OUT_DIR/catalogue.json:
  {"bad": {"<case>.h5": "<substring the error must contain>", ...},
   "foreign": {"file": "foreign.h5", "scores": [[...]], "labels": [...], "video_ids": [...],
               "kind": "logits", "num_views": 1, "model": "foreign"}}
"""
import json
import os
import sys

import h5py
import numpy as np

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
rng = np.random.default_rng(7)
N, K = 6, 4
probs = rng.dirichlet(np.ones(K), size=N).astype(np.float32)
labels = np.array([0, 1, 2, 3, -1, 1], dtype=np.int64)
ids = [f"vid{i}" for i in range(N)]


def write(name, scores=probs, lab=labels, vid=ids, kind="probabilities", drop=(), attrs=None):
    with h5py.File(os.path.join(out, name), "w") as f:
        if "scores" not in drop:
            f.create_dataset("scores", data=scores)
        if "labels" not in drop:
            f.create_dataset("labels", data=lab)
        if "video_ids" not in drop:
            f.create_dataset("video_ids", data=np.array(vid, dtype=h5py.string_dtype()))
        if "kind" not in drop:
            f.attrs["kind"] = kind
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


bad = {}
with open(os.path.join(out, "not_hdf5.h5"), "w") as f:
    f.write("video,score\nv1,0.5\n")
bad["not_hdf5.h5"] = "not an HDF5 file"
open(os.path.join(out, "empty.h5"), "wb").close()
bad["empty.h5"] = "not an HDF5 file"
for ds in ("scores", "labels", "video_ids"):
    write(f"missing_{ds}.h5", drop=(ds,))
    bad[f"missing_{ds}.h5"] = f"missing dataset '{ds}'"
write("missing_kind.h5", drop=("kind",))
bad["missing_kind.h5"] = "missing attribute 'kind'"
nan = probs.copy(); nan[2, 1] = np.nan
write("nan.h5", scores=nan)
bad["nan.h5"] = "row 2 (video 'vid2') class 1 is nan"
inf = (probs * 3).copy(); inf[3, 0] = np.inf
write("inf.h5", scores=inf, kind="logits")
bad["inf.h5"] = "row 3 (video 'vid3') class 0 is inf"
write("dup_ids.h5", vid=ids[:4] + ["vid1", "vid5"])
bad["dup_ids.h5"] = "duplicate id 'vid1'"
write("label_range.h5", lab=np.array([0, 1, 2, 4, -1, 1]))
bad["label_range.h5"] = "'labels' row 3 (video 'vid3') is 4"
write("wrong_rank.h5", scores=probs.reshape(-1))
bad["wrong_rank.h5"] = "dataset 'scores' must be a 2-D float array"
write("labels_len.h5", lab=labels[:5])
bad["labels_len.h5"] = "dataset 'labels' must be a 1-D integer array of length N=6"
write("float_labels.h5", lab=labels.astype(np.float32))
bad["float_labels.h5"] = "dataset 'labels' must be a 1-D integer array"
write("int_ids.h5", vid=None, drop=("video_ids",))
with h5py.File(os.path.join(out, "int_ids.h5"), "a") as f:
    f.create_dataset("video_ids", data=np.arange(N))
bad["int_ids.h5"] = "dataset 'video_ids' must be a 1-D string array"
write("future_version.h5", attrs={"format_version": 99})
bad["future_version.h5"] = "format_version 99 is not supported"
write("probs_range.h5", scores=probs * 3)
bad["probs_range.h5"] = "kind is 'probabilities'"
write("bad_kind.h5", kind="softmax")
bad["bad_kind.h5"] = "attribute 'kind'"
write("no_rows.h5", scores=np.zeros((0, K), np.float32), lab=np.zeros(0, np.int64), vid=[])
bad["no_rows.h5"] = "need at least one video"

# A valid file in another exporter's style: float64 logits, int32 labels,
# fixed-length byte ids, `kind` as bytes, no optional attributes.
logits = rng.normal(size=(N, K))
with h5py.File(os.path.join(out, "foreign.h5"), "w") as f:
    f.create_dataset("scores", data=logits)
    f.create_dataset("labels", data=labels.astype(np.int32))
    f.create_dataset("video_ids", data=np.array([s.encode() for s in ids], dtype="S8"))
    f.attrs["kind"] = np.bytes_(b"logits")
with open(os.path.join(out, "foreign.h5"), "rb") as f:
    whole = f.read()
with open(os.path.join(out, "truncated.h5"), "wb") as f:
    f.write(whole[: len(whole) // 2])
bad["truncated.h5"] = "truncated file"
foreign = {"file": "foreign.h5", "scores": logits.astype(np.float32).astype(float).tolist(),
           "labels": labels.tolist(), "video_ids": ids, "kind": "logits", "num_views": 1,
           "model": "foreign"}
with open(os.path.join(out, "catalogue.json"), "w") as f:
    json.dump({"bad": bad, "foreign": foreign}, f, indent=1)
