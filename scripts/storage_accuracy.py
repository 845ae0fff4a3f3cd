#!/usr/bin/python3
"""What int8/fp8 storage costs a trained head, measured over several seeds.

One extraction in fp32 (compact) is the reference; `evl_cache convert` makes
its fp16, int8 and fp8 copies, so every cache holds the same features rounded
differently and nothing else differs. Per seed s:
  - a head is trained on the fp16 train cache; `evl_cache compare` against the
    fp32 val cache gives, for each storage dtype, the view-fused probabilities'
    max |dp| and the top-1 agreement with fp32 features. fp16 against fp32 is
    the head's own sensitivity floor: what the default storage already costs;
    int8 against fp16 is what the issue's criterion reads;
  - a head is trained (same seed) on the int8 train cache and evaluated on
    int8 val: its top-1 against the fp16 head's, paired per seed.
The spread of top-1 over seeds is the yardstick for "within a point".

    storage_accuracy.py BIN_DIR --work DIR [--seeds 3] [--steps 250]
        [--outliers] [--per-class 150] [--lr 2e-3] [--json OUT.json]

Default: the table-8 miniature (tests/integration/table8_test.py: six motion
classes, a 4-block width-128 random backbone with tied Q/K). --outliers uses
the CLIP-like outlier fixture instead (scripts/make_clip_backbone.py
--outliers, the outliers made in block 1). Heads train with one thread (tiny
heads gain nothing from two, and OpenMP threads stall when other work shares
the cores). Takes minutes per seed on 2 cores; not part of `make test`.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PY = "/usr/bin/python3"
CLASSES = "panning_right,panning_left,panning_down,panning_up,fading_in,fading_out"
DTYPES = ("fp16", "int8", "fp8")


def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.stdout.write(open(log).read()[-4000:])
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(cmd)}")


def correct_per_clip(scores_h5):
    import h5py
    import numpy as np
    with h5py.File(scores_h5, "r") as f:
        return np.argmax(f["scores"][()], axis=1) == f["labels"][()]


def mcnemar(a, b):
    """Two-sided exact McNemar p of paired per-clip correctness a, b."""
    wins, losses = int((b & ~a).sum()), int((~b & a).sum())
    n = wins + losses
    if n == 0:
        return 1.0, wins, losses
    k = max(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k, n + 1)) / 2 ** n
    return min(1.0, 2 * tail), wins, losses


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bin")
    ap.add_argument("--work", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=250)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--per-class", type=int, default=150)
    ap.add_argument("--outliers", action="store_true")
    ap.add_argument("--json")
    a = ap.parse_args()
    w = os.path.abspath(a.work)
    os.makedirs(w, exist_ok=True)
    b = lambda tool: os.path.join(a.bin, tool)
    t0 = time.time()
    data, bb = os.path.join(w, "data"), os.path.join(w, "backbone.pt")
    if not os.path.exists(os.path.join(data, "val.txt")):
        run([PY, os.path.join(ROOT, "scripts/make_motion_dataset.py"), "--out", data,
             "--classes", CLASSES, "--per-class", str(a.per_class), "--frames", "16",
             "--size", "64x64", "--seed", "0", "--split-ratio", "0.6"], os.path.join(w, "dataset.log"))
    if not os.path.exists(bb):
        extra = ["--outliers", "--outlier-block", "1"] if a.outliers else []
        run([PY, os.path.join(ROOT, "scripts/make_clip_backbone.py"), "--width", "128",
             "--layers", "4", "--patch", "8", "--image-size", "32", "--seed", "0", "--tied-qk",
             "--pos-scale", "0.3", "-o", bb] + extra, os.path.join(w, "backbone.log"))
    cache = lambda split, dtype: os.path.join(w, f"cache-{split}-{dtype}")
    for split in ("train", "val"):
        if not os.path.exists(os.path.join(cache(split, "fp32"), "manifest.json")):
            run([b("evl_extract"), "--list", os.path.join(data, f"{split}.txt"), "--root", data,
                 "--backbone", bb, "--frames", "8", "--stride", "2", "--layers", "last2",
                 "--store", "compact", "--dtype", "fp32", "--threads", "2",
                 "--out", cache(split, "fp32")], os.path.join(w, f"extract-{split}.log"))
        for dtype in DTYPES:
            if not os.path.exists(os.path.join(cache(split, dtype), "manifest.json")):
                run([b("evl_cache"), "convert", cache(split, "fp32"), cache(split, dtype),
                     "--dtype", dtype], os.path.join(w, f"convert-{split}-{dtype}.log"))
    env = dict(os.environ, OMP_NUM_THREADS="1")

    def train(dtype, seed):
        out = os.path.join(w, f"run-{dtype}-s{seed}")
        if not os.path.exists(os.path.join(out, "last.pth")):
            with open(out + ".log", "w") as f:
                r = subprocess.run(
                    [b("evl_train_head"), "--cache", cache("train", dtype), "--out", out,
                     "--steps", str(a.steps), "--batch-size", "32", "--lr", str(a.lr),
                     "--seed", str(seed), "--eval-every", "0", "--save-every", "0",
                     "--log-every", "0", "--threads", "1"], stdout=f, stderr=subprocess.STDOUT,
                    env=env)
            if r.returncode != 0:
                raise SystemExit(f"training {out} failed: see {out}.log")
        scores = os.path.join(w, f"scores-{dtype}-s{seed}.h5")
        run([b("evl_eval"), "--cache", cache("val", dtype), "--checkpoint",
             os.path.join(out, "last.pth"), "--scores", scores, "--threads", "1"], out + "-eval.log")
        return os.path.join(out, "last.pth"), correct_per_clip(scores)

    def compare(ref, cand, head, tag):
        out = os.path.join(w, f"compare-{tag}.json")
        run([b("evl_cache"), "compare", cache("val", ref), cache("val", cand), "--checkpoint", head,
             f"--json={out}"], out[:-5] + ".log")
        j = json.load(open(out))
        h = j["head"]
        return {"max_abs_dp": h["max_abs_diff"], "top1_agreement": h["top1_agreement"],
                "x_rel_rms": j["features"]["overall"]["x"]["rel_rms"]}

    rows = []
    for seed in range(a.seeds):
        head, c16 = train("fp16", seed)
        row = {"seed": seed, "top1_fp16": float(c16.mean())}
        for cand in DTYPES:
            row[f"{cand}_vs_fp32"] = compare("fp32", cand, head, f"fp32-{cand}-s{seed}")
        for cand in ("int8", "fp8"):
            row[f"{cand}_vs_fp16"] = compare("fp16", cand, head, f"fp16-{cand}-s{seed}")
        _, c8 = train("int8", seed)
        row["top1_int8"] = float(c8.mean())
        p, wins, losses = mcnemar(c16, c8)
        row["int8_vs_fp16_mcnemar"] = {"p": p, "won": wins, "lost": losses}
        rows.append(row)
        print(json.dumps(row), flush=True)

    def stat(values):
        m = statistics.mean(values)
        return m, statistics.stdev(values) if len(values) > 1 else float("nan")

    d = [r["top1_int8"] - r["top1_fp16"] for r in rows]
    s16, s8, sd = stat([r["top1_fp16"] for r in rows]), stat([r["top1_int8"] for r in rows]), stat(d)
    n = len(correct_per_clip(os.path.join(w, "scores-fp16-s0.h5")))
    print(f"\n{'outlier fixture' if a.outliers else 'table-8 miniature'}: {len(rows)} seeds, "
          f"{a.steps} steps, {n} val clips ({time.time() - t0:.0f} s)")
    print("| seed | top-1 fp16 head | top-1 int8 head | fp16 vs fp32: max dp, agree | "
          "int8 vs fp16 | fp8 vs fp16 |")
    print("|---|---|---|---|---|---|")
    fmt = lambda c: f"{c['max_abs_dp']:.2g}, {100 * c['top1_agreement']:.1f}%"
    for r in rows:
        print(f"| {r['seed']} | {100 * r['top1_fp16']:.1f}% | {100 * r['top1_int8']:.1f}% | "
              f"{fmt(r['fp16_vs_fp32'])} | {fmt(r['int8_vs_fp16'])} | {fmt(r['fp8_vs_fp16'])} |")
    print(f"top-1 fp16 heads {100 * s16[0]:.1f} +- {100 * s16[1]:.1f}, int8 heads "
          f"{100 * s8[0]:.1f} +- {100 * s8[1]:.1f}; int8 - fp16 per seed {100 * sd[0]:+.2f} "
          f"+- {100 * sd[1]:.2f} points (mean +- sd over seeds)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"outliers": a.outliers, "steps": a.steps, "val_clips": n, "rows": rows,
                       "top1_diff_mean": sd[0], "top1_diff_sd": sd[1],
                       "top1_fp16_sd": s16[1]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
