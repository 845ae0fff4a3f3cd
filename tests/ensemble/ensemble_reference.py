#!/usr/bin/env python3
"""Brute-force numpy reference of evl_ensemble's weight search (the test oracle
and the numpy side of bench_ensemble). Independent of evl's code: reads the
files with h5py, aligns rows by video id, softmaxes logits, builds the dense
fused matrix for every weight vector on the simplex grid and ranks labels in it.

Usage: ensemble_reference.py --val A.h5 B.h5 [...] [--test ...] [--step 0.1]
                             [--json OUT.json] [--time]

Rules shared with evl (evaluate/metrics.h, ensemble/ensemble.h): weights are
counts/steps with counts ascending lexicographically; fused = sum_m w_m * p_m in
float64 in model order; class j outranks label y if f_j > f_y or (f_j == f_y and
j < y); best = max val top-1, then top-5, then closest to uniform, then first.
"""
import argparse
import itertools
import json
import time

import h5py
import numpy as np


def load(path):
    with h5py.File(path, "r") as f:
        scores = f["scores"][...].astype(np.float32)  # the schema's dtype
        labels = f["labels"][...].astype(np.int64)
        ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["video_ids"][...]]
        kind = f.attrs["kind"]
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    if kind == "logits":
        x = scores.astype(np.float64)
        e = np.exp(x - x.max(axis=1, keepdims=True))
        scores = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    return scores, labels, ids


def load_split(paths):
    files = [load(p) for p in paths]
    others = [set(f[2]) for f in files[1:]]
    ids = [i for i in files[0][2] if all(i in o for o in others)]
    probs, labels = [], np.full(len(ids), -1, dtype=np.int64)
    for scores, lab, fids in files:
        row = {v: r for r, v in enumerate(fids)}
        idx = np.array([row[i] for i in ids])
        probs.append(scores[idx].astype(np.float64))
        labels = np.where(lab[idx] >= 0, lab[idx], labels)
    return probs, labels, ids


def grid(m, steps):
    pts = []
    for head in itertools.product(range(steps + 1), repeat=m - 1):
        if sum(head) <= steps:
            pts.append(list(head) + [steps - sum(head)])
    return pts


def fuse(probs, w):
    acc = w[0] * probs[0]
    for wm, p in zip(w[1:], probs[1:]):
        acc = acc + wm * p
    return acc


def hits(fused, labels):
    keep = labels >= 0
    f, y = fused[keep], labels[keep]
    k = f.shape[1]
    fy = f[np.arange(len(y)), y][:, None]
    lower = np.arange(k)[None, :] < y[:, None]
    rank = (f > fy).sum(1) + ((f == fy) & lower).sum(1)
    return int((rank == 0).sum()), int((rank < min(5, k)).sum()), int(keep.sum())


def naive_metrics(fused, labels):
    k = fused.shape[1]
    conf = np.zeros((k, k), dtype=np.int64)
    for row, y in zip(fused, labels):
        if y >= 0:
            conf[y, int(np.argmax(row))] += 1
    counts = conf.sum(1)
    per = [conf[c, c] / counts[c] if counts[c] else None for c in range(k)]
    present = [p for p in per if p is not None]
    return {"confusion": conf.tolist(), "per_class_accuracy": per,
            "mean_class_accuracy": float(np.mean(present)) if present else None}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--val", nargs="+", required=True)
    ap.add_argument("--test", nargs="*", default=[])
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--json")
    ap.add_argument("--time", action="store_true")
    a = ap.parse_args()
    t0 = time.perf_counter()
    val = load_split(a.val)
    test = load_split(a.test) if a.test else None
    t1 = time.perf_counter()
    m, steps = len(a.val), int(round(1 / a.step))
    pts = grid(m, steps)
    rows = []
    for c in pts:
        w = [x / steps for x in c]
        row = {"counts": c, "weights": w}
        row["val_top1_hits"], row["val_top5_hits"], row["val_labelled"] = hits(fuse(val[0], w), val[1])
        if test:
            row["test_top1_hits"], row["test_top5_hits"], row["test_labelled"] = hits(
                fuse(test[0], w), test[1])
        rows.append(row)
    best = min(range(len(pts)), key=lambda p: (-rows[p]["val_top1_hits"], -rows[p]["val_top5_hits"],
                                                sum((m * x - steps) ** 2 for x in pts[p]), p))
    t2 = time.perf_counter()
    w = rows[best]["weights"]
    out = {"num_points": len(pts), "points": rows, "chosen": best, "weights": w,
           "load_seconds": t1 - t0, "search_seconds": t2 - t1}
    if a.json:
        fv = fuse(val[0], w)
        out["val_ids"] = val[2]
        out["val_fused"] = fv.tolist()
        out["val_metrics"] = naive_metrics(fv, val[1])
        if test:
            ft = fuse(test[0], w)
            out["test_ids"] = test[2]
            out["test_fused"] = ft.tolist()
            out["test_metrics"] = naive_metrics(ft, test[1])
        with open(a.json, "w") as f:
            json.dump(out, f)
    if a.time:
        print(json.dumps({"num_points": len(pts), "chosen": best, "weights": w,
                          "val_top1_hits": rows[best]["val_top1_hits"],
                          "load_seconds": t1 - t0, "search_seconds": t2 - t1}))


if __name__ == "__main__":
    main()
