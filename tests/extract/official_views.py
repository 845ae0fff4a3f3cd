#!/usr/bin/python3
"""Independent reference for views_test: the official EVL test pipeline
(video_dataset/dataset.py as described in docs/OFFICIAL_EVL.md §8), written from
the description with PyAV + PyTorch. Writes float32 (V, T, 3, S, S) to OUT.
usage: official_views.py VIDEO FRAMES STRIDE TEMPORAL_VIEWS SPATIAL_VIEWS OUT [VIDEO ... OUT]...
       official_views.py --resize H W OH OW OUT [H W OH OW OUT]...
(several groups per call: one interpreter start for a whole test)"""
import sys
import av, numpy as np, torch
import torch.nn.functional as F

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]


def resize_case(h, w, oh, ow, out):
    i = torch.arange(2 * 3 * h * w, dtype=torch.float64)
    x = torch.sin(i * 0.37).float().view(2, 3, h, w)
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    y.numpy().tofile(out)


def views_case(path, T, stride, tv, sv, out):
    frames = {}
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames[f.pts] = f.to_ndarray(format="rgb24")
    frames = torch.as_tensor(np.stack([frames[k] for k in sorted(frames)]))  # N,H,W,C
    N, H, W, _ = frames.shape
    span = (T - 1) * stride + 1
    # The official code pads the clip with copies of the last frame to `span`
    # and then takes frames start + i*stride; resizing is per frame, so taking
    # those frames (index clamped to N-1) before resizing gives the same views.
    padded = max(N, span)
    slide = padded - span
    starts = [slide // 2] if tv == 1 else [round(slide / (tv - 1) * i) for i in range(tv)]
    S = 224
    if H < W:
        nh, nw = S, W * S // H
    else:
        nh, nw = H * S // W, S
    margin_h, margin_w = nh - S, nw - S
    clips = []
    for st in starts:
        idx = [min(st + i * stride, N - 1) for i in range(T)]
        x = frames[idx].float() / 255
        x = (x - torch.Tensor(MEAN)) / torch.Tensor(STD)
        x = x.permute(3, 0, 1, 2)  # C,T,H,W
        clips.append(F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False))
    views = []
    for s in range(sv):
        if sv == 1:
            oh, ow = margin_h // 2, margin_w // 2
        else:
            oh = margin_h * s // (sv - 1)
            ow = margin_w * s // (sv - 1)
        for clip in clips:
            views.append(clip[:, :, oh:oh + S, ow:ow + S].permute(1, 0, 2, 3))
    torch.stack(views).contiguous().numpy().tofile(out)


args = sys.argv[1:]
if args[0] == "--resize":
    args = args[1:]
    for g in range(0, len(args), 5):
        h, w, oh, ow = map(int, args[g:g + 4])
        resize_case(h, w, oh, ow, args[g + 4])
else:
    for g in range(0, len(args), 6):
        path, T, stride, tv, sv, out = args[g:g + 6]
        views_case(path, int(T), int(stride), int(tv), int(sv), out)
