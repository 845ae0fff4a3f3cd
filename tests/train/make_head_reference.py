#!/usr/bin/python3
"""Independent PyTorch reference for the EVL decoder head (tests/train/head_test.cpp).

Written from docs/OFFICIAL_EVL.md §3-§6, not from
the C++ code: the temporal cross attention is the official *naive* form
(materialise w[idx] as (P, P, C), einsum), the decoder attention uses the
official einsums. Writes tests/fixtures/head/:
  head_reference.pt   flat dict: config ints, float32 inputs x/q/k per layer, labels,
                      float32 params ("param/<name>"); computed from them in float64:
                      logits and loss of step 1, the gradient of each step s = 0, 1, 2
                      ("grad<s>/<name>"), params after 3 AdamW+cosine steps
                      ("step3/<name>"), and per key-bias the sum of |dL/dk| that its
                      (exactly zero) step-1 gradient cancels ("kgrad_abs/<name>")
  official_ddp.pth    torch.save({'model': ddp.state_dict()}) as checkpoint.py does:
                      one-key dict, OrderedDict with _metadata, 'module.' prefix
  official_bare.pth   torch.save(model.state_dict()): a bare OrderedDict
Run: /usr/bin/python3 tests/train/make_head_reference.py
"""
import copy
import math
import os
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "head")

