#!/usr/bin/python3
"""The paper's Table 8 (temporal-module ablation), in miniature, with the real tools.

A synthetic motion dataset (scripts/make_motion_dataset.py) whose classes no
single frame tells apart: the camera panning right/left/down/up and the light
fading in/out. Each class has a reversed twin whose frames are its own frames
played backwards, so a head that pools frames without knowing their order can
at best tell which pair a clip belongs to: its ceiling here is 1/3 (1/4 within
the four pans, 1/2 within the fade pair), the "chance" of this task for an
order-blind model. A tiny CLIP-shaped backbone with random weights (query = key
projections, see scripts/make_clip_backbone.py) feeds evl_extract; evl_train_head
trains five heads from the cache: all temporal modules, none, and each alone.

Checks, each a one-sided exact binomial test at level ALPHA = 1e-3 on the 360
validation clips (per-clip predictions from evl_eval), so that no threshold is
a number read off one machine's run (rounding, which differs between CPUs,
moves these accuracies by a few points from run to run):
  - all modules on tells every reversed pair apart beyond what any order-blind
    head can (1/2 within a pair, whose two classes look alike to it);
  - none stays at the order-blind ceiling: its number of correct clips is not
    improbably high for Binomial(360, 1/3);
  - each module alone beats none: exact McNemar test on the clips where the
    two heads disagree (under "no better", a coin flip per such clip).
(What each module can see here: the temporal convolution, frame-to-frame
differences; the position embedding, *when* something is bright; the cross-frame
attention, where content moved. So the embedding alone solves the fades, the
attention the pans.) A single module learns its part slower than all three: the
position embedding and the cross attention alone are trained LONG_RUN_FACTOR
times longer (at the common length the attention's gain, a few points, is within
the run-to-run spread).

Measured on the 2-core VM (heads in CPU bf16 autocast; 250 / 1000 steps): all
90.0%, none 28.3%, conv 88.3%, position embedding 43.9%, cross attention 66.4%
(McNemar p vs none: conv 1e-54, position embedding 2e-7, cross attention 2e-30).

Storage (issue 15): the all-modules head is also trained and evaluated on an
int8 compact cache of the same clips; its per-clip correctness must not differ
significantly from the fp16 head's (two-sided exact McNemar at ALPHA), and
`evl_cache compare` reports what int8 features do to the fp16 head's fused
probabilities (max |dp|, top-1 agreement; printed).
The paper's SSv2 column (CLIP ViT-B/16: none 47.2, T-Conv 57.1, T-PE 58.5, T-CA
59.5, all 61.0) has each module alone recover most of the gain; with a random
backbone the convolution does most of the work here, while the embedding and the
attention each solve only their part (the fades, the pans).

    table8_test.py BIN_DIR [--keep DIR]
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
PY = "/usr/bin/python3"
CLASSES = "panning_right,panning_left,panning_down,panning_up,fading_in,fading_out"
ORDER_BLIND_CEILING = 1 / 3
ALPHA = 1e-3
LONG_RUN_FACTOR = 4
LONG_RUNS = ("pos_embed", "cross_attention")
RUNS = {  # name: switches
    "all": [],
    "none": ["--no-temporal-conv", "--no-temporal-pos-embed", "--no-temporal-cross-attention"],
    "conv": ["--no-temporal-pos-embed", "--no-temporal-cross-attention"],
    "pos_embed": ["--no-temporal-conv", "--no-temporal-cross-attention"],
    "cross_attention": ["--no-temporal-conv", "--no-temporal-pos-embed"],
}


def run(cmd, log):
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        sys.stdout.write(open(log).read()[-4000:])
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(cmd)}")


def binomial_tail(k, n, p):
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def correct_per_clip(scores_h5):
    import h5py
    import numpy as np
    with h5py.File(scores_h5, "r") as f:
        scores, labels = f["scores"][()], f["labels"][()]
    return np.argmax(scores, axis=1) == labels, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    ap.add_argument("--steps", type=int, default=250)
    a = ap.parse_args()
    work = a.keep or tempfile.mkdtemp(prefix="evl_table8_")
    os.makedirs(work, exist_ok=True)
    t0 = time.time()
    try:
        data, bb = os.path.join(work, "data"), os.path.join(work, "backbone.pt")
        run([PY, os.path.join(ROOT, "scripts/make_motion_dataset.py"), "--out", data,
             "--classes", CLASSES, "--per-class", "150", "--frames", "16", "--size", "64x64",
             "--seed", "0", "--split-ratio", "0.6"], os.path.join(work, "dataset.log"))
        run([PY, os.path.join(ROOT, "scripts/make_clip_backbone.py"), "--width", "128",
             "--layers", "4", "--patch", "8", "--image-size", "32", "--seed", "0", "--tied-qk",
             "--pos-scale", "0.3", "-o", bb], os.path.join(work, "backbone.log"))
        common = ["--root", data, "--backbone", bb, "--frames", "8", "--stride", "2",
                  "--layers", "last2", "--threads", "2"]
        for split in ("train", "val"):
            run([os.path.join(a.bin, "evl_extract"), "--list", os.path.join(data, f"{split}.txt"),
                 "--out", os.path.join(work, f"cache-{split}")] + common,
                os.path.join(work, f"extract-{split}.log"))
        top1, correct, labels = {}, {}, None
        for name, switches in RUNS.items():
            out = os.path.join(work, f"run-{name}")
            steps = a.steps * (LONG_RUN_FACTOR if name in LONG_RUNS else 1)
            run([os.path.join(a.bin, "evl_train_head"), "--cache", os.path.join(work, "cache-train"),
                 "--val-cache", os.path.join(work, "cache-val"), "--out", out,
                 "--steps", str(steps), "--batch-size", "32", "--lr", "2e-3", "--seed", "0",
                 "--eval-every", "0", "--save-every", "0", "--log-every", "0", "--threads", "2"]
                + switches, out + ".log")
            lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
            top1[name] = lines[-1]["val_top1"]
            scores = os.path.join(work, f"scores-{name}.h5")
            run([os.path.join(a.bin, "evl_eval"), "--cache", os.path.join(work, "cache-val"),
                 "--checkpoint", os.path.join(out, "last.pth"), "--scores", scores,
                 "--threads", "2"], out + "-eval.log")
            correct[name], labels = correct_per_clip(scores)
            if abs(correct[name].mean() - top1[name]) > 0.5 / len(labels):
                raise SystemExit(f"{name}: evl_eval top-1 {correct[name].mean():.4f} is not the "
                                 f"trainer's validation top-1 {top1[name]:.4f}")
            print(f"{name:<16} val top-1 {100 * top1[name]:5.1f}% ({steps} steps)", flush=True)
        # The same "all" head trained and evaluated on an int8 compact cache of
        # the same clips (issue 15: within a point of fp16), and what int8 does
        # to the fp16-trained head's view-fused probabilities (evl_cache compare).
        for split in ("train", "val"):
            run([os.path.join(a.bin, "evl_extract"), "--list", os.path.join(data, f"{split}.txt"),
                 "--out", os.path.join(work, f"cache-{split}-int8"), "--store", "compact",
                 "--dtype", "int8"] + common, os.path.join(work, f"extract-{split}-int8.log"))
        out = os.path.join(work, "run-all-int8")
        run([os.path.join(a.bin, "evl_train_head"), "--cache", os.path.join(work, "cache-train-int8"),
             "--val-cache", os.path.join(work, "cache-val-int8"), "--out", out,
             "--steps", str(a.steps), "--batch-size", "32", "--lr", "2e-3", "--seed", "0",
             "--eval-every", "0", "--save-every", "0", "--log-every", "0", "--threads", "2"],
            out + ".log")
        scores = os.path.join(work, "scores-all-int8.h5")
        run([os.path.join(a.bin, "evl_eval"), "--cache", os.path.join(work, "cache-val-int8"),
             "--checkpoint", os.path.join(out, "last.pth"), "--scores", scores, "--threads", "2"],
            out + "-eval.log")
        correct["all_int8"], _ = correct_per_clip(scores)
        compare_json = os.path.join(work, "compare-int8.json")
        run([os.path.join(a.bin, "evl_cache"), "compare", os.path.join(work, "cache-val"),
             os.path.join(work, "cache-val-int8"), "--checkpoint",
             os.path.join(work, "run-all", "last.pth"), f"--json={compare_json}"],
            os.path.join(work, "compare-int8.log"))
        cmp = json.load(open(compare_json))
        print(f"int8 compact cache: all modules val top-1 {100 * correct['all_int8'].mean():5.1f}% "
              f"(fp16 qk {100 * correct['all'].mean():5.1f}%); the fp16 head on int8 features: "
              f"{json.dumps(cmp.get('head', {}))}", flush=True)
        n = len(labels)
        print(f"(order-blind ceiling {100 * ORDER_BLIND_CEILING:.1f}%, chance "
              f"{100 / 6:.1f}%; {n} validation clips; {time.time() - t0:.0f} s)")
        errors = []
        # Classes 2i and 2i+1 are reversed twins (CLASSES order): an order-blind
        # head is right on at most half of a pair's clips, in expectation.
        for pair in range(len(CLASSES.split(",")) // 2):
            in_pair = labels // 2 == pair
            k, m = int(correct["all"][in_pair].sum()), int(in_pair.sum())
            p = binomial_tail(k, m, 0.5)
            print(f"all modules, pair {pair}: {k}/{m} right, P(>= that | order-blind) = {p:.2g}")
            if p > ALPHA:
                errors.append(f"all modules: pair {pair} ({k}/{m}) not told apart (p {p:.2g})")
        k = int(correct["none"].sum())
        p = binomial_tail(k, n, ORDER_BLIND_CEILING)
        print(f"no module: {k}/{n} right, P(>= that | ceiling) = {p:.2g}")
        if p <= ALPHA:
            errors.append(f"no module: {top1['none']:.3f} is above the order-blind ceiling "
                          f"(p {p:.2g})")
        for name in ("conv", "pos_embed", "cross_attention"):
            wins = int((correct[name] & ~correct["none"]).sum())
            losses = int((~correct[name] & correct["none"]).sum())
            p = binomial_tail(wins, wins + losses, 0.5)
            print(f"{name} alone vs none: {wins} clips won, {losses} lost, McNemar p = {p:.2g}")
            if p > ALPHA:
                errors.append(f"{name} alone ({top1[name]:.3f}) does not beat none "
                              f"({top1['none']:.3f}): {wins} won, {losses} lost, p {p:.2g}")
        # int8 against fp16 storage: no significant difference (two-sided exact
        # McNemar on the clips where the two "all" heads disagree).
        wins = int((correct["all_int8"] & ~correct["all"]).sum())
        losses = int((~correct["all_int8"] & correct["all"]).sum())
        p = min(1.0, 2 * binomial_tail(max(wins, losses), wins + losses, 0.5)) if wins + losses else 1.0
        print(f"int8 compact vs fp16: {wins} clips won, {losses} lost, "
              f"{100 * (correct['all_int8'].mean() - correct['all'].mean()):+.1f} points, McNemar p = {p:.2g}")
        if p <= ALPHA:
            errors.append(f"int8 compact storage changes the all-modules head's accuracy "
                          f"({wins} won, {losses} lost, p {p:.2g})")
        if errors:
            print("FAILED:\n  " + "\n  ".join(errors))
            return 1
        print("OK")
        return 0
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
