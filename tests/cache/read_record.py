#!/usr/bin/python3
"""Reads one record of an evl feature cache with python3-lmdb and numpy only,
following cache/FORMAT.md (no evl code). Usage:

  read_record.py CACHE_DIR KEY [--dump OUT_DIR]

Prints the record's header fields and array shapes as JSON on stdout. With
--dump, writes each array's raw bytes (as stored) to OUT_DIR/<name>.raw and its
float32 values to OUT_DIR/<name>.f32. The checksum (xxh64, implemented below in
pure Python) is always verified.
"""
import json
import os
import struct
import sys

import lmdb
import numpy as np

MASK = (1 << 64) - 1
P1, P2, P3, P4, P5 = (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5)


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & MASK


def _round(acc, lane):
    acc = (acc + lane * P2) & MASK
    return (_rotl(acc, 31) * P1) & MASK


def _merge(acc, val):
    acc ^= _round(0, val)
    return (acc * P1 + P4) & MASK


def xxh64(data, seed=0):
    """XXH64 as specified in xxhash's doc/xxhash_spec.md."""
    n, i = len(data), 0
    if n >= 32:
        v = [(seed + P1 + P2) & MASK, (seed + P2) & MASK, seed, (seed - P1) & MASK]
        lanes = np.frombuffer(data, dtype='<u8', count=(n // 32) * 4).tolist()
        for j in range(0, len(lanes), 4):
            v = [_round(v[0], lanes[j]), _round(v[1], lanes[j + 1]),
                 _round(v[2], lanes[j + 2]), _round(v[3], lanes[j + 3])]
        i = (n // 32) * 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & MASK
        for x in v:
            h = _merge(h, x)
    else:
        h = (seed + P5) & MASK
    h = (h + n) & MASK
    while i + 8 <= n:
        h ^= _round(0, struct.unpack_from('<Q', data, i)[0])
        h = (_rotl(h, 27) * P1 + P4) & MASK
        i += 8
    if i + 4 <= n:
        h ^= (struct.unpack_from('<I', data, i)[0] * P1) & MASK
        h = (_rotl(h, 23) * P2 + P3) & MASK
        i += 4
    while i < n:
        h ^= (data[i] * P5) & MASK
        h = (_rotl(h, 11) * P1) & MASK
        i += 1
    h ^= h >> 33
    h = (h * P2) & MASK
    h ^= h >> 29
    h = (h * P3) & MASK
    return h ^ (h >> 32)


DTYPES = {1: np.dtype('<f2'), 2: np.dtype('<u2'), 3: np.dtype('<f4')}  # 2: bfloat16 bits
DTYPE_NAMES = {1: 'fp16', 2: 'bf16', 3: 'fp32'}


def decode(value, where):
    """Returns (header dict, {name: (dtype code, numpy array as stored)})."""
    value = bytes(value)
    if len(value) < 64:
        raise ValueError(f'{where}: truncated value')
    if value[:4] != b'EVLR':
        raise ValueError(f'{where}: bad magic')
    version, size, label, clip, view_index, n_arrays, klen, ilen, dlen, hsize = \
        struct.unpack_from('<IQqqiIIIII', value, 4)
    if version != 1:
        raise ValueError(f'{where}: format version {version}, this reader knows 1')
    if size != len(value):
        raise ValueError(f'{where}: value is {len(value)} bytes, header says {size}')
    if xxh64(value[:-8]) != struct.unpack_from('<Q', value, size - 8)[0]:
        raise ValueError(f'{where}: checksum mismatch')
    pos = 56
    key = value[pos:pos + klen].decode(); pos += klen
    video_id = value[pos:pos + ilen].decode(); pos += ilen
    view = value[pos:pos + dlen].decode(); pos += dlen
    arrays = {}
    for _ in range(n_arrays):
        (nlen,) = struct.unpack_from('<I', value, pos); pos += 4
        name = value[pos:pos + nlen].decode(); pos += nlen
        code, ndim = value[pos], value[pos + 1]; pos += 4
        shape = struct.unpack_from(f'<{ndim}q', value, pos); pos += 8 * ndim
        offset, nbytes = struct.unpack_from('<QQ', value, pos); pos += 16
        dt = DTYPES[code]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or offset + nbytes > size - 8:
            raise ValueError(f'{where}: array {name} has inconsistent size')
        a = np.frombuffer(value, dtype=dt, count=nbytes // dt.itemsize, offset=offset).reshape(shape)
        arrays[name] = (code, a)
    header = dict(key=key, video_id=video_id, view=view, label=label, clip_index=clip,
                  view_index=view_index)
    return header, arrays


def to_float32(code, a):
    if code == 2:
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float32)


def read(cache_dir, key):
    manifest = json.load(open(os.path.join(cache_dir, 'manifest.json')))
    for shard in manifest['shards']:
        path = os.path.join(cache_dir, shard['name'])
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        with env.begin() as txn:
            value = txn.get(key.encode())
        env.close()
        if value is not None:
            return manifest, decode(value, f"cache shard '{path}': record '{key}'")
    raise KeyError(f'{cache_dir}: no record {key}')


def main():
    cache_dir, key = sys.argv[1], sys.argv[2]
    dump = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == '--dump' else None
    manifest, (header, arrays) = read(cache_dir, key)
    out = dict(header, storage=manifest['storage'], dtype=manifest['dtype'],
               arrays={n: dict(dtype=DTYPE_NAMES[c], shape=list(a.shape)) for n, (c, a) in arrays.items()})
    if dump:
        os.makedirs(dump, exist_ok=True)
        for name, (code, a) in arrays.items():
            a.tofile(os.path.join(dump, name + '.raw'))
            to_float32(code, a).tofile(os.path.join(dump, name + '.f32'))
    print(json.dumps(out, sort_keys=True))


if __name__ == '__main__':
    main()
