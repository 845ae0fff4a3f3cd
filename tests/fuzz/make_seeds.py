#!/usr/bin/python3
"""Pickle seeds for the checkpoint fuzz target (pickle_fuzz.cpp): the data.pkl of
small torch.save checkpoints shaped like evl's and the official EVL ones, every
storage 64 bytes under keys 0..7 (what the target's fixed archive holds).
usage: make_seeds.py OUT_DIR   (writes OUT_DIR/pickle/*)"""
import collections
import io
import os
import sys
import zipfile

import torch


def data_pkl(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
        name = next(n for n in z.namelist() if n.endswith("/data.pkl"))
        keys = sorted(n.rsplit("/", 1)[1] for n in z.namelist() if "/data/" in n)
        for n in z.namelist():
            if "/data/" in n:
                assert len(z.read(n)) == 64, (n, len(z.read(n)))
        assert all(int(k) < 8 for k in keys), keys
        return z.read(name)


def main():
    out = os.path.join(sys.argv[1], "pickle")
    os.makedirs(out, exist_ok=True)
    f = torch.arange(16, dtype=torch.float32)
    seeds = {
        # evl's checkpoint: a dict of tensors plus the config and step
        "evl_ckpt": {"model": {"proj.2.weight": f.view(4, 4), "proj.2.bias": torch.zeros(16)},
                     "config": "frames = 8\n", "next_step": 10, "lr": 4e-4, "done": False,
                     "layers": [8, 9, 10, 11], "none": None},
        # the official format: an OrderedDict state_dict under 'model', module. prefix
        "official": {"model": collections.OrderedDict(
            [("module.decoder.decoder_layers.0.attn.q_proj.weight", torch.ones(32, dtype=torch.float16)),
             ("module.proj.2.bias", torch.arange(8, dtype=torch.int64))])},
        "bare_ordered": collections.OrderedDict([("w", torch.nn.Parameter(torch.ones(16)))]),
        "strided": {"t": torch.arange(16.0).view(4, 4).t(), "u": torch.arange(16.0)[2:10:2],
                    "b": torch.ones(64, dtype=torch.bool), "tuple": (1, 2.5, "x", 2 ** 40)},
        "scalars": [1, -1, 300, 70000, -(2 ** 33), 1.5, "text", True, None],
    }
    for name, obj in seeds.items():
        with open(os.path.join(out, name), "wb") as fh:
            fh.write(data_pkl(obj))
    print("pickle seeds written to", out)


if __name__ == "__main__":
    main()
