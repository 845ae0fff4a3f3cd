#!/usr/bin/python3
"""bench_python: evl.torch.CacheDataset through a torch DataLoader (0 and 2
worker processes) against evl's own C++ loader (CachedDataset::load, what
evl_train_head calls; `bench_loader --time-cache`) on the same cache, in
samples/s and GB/s of stored array bytes. Caches of ViT-B/16 shapes (C 768,
14x14 grid, 8 frames, 4 layers) with random features, written by
`bench_loader --write-cache`: qk fp16, qk int8 and compact fp16 (Q/K
recomputed by both loaders). One shuffled pass in batches of 2 (after an
untimed one that starts persistent workers), checksums verified, page cache warm; torch threads 1 in the main process (as
the C++ loader's 1-thread row), 1 in each DataLoader worker (its default).

  dataset_bench.py BIN_DIR [--quick] [--records N] [--dir PATH]
  (the bench_python wrapper in BIN_DIR passes BIN_DIR and sets PYTHONPATH)
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader

import evl
import evl.torch

CACHES = [("qk", "fp16"), ("qk", "int8"), ("compact", "fp16")]
BATCH = 2


def bench_json(out):
    for line in out.splitlines():
        if line.startswith("BENCH_JSON "):
            return json.loads(line[len("BENCH_JSON "):])
    raise SystemExit(f"bench_python: no BENCH_JSON in:\n{out}")


def python_pass(path, workers):
    """Samples and seconds of one shuffled pass, timed after a first pass that
    starts the workers (persistent) and opens their LMDB environments."""
    ds = evl.torch.CacheDataset(path)
    loader = DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=True,
                        generator=torch.Generator().manual_seed(0))
    for _ in loader:
        pass
    n = 0
    t0 = time.perf_counter()
    for feats, labels in loader:
        n += len(labels)
    return n, time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--records", type=int, default=8)
    ap.add_argument("--dir", default="/tmp")
    a = ap.parse_args()
    records = 4 if a.quick else a.records
    work = os.path.join(a.dir, f"evl_bench_python_{os.getpid()}")
    os.makedirs(work)
    torch.set_num_threads(1)
    rows = []
    try:
        for storage, dtype in CACHES:
            d = os.path.join(work, f"{storage}_{dtype}")
            subprocess.run([os.path.join(a.bin, "bench_loader"), "--write-cache", d, "--storage",
                            storage, "--dtype", dtype, "--records", str(records)]
                           + (["--quick"] if a.quick else []), check=True)
            c = evl.Cache(d)
            for i in range(len(c)):  # page cache and checksum code warm
                c[i]
            c.close()
            cpp = bench_json(subprocess.run(
                [os.path.join(a.bin, "bench_loader"), "--time-cache", d, "--batch", str(BATCH),
                 "--threads", "1"], check=True, capture_output=True, text=True).stdout)
            per_sample = cpp["array_bytes_per_sample"]
            row = dict(storage=storage, dtype=dtype, records=records,
                       bytes_per_sample=per_sample, cpp_samples_per_s=cpp["samples_per_s"],
                       cpp_gb_s=cpp["gb_s"])
            for workers in (0, 2):
                n, secs = python_pass(d, workers)
                row[f"py{workers}_samples_per_s"] = n / secs
                row[f"py{workers}_gb_s"] = n * per_sample / secs / 1e9
                row[f"py{workers}_vs_cpp"] = (n / secs) / cpp["samples_per_s"]
            print(f"{storage:8s} {dtype:5s}: C++ loader {cpp['samples_per_s']:7.2f} samples/s "
                  f"{cpp['gb_s']:6.2f} GB/s | CacheDataset 0 workers "
                  f"{row['py0_samples_per_s']:7.2f} ({100 * row['py0_vs_cpp']:.0f}%) | 2 workers "
                  f"{row['py2_samples_per_s']:7.2f} ({100 * row['py2_vs_cpp']:.0f}%)", flush=True)
            rows.append(row)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("BENCH_JSON " + json.dumps(dict(bench="python", quick=a.quick, records=records,
                                          batch=BATCH, rows=rows)))


if __name__ == "__main__":
    main()