# Tiny but complete: every module on, 2 decoder layers, 3x3 grid.
B, T, G, C, H, M, K = 3, 4, 3, 16, 2, 2, 5
L = 1 + G * G
LR, WD, STEPS = 1e-2, 0.05, 3


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Attention(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(c, c) for _ in range(4))

    def forward(self, q, k, v):
        n, nq, c = q.shape
        nk = k.shape[1]
        q = self.q_proj(q).view(n, nq, self.h, c // self.h)
        k = self.k_proj(k)
        if k.requires_grad:  # kept to measure what the key bias gradient cancels (see main)
            k.retain_grad()
            self.keys = k
        k = k.view(n, nk, self.h, c // self.h)
        v = self.v_proj(v).view(n, nk, self.h, c // self.h)
        aff = torch.einsum('nqhc,nkhc->nqkh', q / math.sqrt(c // self.h), k).softmax(dim=-2)
        mix = torch.einsum('nqlh,nlhc->nqhc', aff, v)
        return self.out_proj(mix.flatten(-2))


class DecoderLayer(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.attn = Attention(c, h)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(c), nn.LayerNorm(c), nn.LayerNorm(c)
        self.mlp = nn.Sequential(OrderedDict([('fc1', nn.Linear(c, 4 * c)), ('act', QuickGELU()),
                                              ('dropout', nn.Dropout(0.5)), ('fc2', nn.Linear(4 * c, c))]))

    def forward(self, x, y):
        y_norm = self.norm3(y)
        x = x + self.attn(self.norm1(x), y_norm, y_norm)
        return x + self.mlp(self.norm2(x))


class TemporalCrossAttention(nn.Module):
    def __init__(self, g, c):
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros([(2 * g - 1) ** 2, c]))
        self.w2 = nn.Parameter(torch.zeros([(2 * g - 1) ** 2, c]))
        i = torch.arange(g)
        qi, qj, ki, kj = torch.meshgrid(i, i, i, i, indexing='ij')
        self.idx = ((qi - ki + g - 1) * (2 * g - 1) + (qj - kj + g - 1)).reshape(g * g, g * g)

    def forward_half(self, q, k, w):
        q, k = q[:, :, 1:], k[:, :, 1:]  # drop CLS: (N, T', P, H, Dh)
        attn = torch.einsum('ntqhd,ntkhd->ntqkh', q / math.sqrt(q.size(-1)), k)
        attn = attn.softmax(dim=-2).mean(dim=-1)  # softmax over keys, then head mean
        return torch.einsum('ntqk,qkc->ntqc', attn, w[self.idx])

    def forward(self, q, k):  # q, k: (N, T, L, H, Dh)
        n, t, l = q.shape[:3]
        ret = torch.zeros([n, t, l, self.w1.size(-1)], dtype=q.dtype)
        ret[:, 1:, 1:] += self.forward_half(q[:, 1:], k[:, :-1], self.w1)
        ret[:, :-1, 1:] += self.forward_half(q[:, :-1], k[:, 1:], self.w2)
        return ret


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros([C]))
        self.decoder_layers = nn.ModuleList([DecoderLayer(C, H) for _ in range(M)])
        self.temporal_conv = nn.ModuleList([nn.Conv1d(C, C, 3, 1, 1, groups=C) for _ in range(M)])
        self.temporal_pos_embed = nn.ParameterList([nn.Parameter(torch.zeros([T, C])) for _ in range(M)])
        self.cross_attention = nn.ModuleList([TemporalCrossAttention(G, C) for _ in range(M)])

    def forward(self, xs, qs, ks):
        n = xs[0].size(0)
        x = self.cls_token.view(1, 1, -1).repeat(n, 1, 1)
        for i in range(M):
            X = xs[i]
            conv_in = X.permute(0, 2, 3, 1).flatten(0, 1)  # (N*L, C, T)
            conv = self.temporal_conv[i](conv_in).view(n, L, C, T).permute(0, 3, 1, 2)
            q = qs[i].view(n, T, L, H, C // H)
            k = ks[i].view(n, T, L, H, C // H)
            Y = X + conv + self.temporal_pos_embed[i].view(1, T, 1, C) + self.cross_attention[i](q, k)
            x = self.decoder_layers[i](x, Y.flatten(1, 2))
        return x


class EVLHead(nn.Module):
    def __init__(self):
        super().__init__()
        self.decoder = Decoder()
        self.proj = nn.Sequential(nn.LayerNorm(C), nn.Dropout(0.5), nn.Linear(C, K))

    def forward(self, xs, qs, ks):
        return self.proj(self.decoder(xs, qs, ks)[:, 0, :])


class DDP(nn.Module):  # what DistributedDataParallel's state_dict looks like: 'module.' prefix
    def __init__(self, m):
        super().__init__()
        self.module = m


def main():
    torch.manual_seed(1234)
    model = EVLHead()
    with torch.no_grad():  # random values everywhere, zero-init parameters included
        for name, p in model.named_parameters():
            p.copy_(torch.randn_like(p) * (0.3 if 'temporal' in name or 'cross' in name else 0.2))
    model.eval()  # no dropout: C++ runs the same weights in eval mode

    xs = [torch.randn(B, T, L, C) for _ in range(M)]
    qs = [torch.randn(B, T, L, C) * 2 for _ in range(M)]
    ks = [torch.randn(B, T, L, C) * 2 for _ in range(M)]
    labels = torch.tensor([1, 4, 0])

    out = {'B': B, 'T': T, 'grid': G, 'C': C, 'heads': H, 'layers': M, 'classes': K,
           'lr': LR, 'weight_decay': WD, 'steps': STEPS, 'labels': labels}
    for i in range(M):
        out[f'x/{i}'], out[f'q/{i}'], out[f'k/{i}'] = xs[i], qs[i], ks[i]
    for name, p in model.named_parameters():
        out[f'param/{name}'] = p.detach().clone()

    # The references are computed in float64 from the float32 parameters and
    # inputs above (exactly representable in float64), so they carry no float32
    # rounding of any machine: the C++ side runs float32 and is compared with
    # bounds derived from float32 roundoff (head_test.cpp).
    ref = copy.deepcopy(model).double()
    xs64, qs64, ks64 = ([t.double() for t in ts] for ts in (xs, qs, ks))
    opt = torch.optim.AdamW(ref.parameters(), lr=LR, weight_decay=WD)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    for step in range(STEPS):
        opt.zero_grad()
        logits = ref(xs64, qs64, ks64)
        loss = F.cross_entropy(logits, labels)
        loss.backward()
        for name, p in ref.named_parameters():  # the gradient of every step (Adam's inputs)
            out[f'grad{step}/{name}'] = p.grad.detach().clone()
        if step == 0:
            out['logits'], out['loss'] = logits.detach().clone(), loss.detach().clone()
            # The key bias gradient is sum_{n,j} dL/dk_{n,j}, which the softmax makes
            # exactly 0; what rounding leaves of it scales with sum |dL/dk_{n,j}|.
            for i, layer in enumerate(ref.decoder.decoder_layers):
                out[f'kgrad_abs/decoder.decoder_layers.{i}.attn.k_proj.bias'] = \
                    layer.attn.keys.grad.abs().sum(dim=(0, 1)).detach().clone()
        opt.step()
        sched.step()
    for name, p in ref.named_parameters():
        out[f'step3/{name}'] = p.detach().clone()
    torch.save(out, os.path.join(OUT, 'head_reference.pt'))

    # Official-format files, from the *initial* weights (so logits == out['logits']).
    init = EVLHead()
    init.load_state_dict({k[len('param/'):]: v for k, v in out.items() if k.startswith('param/')})
    torch.save({'model': DDP(init).state_dict()}, os.path.join(OUT, 'official_ddp.pth'))
    torch.save(init.state_dict(), os.path.join(OUT, 'official_bare.pth'))
    print('wrote', OUT, 'loss', float(out['loss']))


if __name__ == '__main__':
    main()
