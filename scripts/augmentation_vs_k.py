#!/usr/bin/python3
"""What augmentation buys: K cached training views (with and without RandAugment)
against fresh online views, at the same step budget, on a task a head overfits.

The task: 10 motion classes of scripts/make_motion_dataset.py (the four camera
pans, the light fading in/out, a square moving right/left/down/up), only 12
training clips per class (120 clips) and 28 validation clips per class (280),
16 frames of 64x64; the tiny random backbone of the demo (width 128, 4 blocks,
patch 8, 32x32 input, tied Q/K). Every head gets the same budget: STEPS steps
of batch 16 (default 200 steps: 3,200 samples, ~27 epochs of the 120 clips),
lr 2e-3, evaluated by evl_eval on the same test-view validation cache.

Per seed s (0..N-1):
  - evl_extract --train-views 8 --seed s of the training list, once with the
    official RandAugment (rand-m7-n4-mstd0.5-inc1) and once with
    --rand-augment none; the K = 1, 2, 4 caches are the views 0..K-1 of the
    K = 8 one, copied record by record (a view's draw depends on (seed, clip,
    view) only, not on K, so they are what `--train-views K` would write; the
    script checks that once, for K = 1 of seed 0, against a real extraction: the
    features are byte-identical, only the view description says `train v/8`);
  - evl_train_head --seed s on each cache (the sampler picks one of the K
    views of a clip per epoch);
  - evl_train_head --online --seed s, with and without RandAugment: a fresh
    view (temporal start, random resized crop, RandAugment) of every clip in
    every epoch, no cache; its views of epoch e are view e of the seed-s
    cache, so K = 8 and online share their first 8 views.
Bytes stored: the training cache's record bytes (every record's value, as
`evl_cache info` counts "of records") and its size on disk (the shards'
data.mdb); online stores nothing but decodes and runs the backbone every step
(its samples/s is reported beside the cached runs').

--long-steps N also trains every K of seed 0 for N steps (cached only): does
a longer schedule change the picture?

Every tool runs with --threads 1 and OMP_WAIT_POLICY=PASSIVE, one at a time.
About 5 minutes per seed on a 2-core VM (most of it the online runs);
--long-steps 800 adds about 8. A rerun reuses finished caches and heads.
Writes WORK/results.json, WORK/augmentation_vs_k.md (the table) and
WORK/augmentation_vs_k.png (gnuplot); --docs DIR copies the two into DIR.
Not part of `make test`.

    augmentation_vs_k.py BIN_DIR --work DIR [--seeds 3] [--steps 200] [--long-steps 800]
        [--docs docs]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PY = "/usr/bin/python3"
CLASSES = ("panning_right,panning_left,panning_down,panning_up,fading_in,fading_out,"
           "moving_right,moving_left,moving_down,moving_up")
KS = (1, 2, 4, 8)
AUGS = {"ra": "rand-m7-n4-mstd0.5-inc1", "none": "none"}
BATCH = 16


def run(cmd, log, env=None):
    t = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if r.returncode != 0:
        sys.stdout.write(open(log).read()[-4000:])
        raise SystemExit(f"FAILED ({r.returncode}): {' '.join(cmd)}")
    return time.time() - t


def done(d):
    return os.path.exists(os.path.join(d, "manifest.json"))


def subset_cache(src, dst, k):
    """Views 0..k-1 of every clip of cache `src`, as a cache of k views in `dst`."""
    import lmdb
    man = json.load(open(os.path.join(src, "manifest.json")))
    tmp = dst + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for extra in ("qk_weights.evl", "provenance.json"):
        if os.path.exists(os.path.join(src, extra)):
            shutil.copy2(os.path.join(src, extra), tmp)
    shards = []
    for shard in man["shards"]:
        s = lmdb.open(os.path.join(src, shard["name"]), readonly=True, lock=False)
        d = lmdb.open(os.path.join(tmp, shard["name"]), map_size=1 << 40)
        n = 0
        with s.begin() as rt, d.begin(write=True) as wt:
            for key, value in rt.cursor():
                if int(key.split(b"/")[1]) < k:
                    wt.put(key, value)
                    n += 1
        s.close()
        d.close()
        shards.append({"name": shard["name"], "records": n})
    man["train_views"], man["shards"] = k, shards
    prov = os.path.join(tmp, "provenance.json")
    if os.path.exists(prov):
        p = json.load(open(prov))
        p["train_views"] = k
        json.dump(p, open(prov, "w"), indent=2)
    json.dump(man, open(os.path.join(tmp, "manifest.json"), "w"), indent=2)
    os.rename(tmp, dst)


def records(cache):
    """{key: value} of every record of a cache."""
    import lmdb
    out = {}
    for shard in json.load(open(os.path.join(cache, "manifest.json")))["shards"]:
        e = lmdb.open(os.path.join(cache, shard["name"]), readonly=True, lock=False)
        with e.begin() as t:
            out.update({bytes(k): bytes(v) for k, v in t.cursor()})
        e.close()
    return out


def check_subset(direct, subset):
    """The records of a K-view subset of a K=8 cache are those a --train-views K extraction
    writes, but for the view description's `train v/8` (for `train v/K`) and hence the
    record checksum (its last 8 bytes)."""
    if sorted(direct) != sorted(subset):
        raise SystemExit("subset check: the K = 1 subset has other keys than a K = 1 extraction")
    for key, a in direct.items():
        v = int(key.split(b"/")[1])
        b = subset[key].replace(f"train {v}/8 ".encode(), f"train {v}/1 ".encode(), 1)
        if len(a) != len(b) or a[:-8] != b[:-8]:
            raise SystemExit(f"subset check: record {key.decode()} of the K = 1 subset differs "
                             "from a K = 1 extraction")


def cache_bytes(cache):
    """(record bytes, data.mdb bytes on disk) of a cache."""
    rec = sum(len(v) for v in records(cache).values())
    disk = 0
    for shard in json.load(open(os.path.join(cache, "manifest.json")))["shards"]:
        disk += os.path.getsize(os.path.join(cache, shard["name"], "data.mdb"))
    return rec, disk


def top1_of(scores_h5):
    import h5py
    import numpy as np
    with h5py.File(scores_h5, "r") as f:
        return float((np.argmax(f["scores"][()], axis=1) == f["labels"][()]).mean())


def train_figures(run_dir):
    """(samples/s, training loss) of the last logged step of a run."""
    lines = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if l.strip()]
    last = [l for l in lines if l.get("samples_per_s")][-1]
    return last["samples_per_s"], last["loss"]


def mean_sd(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else float("nan"))


def plot(rows, online, long_rows, png, title):
    if not shutil.which("gnuplot"):
        print("gnuplot not found: no plot")
        return
    dat = png[:-4] + ".dat"
    with open(dat, "w") as f:
        for aug in AUGS:
            for r in (r for r in rows if r["aug"] == aug):
                f.write(f"{r['record_bytes'] / 2**20:.4f} {100 * r['top1_mean']:.3f} "
                        f"{100 * r['top1_sd']:.3f} {r['k']}\n")
            f.write("\n\n")
        for aug in AUGS:  # index 2, 3: the longer schedule, seed 0
            for r in (r for r in long_rows if r["aug"] == aug):
                f.write(f"{r['record_bytes'] / 2**20:.4f} {100 * r['top1']:.3f} 0 {r['k']}\n")
            f.write("\n\n")
    om, osd = 100 * online["ra"]["top1_mean"], 100 * online["ra"]["top1_sd"]
    nm, nsd = 100 * online["none"]["top1_mean"], 100 * online["none"]["top1_sd"]
    sps = statistics.mean(o["samples_per_s"] for o in online.values())
    long_plot = ""
    if long_rows:
        n = long_rows[0]["steps"]
        long_plot = (f", \\\n     '{dat}' index 2 using 1:2 with linespoints lw 1 dt 3 pt 6 lc rgb '#1f77b4' "
                     f"title 'cached, RandAugment, {n} steps (seed 0)', \\\n     '{dat}' index 3 using 1:2 "
                     f"with linespoints lw 1 dt 3 pt 4 lc rgb '#d62728' title 'cached, no RandAugment, "
                     f"{n} steps (seed 0)'")
    lo, hi = min(r["record_bytes"] for r in rows) / 2**20, max(r["record_bytes"] for r in rows) / 2**20
    script = f"""
