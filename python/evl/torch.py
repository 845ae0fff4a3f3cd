"""A PyTorch Dataset over an evl feature cache whose items are the inputs of the
official EVLDecoder (OpenGVLab/efficient-video-recognition, model.py):

    ds = evl.torch.CacheDataset("cache-train", decoder_layers=4)
    feats, label = ds[0]
    # feats: a list with one dict per decoder layer (the cache's last 4 layers):
    #   {'out': (T, L, C), 'q': (T, L, H, D), 'k': (T, L, H, D)} float32 tensors
    loader = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=4)
    for feats, labels in loader:        # feats[i]['out'] is (B, T, L, C), as EVLDecoder wants
        logits = head(feats)

The LMDB environment is opened lazily in the process that reads (each
DataLoader worker opens its own after fork), so num_workers > 0 works with the
fork and the spawn start methods.
"""
import os

import torch
from torch.utils.data import Dataset

from . import Cache

__all__ = ["CacheDataset"]


class CacheDataset(Dataset):
    """Items are clip-views (records, in the cache's order): ``(features, label)``
    with ``features`` a list of ``decoder_layers`` dicts ``{'out', 'q', 'k'}``
    (the cache's last `decoder_layers` layers, all when None) and ``label`` an
    int (-1 when unknown). Q/K of a compact cache are recomputed in C++ from the
    stored frozen weights. Views of one clip are separate items: ``clips()``
    says which items belong together (for view fusion)."""

    def __init__(self, path, decoder_layers=None, verify_checksums=True):
        self.path = str(path)
        self.verify_checksums = verify_checksums
        c = Cache(self.path, verify_checksums=verify_checksums)
        try:
            self.manifest = c.manifest
            available = c.layers
            self.decoder_layers = decoder_layers or available
            if not 0 < self.decoder_layers <= available:
                raise ValueError(f"cache '{self.path}' holds {available} decoder layers, "
                                 f"decoder_layers={decoder_layers} were asked for")
            self.heads = int(self.manifest["backbone"]["heads"])
            self.width = int(self.manifest["backbone"]["width"])
            if self.heads <= 0 or self.width % self.heads:
                raise ValueError(f"cache '{self.path}': manifest width {self.width} is not a "
                                 f"multiple of heads {self.heads}")
            self._len = len(c)
            self._clips = c.clips()
        finally:
            c.close()  # nothing open before a DataLoader forks
        self._cache, self._pid = None, None

    def __len__(self):
        return self._len

    def clips(self):
        """Clips in list order: dicts with clip_index, video_id, label, records (item indices)."""
        return self._clips

    def _reader(self):
        if self._cache is None or self._pid != os.getpid():
            self._cache = Cache(self.path, verify_checksums=self.verify_checksums)
            self._pid = os.getpid()
        return self._cache

    def __getitem__(self, index):
        r = self._reader().record(index, self.decoder_layers)
        m, t, l, c = r.x.shape
        h = self.heads
        x = torch.from_numpy(r.x)
        q = torch.from_numpy(r.q).view(m, t, l, h, c // h)
        k = torch.from_numpy(r.k).view(m, t, l, h, c // h)
        return [{"out": x[i], "q": q[i], "k": k[i]} for i in range(m)], r.label

    def __getstate__(self):  # picklable for the spawn start method: no open environment
        state = dict(self.__dict__)
        state["_cache"], state["_pid"] = None, None
        return state
