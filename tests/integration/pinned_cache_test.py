#!/usr/bin/python3
"""Pins what evl_extract writes for a generated fixture, so that a restructure
cannot change caches silently.

The fixture: two lossless RGB videos made by ffmpeg's testsrc2 filter (no YUV
conversion, so the decoded pixels are exact on any CPU), the tiny CLIP-shaped
backbone of tests/fixtures/backbone, and fixed seeds. Two caches:
  test views   2 temporal x 3 spatial, --save-inputs, at the backbone's native
               32 px (the videos' short side is 32: the resize is the identity,
               so the normalised input frames are exact on any CPU)
  train views  K=3 with flip and photometric (dense) and K=2 TSN, seed 11: the
               frame indices, crop boxes, flips and jitter factors in each
               record's view description come from common/random.h's draws
Per record the test hashes (sha256) the key, video id, label, clip and view
index, view description, every array's name, dtype and shape, and the bytes of
`inputs`; not the feature bytes (x, q, k), which depend on the CPU's GEMM
kernels in the last bits (their values are checked against PyTorch elsewhere).
Records are read with tests/cache/read_record.py (numpy + lmdb, no evl code),
which also verifies every record's xxh64 checksum.

The pinned digests were computed with the evl_extract of commit 1293895 (before
the view/feature boundary was restructured) and are unchanged since. If a
change is meant to alter caches, bump the cache format version and re-pin with
--print, saying why in the commit.

Usage: pinned_cache_test.py BIN_DIR [--print]
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

import lmdb

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "cache"))
import read_record  # noqa: E402

BACKBONE = os.path.join(ROOT, "tests", "fixtures", "backbone", "tiny_clip_openai.pt")

PINNED = {  # identical under ATEN_CPU_CAPABILITY=default/avx2/avx512 and on an emulated EPYC-Rome
    "test": "c15274667f82f89f005f29d3fdd57d82374cf70ad541efa01896dad8cd3a4b20",  # 12 records
    "train": "3c9bd6bfe1d70bb5fc09108ceb136aebf1add811f50894cbd2dea51f367d5532",  # 6 records
    "tsn": "6d3da3d3acb45301c3a2ec2729f088d2c1b6dfbec84488b0a517dab3004c84fe",  # 4 records
}

RUNS = {
    "test": ["--frames", "4", "--stride", "3", "--temporal-views", "2", "--spatial-views", "3",
             "--layers", "last2", "--store", "compact", "--save-inputs"],
    # --rand-augment none: the pins predate RandAugment (issue 16), which is on by
    # default for training views; without it the views must be what they were.
    "train": ["--frames", "4", "--stride", "2", "--train-views", "3", "--flip", "--photometric",
              "--seed", "11", "--layers", "last2", "--dtype", "bf16", "--rand-augment", "none"],
    "tsn": ["--frames", "5", "--sampling", "tsn", "--train-views", "2", "--seed", "11",
            "--layers", "all", "--dtype", "fp32", "--rand-augment", "none"],
}


def make_videos(d):
    specs = [("wide.mkv", "testsrc2=size=48x32:rate=10", "2.5"),
             ("tall.mkv", "testsrc2=size=32x40:rate=12", "2")]
    for name, src, secs in specs:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, "-t", secs,
                        "-c:v", "ffv1", "-pix_fmt", "bgr0", os.path.join(d, name)], check=True)
    with open(os.path.join(d, "list.txt"), "w") as f:
        f.write("wide.mkv 3\ntall.mkv 1\n")


def digest(cache):
    h = hashlib.sha256()
    manifest = json.load(open(os.path.join(cache, "manifest.json")))
    for k in ["layers", "storage", "dtype", "frames", "stride", "sampling", "temporal_views",
              "spatial_views", "train_views", "mean", "std", "seed", "has_inputs", "num_clips"]:
        h.update(json.dumps([k, manifest[k]]).encode())
    records = 0
    for shard in manifest["shards"]:
        env = lmdb.open(os.path.join(cache, shard["name"]), readonly=True, lock=False)
        with env.begin() as txn:
            for key, value in txn.cursor():
                header, arrays = read_record.decode(value, f"{cache}: {key.decode()}")
                h.update(json.dumps(header, sort_keys=True).encode())
                for name in sorted(arrays):
                    code, a = arrays[name]
                    h.update(json.dumps([name, code, list(a.shape)]).encode())
                    if name == "inputs":
                        h.update(a.tobytes())
                records += 1
        env.close()
    return h.hexdigest(), records


def main():
    bin_dir = sys.argv[1]
    show = "--print" in sys.argv
    failures = []
    with tempfile.TemporaryDirectory(prefix="evl_pinned_") as d:
        make_videos(d)
        for name, flags in RUNS.items():
            out = os.path.join(d, name)
            cmd = [os.path.join(bin_dir, "evl_extract"), "--list", os.path.join(d, "list.txt"),
                   "--root", d, "--backbone", BACKBONE, "--out", out, "--threads", "1"] + flags
            r = subprocess.run(cmd, capture_output=True, text=True,
                               env=dict(os.environ, EVL_PROGRESS="0"))
            if r.returncode != 0:
                failures.append(f"{name}: evl_extract exited {r.returncode}: {r.stderr.strip()}")
                continue
            got, records = digest(out)
            if show:
                print(f'    "{name}": "{got}",  # {records} records')
            elif got != PINNED[name]:
                failures.append(f"{name}: {records} records hash to {got}, pinned {PINNED[name]}")
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    if failures:
        sys.exit(1)
    if not show:
        print(f"PASS: {len(RUNS)} caches match their pinned digests")


if __name__ == "__main__":
    main()
