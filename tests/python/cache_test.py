#!/usr/bin/python3
"""evl.Cache (python/evl) against two independent readers of the same caches:
tests/cache/read_record.py (FORMAT.md in numpy, its own dequantization) and
`evl_cache export --h5` (the C++ reader's float32), on the fixture of
make_fixture.py: qk and compact caches in fp16, bf16, int8 and fp8.

  - header fields, keys, manifest, clips equal; X equal bit for bit; stored Q/K
    (qk) equal bit for bit;
  - compact Q/K (recomputed in C++) within the float32 rounding budget of an
    float64 recomputation from qk_weights.evl, and of the C++ exporter's;
  - a corrupted record raises evl.Error naming its key (reading and verify());
  - bad paths, indices and keys raise clear errors; use after fork() is refused.

Usage: cache_test.py FIXTURE_DIR  (PYTHONPATH holds the built package)
"""
import json
import os
import shutil
import sys
import tempfile
import unittest

import h5py
import lmdb
import numpy as np

import evl

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cache"))
import read_record  # noqa: E402

FIXTURE = None
NAMES = ["qk-fp16", "compact-fp16", "qk-int8", "compact-fp8", "qk-bf16"]
U32 = 2.0 ** -24


def qk_weights(cache_dir):
    with open(os.path.join(cache_dir, "qk_weights.evl"), "rb") as f:
        _, arrays = read_record.decode(f.read(), "qk_weights.evl")
    return {name: read_record.to_float32(code, a) for name, (code, a) in arrays.items()}


def reference_qk(w, block, x_in):
    """float64 Q, K of `block` from x_in (T, L, C), and the float32 error bound of each
    entry: LayerNorm (a few roundings per value) then an inner product of length C,
    bounded by (C + 8) u sum_c |ln_c| |W_oc| + u |b_o| (Higham, Thm 3.5, first order)."""
    x = x_in.astype(np.float64)
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    ln = (x - mu) / np.sqrt(var + 1e-5) * w[f"ln_1.weight.{block}"] + w[f"ln_1.bias.{block}"]
    out = []
    c = x.shape[-1]
    for p in ("q_proj", "k_proj"):
        wt = w[f"{p}.weight.{block}"].astype(np.float64)
        b = w[f"{p}.bias.{block}"].astype(np.float64)
        bound = (c + 8) * U32 * (np.abs(ln) @ np.abs(wt).T) + U32 * np.abs(b)
        out.append((ln @ wt.T + b, bound))
    return out


