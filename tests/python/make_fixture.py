#!/usr/bin/python3
"""Builds the fixture of the Python package tests with evl's own tools (CTest
fixture `python_fixture`, run before tests/python/*_test.py):

  data/                      6 synthetic motion videos (scripts/make_motion_dataset.py)
  cache-<name>/              evl_extract of them with the tiny CLIP fixture
                             (tests/fixtures/backbone/tiny_clip_openai.pt: C 32, 2 heads,
                             3 blocks, 4x4 grid), 4 frames, layers 1-2, 2 temporal views,
                             for <name> in qk-fp16, compact-fp16, qk-int8, compact-fp8,
                             qk-bf16 (same clips, same views)
  export-<name>.h5           evl_cache export --h5 of each (the C++ reader's float32)
  run/last.pth               evl_train_head on cache-qk-fp16 (a few steps)
  scores-<name>.h5           evl_eval of run/last.pth on each cache (view-fused probabilities)

Usage: make_fixture.py BIN_DIR OUT_DIR (OUT_DIR is replaced).
"""
import os
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PY = "/usr/bin/python3"
CACHES = {"qk-fp16": ("qk", "fp16"), "compact-fp16": ("compact", "fp16"),
          "qk-int8": ("qk", "int8"), "compact-fp8": ("compact", "fp8"),
          "qk-bf16": ("qk", "bf16")}


def run(cmd):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        sys.exit(f"make_fixture: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")


def main():
    bin_dir, out = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    data = os.path.join(out, "data")
    run([PY, os.path.join(ROOT, "scripts/make_motion_dataset.py"), "--out", data, "--classes",
         "3", "--per-class", "2", "--frames", "12", "--size", "48x40", "--seed", "1",
         "--split-ratio", "0.0", "--jobs", "2"])
    tool = lambda name: os.path.join(bin_dir, name)  # noqa: E731
    for name, (store, dtype) in CACHES.items():
        cache = os.path.join(out, f"cache-{name}")
        run([tool("evl_extract"), "--list", os.path.join(data, "val.txt"), "--root", data,
             "--backbone", os.path.join(ROOT, "tests/fixtures/backbone/tiny_clip_openai.pt"),
             "--frames", "4", "--stride", "2", "--layers", "1,2", "--temporal-views", "2",
             "--spatial-views", "1", "--store", store, "--dtype", dtype, "--threads", "2",
             "--out", cache])
        run([tool("evl_cache"), "export", cache, "--h5", os.path.join(out, f"export-{name}.h5")])
    run([tool("evl_train_head"), "--cache", os.path.join(out, "cache-qk-fp16"), "--out",
         os.path.join(out, "run"), "--steps", "8", "--batch-size", "4", "--lr", "5e-3",
         "--heads", "2", "--eval-every", "0", "--save-every", "0", "--log-every", "0",
         "--threads", "2", "--precision", "fp32"])
    for name in CACHES:
        run([tool("evl_eval"), "--cache", os.path.join(out, f"cache-{name}"), "--checkpoint",
             os.path.join(out, "run", "last.pth"), "--scores",
             os.path.join(out, f"scores-{name}.h5"), "--threads", "2"])
    print(f"make_fixture: wrote {out}")


if __name__ == "__main__":
    main()
