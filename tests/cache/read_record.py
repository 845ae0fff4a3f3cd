#!/usr/bin/python3
"""Reads one record of an evl feature cache with python3-lmdb, numpy and
python3-xxhash, following cache/FORMAT.md (no evl code). Usage:

  read_record.py CACHE_DIR KEY [--dump OUT_DIR]

Prints the record's header fields and array shapes as JSON on stdout. With
--dump, writes each array's raw payload bytes (as stored; for int8/fp8 the codes,
their padding, the fp16 scales, column scales and centers) to OUT_DIR/<name>.raw
and its float32 values (dequantized for int8/fp8) to OUT_DIR/<name>.f32. The
checksum is always verified: XXH3-64 (python3-xxhash) from version 2, XXH64
(implemented below in pure Python) in version 1. Reads format versions 1 to 4.
"""
import json
import os
import struct
import sys

import lmdb
import numpy as np
import xxhash

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


# Codes 4 and 5 (format version 2) are group-quantized: 1-byte codes + fp16
# scales; 6 and 7 (version 3) add fp16 column scales of outlier channels, 8 and
# 9 (version 4) also their fp16 centers.
DTYPES = {1: np.dtype('<f2'), 2: np.dtype('<u2'), 3: np.dtype('<f4'),  # 2: bfloat16 bits
          4: np.dtype('i1'), 5: np.dtype('u1'),  # 4: int8 codes, 5: fp8 e4m3 codes
          6: np.dtype('i1'), 7: np.dtype('u1'), 8: np.dtype('i1'), 9: np.dtype('u1')}
DTYPE_NAMES = {1: 'fp16', 2: 'bf16', 3: 'fp32', 4: 'int8', 5: 'fp8', 6: 'int8', 7: 'fp8',
               8: 'int8', 9: 'fp8'}
QUANTIZED = (4, 5, 6, 7, 8, 9)
INT8_CODES = (4, 6, 8)
WITH_COLUMNS = (6, 7, 8, 9)
WITH_CENTERS = (8, 9)
FIRST_VERSION = {4: 2, 5: 2, 6: 3, 7: 3, 8: 4, 9: 4}
VERSION = 4


def e4m3_values():
    """The 256 OCP FP8 E4M3FN values, from the bit layout S.EEEE.MMM (bias 7)."""
    c = np.arange(256)
    sign = np.where(c & 0x80, -1.0, 1.0)
    e, m = (c >> 3) & 0xF, c & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e - 7.0))
    v = np.where((e == 15) & (m == 7), np.nan, v)
    return (sign * v).astype(np.float32)  # every value is exact in float32


class Quantized:
    """A quantized array as stored: codes (shape), scales (shape[:-1] + (G,)), group,
    column scales (S, C) float16 or None (version-2 codes 4, 5), and column centers
    (S, C) float16 or None (codes 4 to 7). A channel whose column scale and center
    are both 0 is coded with its group."""

    def __init__(self, codes, scales, group, columns=None, centers=None):
        self.codes, self.scales, self.group = codes, scales, group
        self.columns, self.centers = columns, centers
        self.shape, self.dtype = codes.shape, codes.dtype

    def tobytes(self):
        return self.codes.tobytes()