set terminal pngcairo size 900,560 font ",11"
set output '{png}'
set title "{title}"
set xlabel 'training cache stored (MiB, log scale): K = 1, 2, 4, 8 views per clip'
set ylabel 'val top-1 (%), mean +- sd over seeds'
set logscale x 2
set xrange [{lo / 1.5}:{hi * 1.5}]
set key bottom right
set yrange [0:{max([100 * r['top1'] for r in long_rows] + [om + osd, nm + nsd]) + 8:.0f}]
set grid
set object 1 rectangle from {lo / 1.5},{om - osd} to {hi * 1.5},{om + osd} fillstyle transparent solid 0.12 noborder fillcolor rgb '#1f77b4' behind
set object 2 rectangle from {lo / 1.5},{nm - nsd} to {hi * 1.5},{nm + nsd} fillstyle transparent solid 0.12 noborder fillcolor rgb '#d62728' behind
plot '{dat}' index 0 using 1:2:3 with yerrorlines lw 2 pt 7 lc rgb '#1f77b4' title 'cached K views, RandAugment m7-n4', \\
     '' index 0 using 1:2:(sprintf('K=%d', $4)) with labels offset 0,1.2 notitle, \\
     '{dat}' index 1 using 1:2:3 with yerrorlines lw 2 pt 5 lc rgb '#d62728' title 'cached K views, no RandAugment', \\
     '' index 1 using 1:2:(sprintf('K=%d', $4)) with labels offset 0,-1.2 notitle, \\
     {om} with lines lw 2 dt 2 lc rgb '#1f77b4' title 'fresh online views, RandAugment (0 bytes stored; band: +- sd)', \\
     {nm} with lines lw 2 dt 2 lc rgb '#d62728' title sprintf('fresh online views, no RandAugment (online: %.0f samples/s)', {sps}){long_plot}
