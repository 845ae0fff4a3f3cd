#!/usr/bin/python3
"""evl.torch.CacheDataset feeds an EVL head written here from the description of
the official code (/work/shared/reference/evl-official-implementation.md §3:
EVLDecoder with temporal conv, position embedding, temporal cross attention in
its naive w[idx] form, the decoder layers, the proj head), not from evl's C++.
Run in float64 on the items a DataLoader with 2 worker processes collates, its
per-view softmax averaged per clip must give evl_eval's view-fused
probabilities (scores-<name>.h5 of make_fixture.py) on qk and compact caches
in fp16, bf16, int8 and fp8, within evl_eval's float32 rounding budget.

Usage: head_test.py FIXTURE_DIR  (PYTHONPATH holds the built package)
"""
import math
import os
import sys
import unittest

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import evl
import evl.torch

FIXTURE = None
NAMES = ["qk-fp16", "compact-fp16", "qk-int8", "compact-fp8", "qk-bf16"]
DECODER_HEADS = 2  # make_fixture.py trains with --heads 2


def layer_norm(x, sd, prefix):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)


def linear(x, sd, prefix):
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


class ReferenceHead:
    """EVLTransformer's decoder + head (model.py) in float64, eval mode (no dropout)."""

    def __init__(self, state_dict):
        self.sd = {k[len("module."):] if k.startswith("module.") else k: v.to(torch.float64)
                   for k, v in state_dict.items()}
        self.layers = sum(1 for k in self.sd if k.endswith(".attn.q_proj.weight"))

    def tca_half(self, q, k, w):
        # q, k (N, T', L, H, D): drop CLS, softmax over the other frame's patches,
        # mean over heads after the softmax, sum of the relative-offset vectors w[idx].
        q, k = q[:, :, 1:], k[:, :, 1:]
        n, t, p, h, d = q.shape
        g = int(round(math.sqrt(p)))
        i = torch.arange(p)
        qi, qj, ki, kj = (i // g)[:, None], (i % g)[:, None], (i // g)[None], (i % g)[None]
        idx = (qi - ki + g - 1) * (2 * g - 1) + (qj - kj + g - 1)  # (P, P)
        attn = torch.einsum("ntqhd,ntkhd->ntqkh", q / math.sqrt(d), k).softmax(dim=-2).mean(-1)
        return torch.einsum("ntqk,qkc->ntqc", attn, w[idx])

    def decoder_layer(self, i, x, y):
        p = f"decoder.decoder_layers.{i}"
        y_norm = layer_norm(y, self.sd, p + ".norm3")
        xn = layer_norm(x, self.sd, p + ".norm1")
        n, nq, c = xn.shape
        nk, h = y.shape[1], DECODER_HEADS
        q = linear(xn, self.sd, p + ".attn.q_proj").view(n, nq, h, c // h)
        k = linear(y_norm, self.sd, p + ".attn.k_proj").view(n, nk, h, c // h)
        v = linear(y_norm, self.sd, p + ".attn.v_proj").view(n, nk, h, c // h)
        aff = torch.einsum("nqhc,nkhc->nqkh", q / math.sqrt(c // h), k).softmax(dim=-2)
        mix = torch.einsum("nqlh,nlhc->nqhc", aff, v)
        x = x + linear(mix.flatten(-2), self.sd, p + ".attn.out_proj")
        hid = linear(layer_norm(x, self.sd, p + ".norm2"), self.sd, p + ".mlp.fc1")
        hid = hid * torch.sigmoid(1.702 * hid)  # QuickGELU
        return x + linear(hid, self.sd, p + ".mlp.fc2")

    def __call__(self, feats):
        sd = self.sd
        n = feats[0]["out"].shape[0]
        c = sd["decoder.cls_token"].shape[0]
        x = sd["decoder.cls_token"].view(1, 1, c).repeat(n, 1, 1)
        for i in range(self.layers):
            X = feats[i]["out"].to(torch.float64)
            q, k = feats[i]["q"].to(torch.float64), feats[i]["k"].to(torch.float64)
            _, t, l, _ = X.shape
            y = X.clone()
            if f"decoder.temporal_conv.{i}.weight" in sd:
                z = X.permute(0, 2, 3, 1).reshape(n * l, c, t)
                z = F.conv1d(z, sd[f"decoder.temporal_conv.{i}.weight"],
                             sd[f"decoder.temporal_conv.{i}.bias"], padding=1, groups=c)
                y = y + z.view(n, l, c, t).permute(0, 3, 1, 2)
            if f"decoder.temporal_pos_embed.{i}" in sd:
                y = y + sd[f"decoder.temporal_pos_embed.{i}"].view(1, t, 1, c)
            if f"decoder.cross_attention.{i}.w1" in sd:
                ret = torch.zeros_like(X)
                ret[:, 1:, 1:] += self.tca_half(q[:, 1:], k[:, :-1],
                                                sd[f"decoder.cross_attention.{i}.w1"])
                ret[:, :-1, 1:] += self.tca_half(q[:, :-1], k[:, 1:],
                                                 sd[f"decoder.cross_attention.{i}.w2"])
                y = y + ret
            x = self.decoder_layer(i, x, y.flatten(1, 2))
        return linear(layer_norm(x[:, 0], sd, "proj.0"), sd, "proj.2")


def budget(m, t, l, c):
    """evl_eval's float32 logits against float64 ones, in units u of max |logit|: the
    forward half of tests/support/rounding_budget.h (19 chained inner products per
    decoder layer, 3 for the head, each ~sqrt(n) u; n the longest inner product)."""
    return (19 * m + 3) * math.sqrt(max(c, 4 * c, t * l))


def tolerance(m, t, l, c, max_logit):
    """|d logit| <= budget u max|logit|; a softmax moves by <= 2 max|d logit|; the
    softmax, the view mean and the float32 file add <= 8 u."""
    u = 2.0 ** -24
    return 2 * budget(m, t, l, c) * u * max(max_logit, 1.0) + 8 * u


class HeadTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ckpt = torch.load(os.path.join(FIXTURE, "run", "last.pth"), map_location="cpu")
        cls.head = ReferenceHead(ckpt["model"])

    def fused(self, ds, loader):
        """{video_id: (mean softmax over its views, label)} and the largest |logit|."""
        logits = []
        for feats, labels in loader:
            self.assertEqual(len(feats), self.head.layers)
            logits.append(self.head(feats))
        logits = torch.cat(logits)
        self.assertEqual(len(logits), len(ds))
        probs = logits.softmax(-1)
        return ({cl["video_id"]: (probs[cl["records"]].mean(0), cl["label"])
                 for cl in ds.clips()}, float(logits.abs().max()))

    def check(self, name, **loader_args):
        d = os.path.join(FIXTURE, f"cache-{name}")
        ds = evl.torch.CacheDataset(d, decoder_layers=self.head.layers)
        feats, label = ds[0]
        m = ds.manifest
        t, l, c, hb = (m["frames"], 1 + m["backbone"]["grid"] ** 2, m["backbone"]["width"],
                       m["backbone"]["heads"])
        self.assertEqual(len(feats), self.head.layers)
        self.assertEqual(tuple(feats[0]["out"].shape), (t, l, c))
        self.assertEqual(tuple(feats[0]["q"].shape), (t, l, hb, c // hb))
        self.assertEqual(tuple(feats[0]["k"].shape), (t, l, hb, c // hb))
        self.assertIsInstance(label, int)
        fused, max_logit = self.fused(ds, DataLoader(ds, batch_size=3, **loader_args))
        with h5py.File(os.path.join(FIXTURE, f"scores-{name}.h5"), "r") as f:
            scores = f["scores"][...]
            ids = [s.decode() for s in f["video_ids"][...]]
            labels = f["labels"][...]
            self.assertEqual(f.attrs["kind"], "probabilities")
        self.assertEqual(sorted(ids), sorted(fused))
        tol = tolerance(self.head.layers, t, l, c, max_logit)
        for row, vid in enumerate(ids):
            want, want_label = fused[vid]
            self.assertEqual(labels[row], want_label)
            np.testing.assert_allclose(scores[row], want.numpy(), rtol=0, atol=tol,
                                       err_msg=f"{name} video {vid}")

    def test_dataloader_two_workers_matches_evl_eval(self):
        for name in NAMES:
            with self.subTest(cache=name):
                self.check(name, num_workers=2)

    def test_the_comparison_can_fail(self):
        # Q and K swapped (a plausible loader bug) moves the probabilities by more than
        # twice the tolerance, so the match above is evidence of the right Q/K (the
        # fixture's head, trained 8 steps, leans on its cross attention that little).
        ds = evl.torch.CacheDataset(os.path.join(FIXTURE, "cache-compact-fp16"),
                                    decoder_layers=self.head.layers)
        feats, _ = next(iter(DataLoader(ds, batch_size=len(ds))))
        logits = self.head(feats)
        swapped = self.head([{"out": f["out"], "q": f["k"], "k": f["q"]} for f in feats])
        m = ds.manifest
        tol = tolerance(self.head.layers, m["frames"], 1 + m["backbone"]["grid"] ** 2,
                        m["backbone"]["width"], float(logits.abs().max()))
        self.assertGreater(float((swapped.softmax(-1) - logits.softmax(-1)).abs().max()),
                           2 * tol)

    def test_spawned_workers(self):
        self.check("compact-fp8", num_workers=2, multiprocessing_context="spawn")

    def test_fewer_decoder_layers_are_the_last_ones(self):
        d = os.path.join(FIXTURE, "cache-compact-fp16")
        full, last = evl.torch.CacheDataset(d), evl.torch.CacheDataset(d, decoder_layers=1)
        f, _ = full[3]
        g, _ = last[3]
        self.assertEqual(len(g), 1)
        for key in ("out", "q", "k"):
            self.assertTrue(torch.equal(g[0][key], f[-1][key]))
        with self.assertRaises(ValueError):
            evl.torch.CacheDataset(d, decoder_layers=len(f) + 1)


if __name__ == "__main__":
    FIXTURE = sys.argv.pop(1)
    unittest.main()
