"""evl from Python: read evl feature caches and score files.

    import evl
    cache = evl.Cache("runs/k400-b16-8f/cache-val")
    rec = cache[0]                      # or cache.get("0000000000/000")
    rec.x, rec.q, rec.k                 # float32 numpy (M, T, L, C); Q/K recomputed if compact

The heavy lifting (checksums, fp16/bf16/int8/fp8 decoding, compact Q/K) runs
in the C++ cache library through the extension module evl._evl. See
python/README.md; the PyTorch Dataset is evl.torch.CacheDataset, score files
are evl.scores.
"""
import json as _json

from . import _evl
from ._evl import Error, Record

__all__ = ["Cache", "Record", "Error", "scores"]


class Cache:
    """A feature cache directory (manifest.json + LMDB shards), read-only.

    ``len(cache)`` records (clip-views) sorted by (clip, view); ``cache[i]``
    (negative i from the end) and ``cache.get(key)`` return an evl.Record with
    ``video_id``, ``label``, ``view``, ``clip_index``, ``view_index``, ``key``
    and float32 numpy arrays ``x``, ``q``, ``k`` of shape (M, T, L, C) (M =
    decoder layers of the cache, T frames, L tokens per frame with CLS, C width;
    the arrays are the module's own, not views of the file) and ``inputs``
    (T, 3, H, W) or None. Every record's checksum is verified as it is read
    (``verify_checksums=False`` skips that); a corrupt record raises evl.Error
    naming the shard and the key.

    LMDB environments do not survive fork(): open a Cache in the process that
    uses it (evl.torch.CacheDataset opens one per DataLoader worker).
    """

    def __init__(self, path, verify_checksums=True, no_readahead=False):
        self._c = _evl.Cache(str(path), verify_checksums, no_readahead)
        self._manifest = None

    @property
    def path(self):
        return self._c.path

    @property
    def manifest(self):
        """The manifest as a dict (cache/FORMAT.md "Manifest")."""
        if self._manifest is None:
            self._manifest = _json.loads(self._c.manifest_json())
        return self._manifest

    @property
    def layers(self):
        """Decoder layers M the cache holds (len(manifest['layers']))."""
        return self._c.layers

    def __len__(self):
        return len(self._c)

    def keys(self):
        """Record keys "<clip, 10 digits>/<view, 3 digits>", in record order."""
        return self._c.keys()

    def index_of(self, key):
        """The record index of `key`, -1 when absent."""
        return self._c.index_of(key)

    def __getitem__(self, index):
        if isinstance(index, str):
            return self.get(index)
        return self._c.get_index(int(index), 0)

    def get(self, key, layers=None):
        """The record `key`; with `layers`=N only the last N decoder layers."""
        return self._c.get_key(key, layers or 0)

    def record(self, index, layers=None):
        """Record `index`; with `layers`=N only the last N decoder layers."""
        return self._c.get_index(int(index), layers or 0)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def clips(self):
        """Clips in list order: dicts with clip_index, video_id, label, records (indices)."""
        return self._c.clips()

    def verify(self):
        """Checks every record (magic, version, sizes, checksum, key, shapes,
        dtype against the manifest) and the manifest's counts, as
        `evl_cache verify` does. Returns the number of records checked; raises
        evl.Error listing the bad records (shard, key, reason) otherwise."""
        records, bad = self._c.verify()
        if bad:
            lines = [f"  {shard}: record '{key}': {reason}" for shard, key, reason in bad[:20]]
            more = f"\n  ... and {len(bad) - 20} more" if len(bad) > 20 else ""
            raise Error(f"cache '{self.path}': {len(bad)} of {records} records are bad:\n"
                        + "\n".join(lines) + more)
        return records

    def close(self):
        """Closes the LMDB environments now."""
        self._c.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        m = self.manifest
        return (f"<evl.Cache '{self.path}': {len(self)} records, {m['storage']} {m['dtype']}, "
                f"layers {m['layers']}, {m['frames']} frames>")


from . import scores  # noqa: E402  (after Cache: scores needs only _evl)
