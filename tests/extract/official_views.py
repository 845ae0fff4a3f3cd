#!/usr/bin/python3
"""Independent reference for views_test: the official EVL test pipeline
(video_dataset/dataset.py as described in shared/reference §4), written from
the description with PyAV + PyTorch. Writes float32 (V, T, 3, S, S) to OUT.
usage: official_views.py VIDEO FRAMES STRIDE TEMPORAL_VIEWS SPATIAL_VIEWS OUT
       official_views.py --resize H W OH OW OUT   (F.interpolate of a formula input)"""
import sys, math
import av, numpy as np, torch
import torch.nn.functional as F

MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]

if sys.argv[1] == "--resize":
    h, w, oh, ow = map(int, sys.argv[2:6])
    i = torch.arange(2 * 3 * h * w, dtype=torch.float64)
    x = torch.sin(i * 0.37).float().view(2, 3, h, w)
    y = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False)
    y.numpy().tofile(sys.argv[6])
    sys.exit(0)

path, T, stride, tv, sv, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
frames = {}
with av.open(path) as c:
    for f in c.decode(video=0):
        frames[f.pts] = f.to_ndarray(format="rgb24")
frames = torch.as_tensor(np.stack([frames[k] for k in sorted(frames)]))  # T,H,W,C
frames = frames.float() / 255
frames = (frames - torch.Tensor(MEAN)) / torch.Tensor(STD)
frames = frames.permute(3, 0, 1, 2)  # C,T,H,W
C, N, H, W = frames.shape
S = 224
if H < W:
    nh, nw = S, W * S // H
else:
    nh, nw = H * S // W, S
frames = F.interpolate(frames, size=(nh, nw), mode="bilinear", align_corners=False)
span = (T - 1) * stride + 1
if N < span:
    frames = torch.cat([frames, frames[:, -1:].repeat(1, span - N, 1, 1)], dim=1)
slide = frames.shape[1] - span
starts = [slide // 2] if tv == 1 else [round(slide / (tv - 1) * i) for i in range(tv)]
margin_h, margin_w = nh - S, nw - S
views = []
for s in range(sv):
    if sv == 1:
        oh, ow = margin_h // 2, margin_w // 2
    else:
        oh = margin_h * s // (sv - 1)
        ow = margin_w * s // (sv - 1)
    crop = frames[:, :, oh:oh + S, ow:ow + S]
    for st in starts:
        views.append(crop[:, st:st + span:stride].permute(1, 0, 2, 3))
torch.stack(views).contiguous().numpy().tofile(out)