class CacheTest(unittest.TestCase):
    def test_reads_like_the_independent_readers(self):
        for name in NAMES:
            with self.subTest(cache=name):
                d = os.path.join(FIXTURE, f"cache-{name}")
                c = evl.Cache(d)
                with open(os.path.join(d, "manifest.json")) as f:
                    manifest = json.load(f)
                self.assertEqual(c.manifest, manifest)
                compact = manifest["storage"] == "compact"
                self.assertEqual(c.manifest["storage"], name.split("-")[0])
                m, t = len(manifest["layers"]), manifest["frames"]
                grid, width = manifest["backbone"]["grid"], manifest["backbone"]["width"]
                self.assertEqual(c.layers, m)
                w = qk_weights(d) if compact else None
                with h5py.File(os.path.join(FIXTURE, f"export-{name}.h5"), "r") as h5:
                    keys = sorted(f"{a}/{b}" for a in h5 for b in h5[a])
                    self.assertEqual(c.keys(), keys)
                    self.assertEqual(len(c), len(keys))
                    for i, key in enumerate(keys):
                        r = c[i]
                        g = h5[key]
                        _, (header, arrays) = read_record.read(d, key)
                        self.assertEqual((r.key, r.video_id, r.view, r.label, r.clip_index,
                                          r.view_index),
                                         (header["key"], header["video_id"], header["view"],
                                          header["label"], header["clip_index"],
                                          header["view_index"]))
                        self.assertEqual(r.video_id, g.attrs["video_id"])
                        self.assertEqual(r.x.shape, (m, t, 1 + grid * grid, width))
                        self.assertEqual(r.x.dtype, np.float32)
                        x_py = read_record.to_float32(*arrays["x"])
                        # X: the stored blocks (compact: all but the first, extra one)
                        np.testing.assert_array_equal(r.x, x_py[1:] if compact else x_py)
                        np.testing.assert_array_equal(r.x, g["x"][...])
                        if not compact:
                            for a in ("q", "k"):
                                np.testing.assert_array_equal(getattr(r, a),
                                                              read_record.to_float32(*arrays[a]))
                                np.testing.assert_array_equal(getattr(r, a), g[a][...])
                            continue
                        for layer, block in enumerate(manifest["layers"]):
                            (q64, qb), (k64, kb) = reference_qk(w, block, x_py[layer])
                            for got, want, bound, cpp in ((r.q[layer], q64, qb, g["q"][layer]),
                                                          (r.k[layer], k64, kb, g["k"][layer])):
                                err = np.abs(got - want)
                                self.assertTrue(np.all(err <= bound),
                                                f"{key} layer {layer}: max excess "
                                                f"{np.max(err - bound)}")
                                # evl_cache export's plain C++ recomputation: both within the
                                # bound of the float64 value, so within twice it of each other
                                self.assertTrue(np.all(np.abs(got - cpp) <= 2 * bound))
                            self.assertGreater(np.abs(q64).max(), 0)

    def test_indexing_and_layers(self):
        c = evl.Cache(os.path.join(FIXTURE, "cache-compact-fp16"))
        last = c[len(c) - 1]
        self.assertEqual(c[-1].key, last.key)
        self.assertEqual(c[last.key].key, last.key)
        self.assertEqual(c.get(last.key).key, last.key)
        self.assertEqual(c.index_of(last.key), len(c) - 1)
        self.assertEqual(c.index_of("9999999999/000"), -1)
        one = c.get(last.key, layers=1)
        self.assertEqual(one.x.shape[0], 1)
        for a in ("x", "q", "k"):
            np.testing.assert_array_equal(getattr(one, a)[0], getattr(last, a)[-1])
        with self.assertRaises(IndexError):
            c[len(c)]
        with self.assertRaises(KeyError) as e:
            c.get("9999999999/000")
        self.assertIn("9999999999/000", str(e.exception))
        with self.assertRaises(evl.Error):
            c.get(last.key, layers=c.layers + 1)
        clips = c.clips()
        self.assertEqual(sum(len(cl["records"]) for cl in clips), len(c))
        self.assertEqual([cl["video_id"] for cl in clips],
                         [c[cl["records"][0]].video_id for cl in clips])
        self.assertEqual(c.verify(), len(c))
        self.assertEqual(c[0].key, c.keys()[0])  # verify() reopened the environments
        self.assertIsNone(last.inputs)
        c.close()
        self.assertEqual(len(c), len(c.keys()))  # the index stays
        with self.assertRaises(evl.Error) as e:
            c[0]
        self.assertIn("closed", str(e.exception))

    def test_missing_cache_is_a_clear_error(self):
        with self.assertRaises(evl.Error) as e:
            evl.Cache("/nonexistent/evl-cache")
        self.assertIn("/nonexistent/evl-cache", str(e.exception))

    def test_corrupted_record_names_the_key(self):
        tmp = tempfile.mkdtemp(prefix="evl_py_corrupt_")
        try:
            d = os.path.join(tmp, "cache")
            shutil.copytree(os.path.join(FIXTURE, "cache-qk-int8"), d)
            shard = os.path.join(d, json.load(open(os.path.join(d, "manifest.json")))
                                 ["shards"][0]["name"])
            key = evl.Cache(d).keys()[1]
            env = lmdb.open(shard)
            with env.begin(write=True) as txn:
                v = bytearray(txn.get(key.encode()))
                v[len(v) // 2] ^= 0x10
                txn.put(key.encode(), bytes(v))
            env.close()
            c = evl.Cache(d)
            c[0]  # the others still read
            for read in (lambda: c[1], lambda: c.get(key)):
                with self.assertRaises(evl.Error) as e:
                    read()
                self.assertIn(f"record '{key}'", str(e.exception))
                self.assertIn("checksum mismatch", str(e.exception))
            with self.assertRaises(evl.Error) as e:
                c.verify()
            self.assertIn(key, str(e.exception))
            # without checksums the flipped byte goes through unnoticed (the option's point)
            evl.Cache(d, verify_checksums=False)[1]
        finally:
            shutil.rmtree(tmp)

    def test_use_after_fork_is_refused(self):
        c = evl.Cache(os.path.join(FIXTURE, "cache-qk-fp16"))
        c[0]
        pid = os.fork()
        if pid == 0:
            try:
                c[0]
                code = 1
            except evl.Error as e:
                code = 0 if "after fork" in str(e) else 2
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0)
        c[0]  # the parent's environment is intact


if __name__ == "__main__":
    FIXTURE = sys.argv.pop(1)
    unittest.main()