"""
    subprocess.run(["gnuplot"], input=script.encode(), check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bin")
    ap.add_argument("--work", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--long-steps", type=int, default=0,
                    help="also train every K of seed 0 (both augmentations, cached only) "
                         "for this many steps: does a longer schedule change the picture?")
    ap.add_argument("--docs", help="copy the table and the plot into this folder")
    a = ap.parse_args()
    w = os.path.abspath(a.work)
    os.makedirs(w, exist_ok=True)
    b = lambda tool: os.path.join(os.path.abspath(a.bin), tool)
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    t0 = time.time()
    data, bb = os.path.join(w, "data"), os.path.join(w, "backbone.pt")
    if not os.path.exists(os.path.join(data, "val.txt")):
        run([PY, os.path.join(ROOT, "scripts/make_motion_dataset.py"), "--out", data,
             "--classes", CLASSES, "--per-class", "40", "--frames", "16", "--size", "64x64",
             "--seed", "0", "--split-ratio", "0.3", "--jobs", "1"], os.path.join(w, "dataset.log"))
    if not os.path.exists(bb):
        run([PY, os.path.join(ROOT, "scripts/make_clip_backbone.py"), "--width", "128",
             "--layers", "4", "--patch", "8", "--image-size", "32", "--seed", "0", "--tied-qk",
             "--pos-scale", "0.3", "-o", bb], os.path.join(w, "backbone.log"))
    common = ["--root", data, "--backbone", bb, "--frames", "8", "--stride", "2",
              "--layers", "last2", "--threads", "1"]
    val = os.path.join(w, "cache-val")
    if not done(val):
        run([b("evl_extract"), "--list", os.path.join(data, "val.txt"), "--out", val] + common,
            os.path.join(w, "extract-val.log"), env)
    n_train = sum(1 for l in open(os.path.join(data, "train.txt")) if l.strip())
    n_val = sum(1 for l in open(os.path.join(data, "val.txt")) if l.strip())
    cache = lambda aug, k, s: os.path.join(w, f"cache-train-{aug}-k{k}-s{s}")
    timing = {}

    def train(out, source, seed, steps=a.steps):
        if not os.path.exists(os.path.join(out, "last.pth")):
            shutil.rmtree(out, ignore_errors=True)
            timing[out] = run([b("evl_train_head")] + source +
                              ["--out", out, "--steps", str(steps), "--batch-size", str(BATCH),
                               "--lr", str(a.lr), "--seed", str(seed), "--eval-every", "0",
                               "--save-every", "0", "--log-every", "25", "--threads", "1"],
                              out + ".log", env)
        scores = out + "-scores.h5"
        run([b("evl_eval"), "--cache", val, "--checkpoint", os.path.join(out, "last.pth"),
             "--scores", scores, "--threads", "1"], out + "-eval.log", env)
        return (top1_of(scores),) + train_figures(out)

    per = {}  # (aug, k) or "online" -> list of (top1, samples/s)
    extract_s = {}
    for s in range(a.seeds):
        for aug, ra in AUGS.items():
            c8 = cache(aug, 8, s)
            if not done(c8):
                extract_s[(aug, s)] = run(
                    [b("evl_extract"), "--list", os.path.join(data, "train.txt"), "--out", c8,
                     "--train-views", "8", "--seed", str(s), "--rand-augment", ra] + common,
                    c8 + ".log", env)
            for k in KS[:-1]:
                if not done(cache(aug, k, s)):
                    subset_cache(c8, cache(aug, k, s), k)
        if s == 0:  # the subsets are what --train-views K writes: check K = 1 once
            direct = os.path.join(w, "cache-train-ra-k1-s0-direct")
            if not done(direct):
                run([b("evl_extract"), "--list", os.path.join(data, "train.txt"), "--out", direct,
                     "--train-views", "1", "--seed", "0", "--rand-augment", AUGS["ra"]] + common,
                    direct + ".log", env)
            check_subset(records(direct), records(cache("ra", 1, 0)))
            print("check: the K = 1 subset holds the features of a --train-views 1 extraction, "
                  "byte for byte", flush=True)
        for aug in AUGS:
            for k in KS:
                r = train(os.path.join(w, f"run-{aug}-k{k}-s{s}"), ["--cache", cache(aug, k, s)], s)
                per.setdefault((aug, k), []).append(r)
                print(f"seed {s} {aug:<4} K={k}: top-1 {100 * r[0]:.1f}%  "
                      f"({r[1]:.0f} samples/s)", flush=True)
        for aug, ra in AUGS.items():
            name = "online" if aug == "ra" else f"online-{aug}"
            r = train(os.path.join(w, f"run-{name}-s{s}"),
                      ["--online", "--list", os.path.join(data, "train.txt")] + common[:-2] +
                      ["--rand-augment", ra], s)
            per.setdefault(("online", aug), []).append(r)
            print(f"seed {s} {aug:<4} online fresh views: top-1 {100 * r[0]:.1f}%  "
                  f"({r[1]:.1f} samples/s)", flush=True)

    rows = []
    for aug in AUGS:
        for k in KS:
            v = per[(aug, k)]
            rec, disk = cache_bytes(cache(aug, k, 0))
            m, sd = mean_sd([x[0] for x in v])
            rows.append({"aug": aug, "k": k, "top1": [x[0] for x in v], "top1_mean": m,
                         "top1_sd": sd, "samples_per_s": statistics.mean(x[1] for x in v),
                         "train_loss": statistics.mean(x[2] for x in v),
                         "record_bytes": rec, "disk_bytes": disk})
    online = {}
    for aug in AUGS:
        v = per[("online", aug)]
        m, sd = mean_sd([x[0] for x in v])
        online[aug] = {"top1": [x[0] for x in v], "top1_mean": m, "top1_sd": sd,
                       "samples_per_s": statistics.mean(x[1] for x in v),
                       "train_loss": statistics.mean(x[2] for x in v)}
    long_rows = []
    if a.long_steps:
        for aug in AUGS:
            for k in KS:
                r = train(os.path.join(w, f"run-{aug}-k{k}-s0-{a.long_steps}steps"),
                          ["--cache", cache(aug, k, 0)], 0, a.long_steps)
                short = per[(aug, k)][0]
                long_rows.append({"aug": aug, "k": k, "steps": a.long_steps, "top1": r[0],
                                  "record_bytes": cache_bytes(cache(aug, k, 0))[0],
                                  "train_loss": r[2], "top1_short": short[0],
                                  "train_loss_short": short[2]})
    secs = time.time() - t0
    epochs = a.steps * BATCH / n_train

    pct = lambda r: f"{100 * r['top1_mean']:.1f} ± {100 * r['top1_sd']:.1f}"
    seeds = lambda r: " / ".join(f"{100 * t:.1f}" for t in r["top1"])
    lines = [
        f"| training views | RandAugment | stored (records) | on disk | per clip | val top-1 % "
        f"(mean ± sd, {a.seeds} seeds) | per seed | final train loss | train samples/s |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| cached K = {r['k']} | {'m7-n4' if r['aug'] == 'ra' else 'none'} | "
                     f"{r['record_bytes'] / 2**20:.1f} MiB | {r['disk_bytes'] / 2**20:.1f} MiB | "
                     f"{r['record_bytes'] / n_train / 2**10:.0f} KiB | {pct(r)} | {seeds(r)} | "
                     f"{r['train_loss']:.2f} | {r['samples_per_s']:.0f} |")
    for aug, o in online.items():
        lines.append(f"| fresh online (`--online`) | {'m7-n4' if aug == 'ra' else 'none'} | 0 | 0 | "
                     f"0 | {pct(o)} | {seeds(o)} | {o['train_loss']:.2f} | {o['samples_per_s']:.1f} |")
    head = (f"{n_train} training clips (12 per class), {n_val} validation clips, 10 classes "
            f"(chance 10%); {a.steps} steps x batch {BATCH} = {epochs:.1f} epochs; "
            f"{a.seeds} seeds.")
    table = head + "\n\n" + "\n".join(lines) + "\n"
    if long_rows:
        n = long_rows[0]["steps"]
        table += (f"\nSeed 0, {a.steps} against {n} steps ({n * BATCH / n_train:.0f} epochs), "
                  f"cached views only:\n\n| training views | RandAugment | top-1 % at {a.steps} "
                  f"steps | at {n} steps | train loss at {a.steps} | at {n} |\n"
                  "|---|---|---|---|---|---|\n")
        for r in long_rows:
            table += (f"| cached K = {r['k']} | {'m7-n4' if r['aug'] == 'ra' else 'none'} | "
                      f"{100 * r['top1_short']:.1f} | {100 * r['top1']:.1f} | "
                      f"{r['train_loss_short']:.2f} | {r['train_loss']:.2f} |\n")
    print("\n" + table)
    md, png = os.path.join(w, "augmentation_vs_k.md"), os.path.join(w, "augmentation_vs_k.png")
    open(md, "w").write(table)
    plot(rows, online, long_rows, png, f"10-class synthetic motion, {n_train} training clips, "
                            f"{a.steps} steps x {BATCH} ({a.seeds} seeds)")
    json.dump({"steps": a.steps, "batch": BATCH, "lr": a.lr, "seeds": a.seeds,
               "train_clips": n_train, "val_clips": n_val, "rows": rows, "online": online,
               "long_rows": long_rows,
               "extract_seconds": {f"{k[0]}-s{k[1]}": v for k, v in extract_s.items()},
               "train_seconds": {os.path.basename(k): v for k, v in timing.items()},
               "total_seconds": secs}, open(os.path.join(w, "results.json"), "w"), indent=1)
    if a.docs:
        os.makedirs(a.docs, exist_ok=True)
        shutil.copy(md, a.docs)
        if os.path.exists(png):
            shutil.copy(png, a.docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
