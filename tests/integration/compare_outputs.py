#!/usr/bin/python3
"""Exact comparisons of evl outputs for the integration tests (exit 1 + reason on any difference).

  compare_outputs.py caches A B        every record of cache A is byte-identical to B's (same keys,
                                       whatever the shard layout), and the manifests agree on
                                       everything but creation time, tool version and shard list
  compare_outputs.py scores A.h5 B.h5  score files: identical scores, labels, video ids, kind, views
  compare_outputs.py heads A.pth B.pth evl checkpoints: identical parameters (torch.equal) and step

Caches are read with python3-lmdb straight from the LMDB files (cache/FORMAT.md),
not through evl's reader, so a bug in the C++ reader cannot hide a difference.
"""
import glob
import json
import os
import sys


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def read_records(cache):
    import lmdb
    records = {}
    # Shard environments are directories (an unmerged cache also holds per-shard *.manifest.json).
    shards = sorted(p for p in glob.glob(os.path.join(cache, "features-*-of-*"))
                    if os.path.isdir(p))
    if not shards:
        fail(f"{cache}: no features-*-of-* shard directories")
    for shard in shards:
        env = lmdb.open(shard, readonly=True, lock=False, subdir=True)
        with env.begin() as txn:
            for key, value in txn.cursor():
                if key in records:
                    fail(f"{cache}: key {key.decode()} in two shards")
                records[key] = bytes(value)
        env.close()
    return records


def compare_caches(a, b):
    ra, rb = read_records(a), read_records(b)
    if ra.keys() != rb.keys():
        only_a = sorted(k.decode() for k in ra.keys() - rb.keys())[:5]
        only_b = sorted(k.decode() for k in rb.keys() - ra.keys())[:5]
        fail(f"{a} and {b} hold different records: only in A {only_a}, only in B {only_b}")
    differ = [k.decode() for k in sorted(ra) if ra[k] != rb[k]]
    if differ:
        fail(f"{len(differ)} of {len(ra)} records differ between {a} and {b}, e.g. {differ[:5]}")
    ma = json.load(open(os.path.join(a, "manifest.json")))
    mb = json.load(open(os.path.join(b, "manifest.json")))
    ignored = {"created", "tool_version", "shards"}
    for field in sorted((ma.keys() | mb.keys()) - ignored):
        if ma.get(field) != mb.get(field):
            fail(f"manifest field '{field}': {ma.get(field)!r} in {a}, {mb.get(field)!r} in {b}")
    for m, path in ((ma, a), (mb, b)):
        if sum(s["records"] for s in m["shards"]) != len(ra):
            fail(f"{path}/manifest.json: shard record counts do not add up to {len(ra)}")
    print(f"caches: {len(ra)} records byte-identical ({sum(map(len, ra.values()))} bytes), "
          f"manifests agree; shards {len(ma['shards'])} vs {len(mb['shards'])}")


def compare_scores(a, b):
    import h5py
    import numpy as np
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("scores", "labels", "video_ids"):
            da, db = fa[name][()], fb[name][()]
            if da.shape != db.shape or not np.array_equal(da, db):
                extra = ""
                if name == "scores" and da.shape == db.shape:
                    extra = f" (max |diff| {np.abs(da - db).max():.3g})"
                fail(f"dataset '{name}' differs between {a} and {b}{extra}")
        for attr in ("kind", "num_views"):
            if fa.attrs.get(attr) != fb.attrs.get(attr):
                fail(f"attribute '{attr}': {fa.attrs.get(attr)!r} vs {fb.attrs.get(attr)!r}")
        n, k = fa["scores"].shape
        if n == 0:
            fail(f"{a}: no videos scored")
    print(f"scores: {n} videos x {k} classes identical ({a} == {b})")


def compare_heads(a, b):
    import torch
    ca, cb = torch.load(a, map_location="cpu"), torch.load(b, map_location="cpu")
    sa, sb = ca["model"], cb["model"]
    if sa.keys() != sb.keys():
        fail(f"{a} and {b} hold different parameter names")
    differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
    if differ:
        fail(f"{len(differ)} of {len(sa)} parameters differ between {a} and {b}, e.g. {differ[:3]}")
    if ca.get("next_step") != cb.get("next_step"):
        fail(f"next_step {ca.get('next_step')} vs {cb.get('next_step')}")
    print(f"heads: {len(sa)} parameters identical after step {ca.get('next_step')}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("caches", "scores", "heads"):
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    {"caches": compare_caches, "scores": compare_scores, "heads": compare_heads}[sys.argv[1]](
        sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
