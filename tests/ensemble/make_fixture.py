#!/usr/bin/env python3
"""Writes an ensemble fixture with h5py: M models' val and test score files.

Usage: make_fixture.py OUT_DIR [--models M] [--n N] [--k K] [--seed S]

Models differ in how they are written, to check that evl reads any h5py export:
  model 0: evl-style probabilities, float32, vlen UTF-8 ids, int64 labels;
  model 1: an "other model": float64 logits, int32 labels, fixed-length byte ids,
           `kind` as a bytes attribute, no num_views/model attributes, rows shuffled;
  model 2+: float32 logits, rows reversed.
Each model sees the label with its own noise, so weighted fusions differ.
The test split has 5% unlabelled videos (-1). Writes OUT_DIR/{val,test}_<m>.h5.
"""
import argparse
import os

import h5py
import numpy as np


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def write(path, m, ids, labels, logits, rng):
    n = len(ids)
    order = np.arange(n)
    if m == 1:
        order = rng.permutation(n)
    elif m >= 2:
        order = order[::-1]
    ids, labels, logits = [ids[i] for i in order], labels[order], logits[order]
    with h5py.File(path, "w") as f:
        if m == 0:
            f.create_dataset("scores", data=softmax(logits.astype(np.float64)).astype(np.float32))
            f.create_dataset("labels", data=labels.astype(np.int64))
            f.create_dataset("video_ids", data=np.array(ids, dtype=h5py.string_dtype()))
            f.attrs["kind"] = "probabilities"
            f.attrs["num_views"] = 3
            f.attrs["model"] = "evl-b16"
            f.attrs["evl_version"] = "python-fixture"
        elif m == 1:
            f.create_dataset("scores", data=logits.astype(np.float64))
            f.create_dataset("labels", data=labels.astype(np.int32))
            f.create_dataset("video_ids", data=np.array([s.encode() for s in ids], dtype="S12"))
            f.attrs["kind"] = np.bytes_(b"logits")
        else:
            f.create_dataset("scores", data=logits.astype(np.float32))
            f.create_dataset("labels", data=labels.astype(np.int64))
            f.create_dataset("video_ids", data=np.array(ids, dtype=h5py.string_dtype()))
            f.attrs["kind"] = "logits"
            f.attrs["model"] = f"model{m}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    os.makedirs(a.out, exist_ok=True)
    for split, n in (("val", a.n), ("test", a.n + a.n // 3)):
        labels = rng.integers(0, a.k, size=n)
        ids = [f"{split}{i:05d}" for i in range(n)]
        if split == "test":
            labels[rng.random(n) < 0.05] = -1
        truth = np.where(labels >= 0, labels, rng.integers(0, a.k, size=n))
        for m in range(a.models):
            logits = rng.normal(0.0, 1.0 + 0.3 * m, size=(n, a.k))
            logits[np.arange(n), truth] += rng.normal(1.2 + 0.2 * m, 1.0, size=n)
            write(os.path.join(a.out, f"{split}_{m}.h5"), m, ids, labels, logits, rng)


if __name__ == "__main__":
    main()
