#!/usr/bin/python3
"""`cmake --install` of the build into a temporary prefix, then two consumers of
the installed evl_cache (tests/install/consumer/read_cache.cpp) read a cache of
the Python fixture (tests/python/make_fixture.py):
  - an out-of-tree CMake project: find_package(evl), target evl::cache;
  - one g++ command with $(pkg-config --cflags --libs evl-cache).
Each must print the keys, labels, video ids and X sums that h5py reads from
`evl_cache export --h5` of the same cache, and link no LibTorch library.

Usage: install_test.py BUILD_DIR FIXTURE_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"install_test: {cmd if isinstance(cmd, str) else ' '.join(cmd)} exited "
                 f"{r.returncode}:\n{r.stdout}")
    return r.stdout


def check(exe, cache, export, what):
    got = json.loads(run([exe, cache]))
    libs = run(["ldd", exe])
    if "libtorch" in libs or "libc10" in libs:
        sys.exit(f"install_test: {what} links LibTorch:\n{libs}")
    with h5py.File(export, "r") as h5:
        keys = sorted(f"{a}/{b}" for a in h5 for b in h5[a])
        want = [dict(key=k, label=int(h5[k].attrs["label"]), video_id=h5[k].attrs["video_id"],
                     x_sum=float(np.sum(h5[k]["x"][...], dtype=np.float64))) for k in keys]
    if [r["key"] for r in got["records"]] != keys:
        sys.exit(f"install_test: {what}: keys {[r['key'] for r in got['records']]} != {keys}")
    for g, w in zip(got["records"], want):
        if (g["label"], g["video_id"]) != (w["label"], w["video_id"]):
            sys.exit(f"install_test: {what}: record {g} != {w}")
        # the same float32 values summed in float64, in two orders: |diff| <= n u64 sum|x|
        if abs(g["x_sum"] - w["x_sum"]) > 1e-9 * max(1.0, abs(w["x_sum"])):
            sys.exit(f"install_test: {what}: record {g['key']} x sum {g['x_sum']} != {w['x_sum']}")
    print(f"install_test: {what}: {len(keys)} records of {got['storage']} {got['dtype']} match")


def main():
    build, fixture = sys.argv[1], sys.argv[2]
    # a qk cache: its stored X is what the export holds (compact stores one more block)
    cache, export = os.path.join(fixture, "cache-qk-int8"), os.path.join(fixture, "export-qk-int8.h5")
    tmp = tempfile.mkdtemp(prefix="evl_install_")
    try:
        prefix = os.path.join(tmp, "prefix")
        run(["cmake", "--install", build, "--prefix", prefix])
        for f in ("lib/cmake/evl/evlConfig.cmake", "lib/pkgconfig/evl-cache.pc",
                  "include/evl/cache/cache.h", "bin/evl_extract", "lib/libevl_cache.a"):
            if not os.path.exists(os.path.join(prefix, f)):
                sys.exit(f"install_test: the install has no {f}")

        b = os.path.join(tmp, "cmake-consumer")
        gen = ["-G", "Ninja"] if shutil.which("ninja") else []
        run(["cmake", "-S", os.path.join(HERE, "consumer"), "-B", b, *gen,
             f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=Release"])
        run(["cmake", "--build", b])
        check(os.path.join(b, "read_cache"), cache, export, "find_package(evl) consumer")

        env = dict(os.environ, PKG_CONFIG_PATH=os.path.join(prefix, "lib", "pkgconfig"))
        exe = os.path.join(tmp, "read_cache_pc")
        flags = run(["pkg-config", "--cflags", "--libs", "evl-cache"], env=env).split()
        run(["g++", "-std=c++17", "-O1", os.path.join(HERE, "consumer", "read_cache.cpp"), "-o",
             exe, *flags])
        check(exe, cache, export, "pkg-config consumer")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
