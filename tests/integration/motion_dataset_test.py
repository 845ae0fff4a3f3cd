#!/usr/bin/python3
"""Integration test of scripts/make_motion_dataset.py (CTest label: integration).

Generates a small dataset twice with one seed and once with another, then checks
against independent readers (PyAV decode, plain file parsing):
  * lists and labels: format `<relative path> <label>`, counts, split, every class present;
  * every video: H.264, yuv420p, the requested size, exactly --frames decoded frames;
  * determinism: same seed -> byte-identical lists and identical decoded frames;
    another seed -> different frames;
  * no single-frame leak: a linear classifier on one frame's statistics stays near
    chance on val, while the same classifier on two-frame difference (motion)
    features is far better.
"""
import os
import subprocess
import sys
import tempfile

import av
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = os.path.join(HERE, "..", "..", "scripts", "make_motion_dataset.py")
CLASSES = 14
PER_CLASS = 30
FRAMES = 16
W, H = 48, 48


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def generate(out, seed, classes=CLASSES, **extra):
    cmd = [sys.executable, GENERATOR, "--out", out, "--classes", str(classes), "--per-class", str(PER_CLASS),
           "--frames", str(FRAMES), "--size", f"{W}x{H}", "--seed", str(seed), "--split-ratio", "0.5"]
    for k, v in extra.items():
        cmd += [f"--{k.replace('_', '-')}", str(v)]
    subprocess.run(cmd, check=True)


def read_list(path):
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                fail(f"{path}:{n}: expected '<relative path> <label>', got {line!r}")
            rows.append((parts[0], int(parts[1])))
    return rows


def decode(path):
    with av.open(path) as c:
        s = c.streams.video[0]
        if s.codec_context.name != "h264":
            fail(f"{path}: codec {s.codec_context.name}, expected h264")
        if s.codec_context.pix_fmt != "yuv420p":
            fail(f"{path}: pixel format {s.codec_context.pix_fmt}, expected yuv420p")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    if len(frames) != FRAMES:
        fail(f"{path}: decoded {len(frames)} frames, expected {FRAMES}")
    if frames[0].shape != (H, W, 3):
        fail(f"{path}: frame shape {frames[0].shape}, expected {(H, W, 3)}")
    return np.stack(frames)


