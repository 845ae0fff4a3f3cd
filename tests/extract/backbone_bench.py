#!/usr/bin/python3
"""python3-torch baseline for bench_backbone: the same CLIP ViT (OpenAI's module structure,
nn.MultiheadAttention) loaded from the same TorchScript archive, timed on the same threads.

Prints one line `PY_JSON {...}` with seconds per batch (median of --iters after --warmup,
best of --rounds) for each mode: fp32, autocast-bf16 (torch.autocast('cpu')), bf16 (weights
and inputs converted), plus peak RSS. Run by bench_backbone; usable alone:
    /usr/bin/python3 tests/extract/backbone_bench.py --model /tmp/vit-b16.pt --threads 2
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
import make_clip_backbone as mcb  # noqa: E402


def load(path):
    sd = {k: v.float() for k, v in torch.jit.load(path, map_location="cpu").visual.state_dict().items()}
    width = sd["class_embedding"].shape[0]
    layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.resblocks."))
    patch = sd["conv1.weight"].shape[-1]
    grid = int(round((sd["positional_embedding"].shape[0] - 1) ** 0.5))
    visual = mcb.VisionTransformer(grid * patch, patch, width, layers, max(1, width // 64),
                                   sd["proj"].shape[1])
    visual.load_state_dict(sd)
    return visual.eval(), grid * patch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--modes", default="fp32,autocast-bf16,bf16")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, size = load(a.model)
    x = torch.randn(a.batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {"threads": torch.get_num_threads(), "batch": a.batch}
    for mode in a.modes.split(","):
        m, inp = model, x
        if mode == "bf16":
            import copy
            m, inp = copy.deepcopy(model).to(torch.bfloat16), x.to(torch.bfloat16)
        best = float("inf")
        for _ in range(a.rounds):
            times = []
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                        enabled=mode == "autocast-bf16"):
                for i in range(a.warmup + a.iters):
                    t0 = time.perf_counter()
                    m(inp)
                    if i >= a.warmup:
                        times.append(time.perf_counter() - t0)
            best = min(best, statistics.median(times))
        out[mode] = best
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("PY_JSON " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