def decode(value, where):
    """Returns (header dict, {name: (dtype code, array as stored)}): a numpy array,
    or for int8/fp8 a Quantized (codes, scales). raw_payloads(value) gives the bytes."""
    value = bytes(value)
    if len(value) < 64:
        raise ValueError(f'{where}: truncated value')
    if value[:4] != b'EVLR':
        raise ValueError(f'{where}: bad magic')
    version, size, label, clip, view_index, n_arrays, klen, ilen, dlen, hsize = \
        struct.unpack_from('<IQqqiIIIII', value, 4)
    if not 1 <= version <= VERSION:
        raise ValueError(f'{where}: format version {version}, this reader knows 1..{VERSION}')
    if size != len(value):
        raise ValueError(f'{where}: value is {len(value)} bytes, header says {size}')
    digest = xxhash.xxh3_64_intdigest(value[:-8]) if version >= 2 else xxh64(value[:-8])
    if digest != struct.unpack_from('<Q', value, size - 8)[0]:
        raise ValueError(f'{where}: checksum mismatch')
    pos = 56
    key = value[pos:pos + klen].decode(); pos += klen
    video_id = value[pos:pos + ilen].decode(); pos += ilen
    view = value[pos:pos + dlen].decode(); pos += dlen
    arrays = {}
    for _ in range(n_arrays):
        (nlen,) = struct.unpack_from('<I', value, pos); pos += 4
        name = value[pos:pos + nlen].decode(); pos += nlen
        code, ndim = value[pos], value[pos + 1]
        (group,) = struct.unpack_from('<H', value, pos + 2); pos += 4
        shape = struct.unpack_from(f'<{ndim}q', value, pos); pos += 8 * ndim
        offset, nbytes = struct.unpack_from('<QQ', value, pos); pos += 16
        if code not in DTYPES or version < FIRST_VERSION.get(code, 1):
            raise ValueError(f'{where}: array {name} has dtype code {code}')
        dt = DTYPES[code]
        numel = int(np.prod(shape, dtype=np.int64))
        if code in QUANTIZED:
            # codes (numel bytes), zeros to the next multiple of 64, fp16 scales (rows, G)
            if ndim == 0 or shape[-1] < 1 or group < 1:
                raise ValueError(f'{where}: quantized array {name} has shape {shape}, group {group}')
            groups = -(-shape[-1] // group)
            scale_offset = -(-numel // 64) * 64
            want = scale_offset + 2 * (numel // shape[-1]) * groups
            # then (codes 6 to 9) fp16 column scales, C per slice (S = shape[0] for >= 3
            # dims, else 1), then (codes 8, 9) fp16 column centers, C per slice
            slices = (shape[0] if ndim >= 3 else 1) if code in WITH_COLUMNS else 0
            column_offset = want
            want += 2 * slices * shape[-1]
            center_offset = want
            if code in WITH_CENTERS:
                want += 2 * slices * shape[-1]
        else:
            want = numel * dt.itemsize
        if nbytes != want or offset + nbytes > size - 8:
            raise ValueError(f'{where}: array {name} has inconsistent size')
        a = np.frombuffer(value, dtype=dt, count=numel, offset=offset).reshape(shape)
        if code in QUANTIZED:
            scales = np.frombuffer(value, dtype='<f2', count=(numel // shape[-1]) * groups,
                                   offset=offset + scale_offset)
            columns = centers = None
            if code in WITH_COLUMNS:
                columns = np.frombuffer(value, dtype='<f2', count=slices * shape[-1],
                                        offset=offset + column_offset).reshape(slices, shape[-1])
            if code in WITH_CENTERS:
                centers = np.frombuffer(value, dtype='<f2', count=slices * shape[-1],
                                        offset=offset + center_offset).reshape(slices, shape[-1])
            a = Quantized(a, scales.reshape(tuple(shape[:-1]) + (groups,)), group, columns, centers)
        arrays[name] = (code, a)
    header = dict(key=key, video_id=video_id, view=view, label=label, clip_index=clip,
                  view_index=view_index)
    return header, arrays


def raw_payloads(value):
    """{name: the array's payload bytes as stored} (descriptor offsets and sizes)."""
    value = bytes(value)
    n_arrays = struct.unpack_from('<I', value, 36)[0]
    pos = 56 + sum(struct.unpack_from('<III', value, 40))
    out = {}
    for _ in range(n_arrays):
        (nlen,) = struct.unpack_from('<I', value, pos); pos += 4
        name = value[pos:pos + nlen].decode(); pos += nlen
        ndim = value[pos + 1]; pos += 4 + 8 * ndim
        offset, nbytes = struct.unpack_from('<QQ', value, pos); pos += 16
        out[name] = value[offset:offset + nbytes]
    return out


def to_float32(code, a):
    if code == 2:
        return (a.astype(np.uint32) << 16).view(np.float32)
    if code in QUANTIZED:
        # A group's channel: x = float32(code value) * float32(scale), one float32
        # multiply. An outlier channel (codes 6 to 9): x = float32(center) +
        # float32(code value) * float32(column scale), the product rounded to
        # float32 before the sum (the center is 0 for codes 6, 7).
        codes = a.codes.astype(np.float32) if code in INT8_CODES else e4m3_values()[a.codes]
        scales = np.repeat(a.scales.astype(np.float32), a.group, axis=-1)[..., :a.shape[-1]]
        out = codes * scales
        if a.columns is not None:
            s, c = a.columns.shape
            per_row = lambda t: np.broadcast_to(t.astype(np.float32)[:, None, :],
                                                (s, scales.size // (s * c), c)).reshape(scales.shape)
            cols = per_row(a.columns)
            mids = per_row(a.centers) if a.centers is not None else np.zeros_like(cols)
            is_column = (cols != 0) | (mids != 0)
            out = np.where(is_column, mids + codes * cols, out)
        return out
    return a.astype(np.float32)


def read(cache_dir, key, with_raw=False):
    manifest = json.load(open(os.path.join(cache_dir, 'manifest.json')))
    for shard in manifest['shards']:
        path = os.path.join(cache_dir, shard['name'])
        env = lmdb.open(path, readonly=True, lock=False, subdir=True)
        with env.begin() as txn:
            value = txn.get(key.encode())
            value = None if value is None else bytes(value)
        env.close()
        if value is not None:
            decoded = decode(value, f"cache shard '{path}': record '{key}'")
            return (manifest, decoded, raw_payloads(value)) if with_raw else (manifest, decoded)
    raise KeyError(f'{cache_dir}: no record {key}')


def main():
    cache_dir, key = sys.argv[1], sys.argv[2]
    dump = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == '--dump' else None
    manifest, (header, arrays), raw = read(cache_dir, key, with_raw=True)
    out = dict(header, storage=manifest['storage'], dtype=manifest['dtype'],
               arrays={n: dict(dtype=DTYPE_NAMES[c], shape=list(a.shape)) for n, (c, a) in arrays.items()})
    if 'quantization' in manifest:
        out['quantization'] = manifest['quantization']
    if dump:
        os.makedirs(dump, exist_ok=True)
        for name, (code, a) in arrays.items():
            with open(os.path.join(dump, name + '.raw'), 'wb') as f:
                f.write(raw[name])
            to_float32(code, a).tofile(os.path.join(dump, name + '.f32'))
    print(json.dumps(out, sort_keys=True))


if __name__ == '__main__':
    main()