def check_layout(root):
    labels = open(os.path.join(root, "labels.txt")).read().split()
    if len(labels) != CLASSES or len(set(labels)) != CLASSES:
        fail(f"labels.txt: expected {CLASSES} distinct names, got {labels}")
    train = read_list(os.path.join(root, "train.txt"))
    val = read_list(os.path.join(root, "val.txt"))
    if len(train) + len(val) != CLASSES * PER_CLASS or len(train) != len(val):
        fail(f"split sizes {len(train)} + {len(val)}, expected {CLASSES * PER_CLASS // 2} each")
    if set(p for p, _ in train) & set(p for p, _ in val):
        fail("train and val share videos")
    for rows, name in ((train, "train"), (val, "val")):
        counts = np.bincount([lab for _, lab in rows], minlength=CLASSES)
        if counts.size != CLASSES or (counts != PER_CLASS // 2).any():
            fail(f"{name}.txt: per-class counts {counts.tolist()}, expected {PER_CLASS // 2} each")
        for path, lab in rows:
            if f"/{labels[lab]}/" not in path:
                fail(f"{name}.txt: {path} has label {lab} ({labels[lab]})")
    return train, val


# ---------------------------------------------------------------------------- leak check

def gray(v):
    return v.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def grads(img):
    # Central differences on the torus (the generator wraps objects around).
    ix = (np.roll(img, -1, 1) - np.roll(img, 1, 1)) / 2
    iy = (np.roll(img, -1, 0) - np.roll(img, 1, 0)) / 2
    return ix, iy


def frame_features(frame):
    """Statistics of ONE frame: colour moments, gradient energies, coarse layout, histogram."""
    g = gray(frame)
    ix, iy = grads(g)
    f = frame.astype(np.float32)
    coarse = g.reshape(4, H // 4, 4, W // 4).mean(axis=(1, 3)).ravel()
    hist = np.histogram(g, bins=8, range=(0, 255))[0] / g.size
    return np.concatenate([f.mean(axis=(0, 1)), f.std(axis=(0, 1)),
                           [np.mean(ix * ix), np.mean(iy * iy), np.mean(np.abs(ix)), np.mean(np.abs(iy))],
                           coarse, hist])


def pair_features(a, b):
    """Two-frame motion features from the difference It = b - a (Lucas-Kanade style moments)."""
    ga, gb = gray(a), gray(b)
    it = gb - ga
    ix, iy = grads((ga + gb) / 2)
    w = np.abs(it)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    # Centre of change as a circular mean (positions wrap around).
    cx = np.angle(np.sum(w * np.exp(2j * np.pi * xs / W))) * W / (2 * np.pi)
    cy = np.angle(np.sum(w * np.exp(2j * np.pi * ys / H))) * H / (2 * np.pi)
    dx = (xs - cx + W / 2) % W - W / 2
    dy = (ys - cy + H / 2) % H - H / 2
    rot = dx * iy - dy * ix
    div = dx * ix + dy * iy
    eps = 1e-3
    ea, eb = np.mean(grads(ga)[0] ** 2 + grads(ga)[1] ** 2), np.mean(grads(gb)[0] ** 2 + grads(gb)[1] ** 2)
    return np.array([
        -np.sum(ix * it) / (np.sum(ix * ix) + eps),
        -np.sum(iy * it) / (np.sum(iy * iy) + eps),
        -np.sum(rot * it) / (np.sqrt(np.sum(rot * rot) * np.sum(it * it)) + eps),
        -np.sum(div * it) / (np.sqrt(np.sum(div * div) * np.sum(it * it)) + eps),
        (eb - ea) / (eb + ea + eps),
        np.mean(w),
    ])


def ridge_accuracy(xtr, ytr, xva, yva, lam=1e-2):
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    xtr, xva = (xtr - mu) / sd, (xva - mu) / sd
    xtr = np.hstack([xtr, np.ones((len(xtr), 1))])
    xva = np.hstack([xva, np.ones((len(xva), 1))])
    targets = np.eye(CLASSES)[ytr]
    wts = np.linalg.solve(xtr.T @ xtr + lam * len(xtr) * np.eye(xtr.shape[1]), xtr.T @ targets)
    return float(np.mean(np.argmax(xva @ wts, 1) == yva))


def nearest_mean_accuracy(xtr, ytr, xva, yva):
    means = np.stack([xtr[ytr == c].mean(0) for c in range(CLASSES)])
    d = ((xva[:, None, :] - means[None]) ** 2).sum(-1)
    return float(np.mean(np.argmin(d, 1) == yva))


def leak_check(videos, train, val):
    rng = np.random.default_rng(123)

    def features(rows):
        single, pair, pixels, labels = [], [], [], []
        for path, lab in rows:
            v = videos[path]
            t = int(rng.integers(0, FRAMES))  # any one frame
            single.append(frame_features(v[t]))
            pixels.append(v[t].astype(np.float32).ravel() / 255)
            pair.append(np.mean([pair_features(v[i], v[i + 1]) for i in range(FRAMES - 1)], axis=0))
            labels.append(lab)
        return np.array(single), np.array(pair), np.array(pixels), np.array(labels)

    s_tr, p_tr, x_tr, y_tr = features(train)
    s_va, p_va, x_va, y_va = features(val)
    chance = 1.0 / CLASSES
    acc_single = ridge_accuracy(s_tr, y_tr, s_va, y_va)
    acc_pixels = nearest_mean_accuracy(x_tr, y_tr, x_va, y_va)
    acc_pair = ridge_accuracy(p_tr, y_tr, p_va, y_va)
    print(f"leak check on val ({len(y_va)} clips, chance {chance:.3f}): single-frame statistics "
          f"{acc_single:.3f}, single-frame pixels nearest-mean {acc_pixels:.3f}, "
          f"two-frame difference features {acc_pair:.3f}")
    # A binomial standard deviation at chance is sqrt(p(1-p)/n) ~ 0.024 for n=150.
    if acc_single > chance + 0.10 or acc_pixels > chance + 0.10:
        fail("a single frame predicts the class well above chance: the dataset leaks the label")
    if acc_pair < max(0.5, acc_single + 0.3):
        fail("two-frame difference features do not beat single frames by a wide margin")


def main():
    with tempfile.TemporaryDirectory(prefix="evl-motion-") as tmp:
        a, b, c = (os.path.join(tmp, n) for n in "abc")
        generate(a, seed=7)
        generate(b, seed=7, jobs=1)
        generate(c, seed=8, classes=2)  # another seed: only the first two classes, to save time
        train, val = check_layout(a)
        for name in ("train.txt", "val.txt", "labels.txt"):
            if open(os.path.join(a, name), "rb").read() != open(os.path.join(b, name), "rb").read():
                fail(f"{name} differs between two runs with the same seed")
        differing = compared = 0
        videos = {}
        for path, _ in train + val:
            va = videos[path] = decode(os.path.join(a, path))
            if not np.array_equal(va, decode(os.path.join(b, path))):
                fail(f"{path}: decoded frames differ between two runs with the same seed")
            if os.path.exists(os.path.join(c, path)):
                compared += 1
                differing += not np.array_equal(va, decode(os.path.join(c, path)))
        if compared != 2 * PER_CLASS or differing != compared:
            fail(f"only {differing} of {compared} videos change with the seed")
        print(f"layout, decode and determinism: {len(train) + len(val)} videos OK")
        leak_check(videos, train, val)
    print("PASS")


if __name__ == "__main__":
    main()
