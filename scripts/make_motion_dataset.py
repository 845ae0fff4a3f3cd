#!/usr/bin/python3
"""Writes a synthetic labelled "motion" video dataset that only temporal modelling can solve.

Each video shows a textured square over a random textured background; the class
is what happens over time: moving right/left/down/up (on a wrap-around torus),
rotating clockwise/counter-clockwise, growing/shrinking, a second object
appearing/disappearing, the camera panning right/left/down/up (the whole
static scene slides over the torus, a few pixels per frame: the easiest for a
backbone that knows nothing, since every patch moves), or the light fading
in/out (brightness ramps; position in time alone tells them apart). Like Something-Something, no single frame tells the
classes apart:

  * every class is one of a pair (forward, reversed): the reversed class's
    frames are exactly the forward clip played backwards, so the bag of frames
    of a clip has the same distribution for both members of a pair;
  * across pairs, each per-frame quantity (position, angle, size, whether a
    second object is visible) has the same marginal in every class: classes
    that do not animate a quantity draw it, constant, from the marginal that the
    animating class produces at a uniformly random frame (positions and angles
    are uniform on the torus / circle; sizes are "start + fraction of the ramp";
    a static second object is shown with probability 1/2, the share of frames
    that show it in appear/disappear clips).

Videos are H.264 (libx264, yuv420p, small GOP) written by the ffmpeg CLI from raw
frames over a pipe. Output is deterministic given --seed (per-video generators
are seeded by (seed, class, index), so the worker count does not matter).

    /usr/bin/python3 scripts/make_motion_dataset.py --out /tmp/motion --classes 8 \
        --per-class 20 --frames 32 --size 64x64

writes <out>/videos/<class>/<class>_NNNN.mp4, <out>/train.txt and <out>/val.txt
(`<relative path> <label>` per line), <out>/labels.txt (one class name per line,
line i = label i) and <out>/dataset.json (the parameters).
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import sys

import numpy as np

# Pairs (forward, reversed); label = position in this list.
CLASSES = [
    "moving_right", "moving_left",
    "moving_down", "moving_up",
    "rotating_clockwise", "rotating_counterclockwise",
    "growing", "shrinking",
    "appearing", "disappearing",
    "panning_right", "panning_left",
    "panning_down", "panning_up",
    "fading_in", "fading_out",
]


def parse_size(text):
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size '{text}': expected WxH, e.g. 64x64")
    if w < 16 or h < 16 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"--size '{text}': width and height must be even and >= 16")
    return w, h


def parse_classes(text):
    if text == "all":
        return list(CLASSES)
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(CLASSES):
            raise argparse.ArgumentTypeError(f"--classes {n}: must be 1..{len(CLASSES)}")
        return CLASSES[:n]
    names = [c.strip() for c in text.split(",") if c.strip()]
    for c in names:
        if c not in CLASSES:
            raise argparse.ArgumentTypeError(f"--classes: unknown class '{c}' (known: {', '.join(CLASSES)})")
    return names


# ---------------------------------------------------------------------------- rendering

def smooth_noise(rng, h, w, cells, channels=3):
    """Random colour field: a cells x cells grid of colours, bilinearly upsampled (torus-periodic)."""
    grid = rng.uniform(0, 255, size=(cells, cells, channels)).astype(np.float32)
    ys = np.arange(h, dtype=np.float32) * cells / h
    xs = np.arange(w, dtype=np.float32) * cells / w
    y0 = np.floor(ys).astype(int)
    x0 = np.floor(xs).astype(int)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    y1 = (y0 + 1) % cells
    x1 = (x0 + 1) % cells
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bot = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def random_background(rng, h, w):
    base = smooth_noise(rng, h, w, int(rng.integers(2, 6)))
    detail = smooth_noise(rng, h, w, int(rng.integers(6, 12)))
    mix = rng.uniform(0.2, 0.5)
    return (1 - mix) * base + mix * detail  # (H, W, 3) float32 in [0, 255]


def random_object_texture(rng):
    g = int(rng.integers(3, 6))
    tex = rng.uniform(0, 255, size=(g, g, 3)).astype(np.float32)
    # A strong marker in one corner cell, so orientation is always visible.
    tex[0, 0] = 255.0 * (rng.uniform() < 0.5)
    return tex.astype(np.uint8)


def draw_squares(frames, states, tex, visible):
    """Draws a textured square into each frame, in place.

    frames (T, H, W, 3) uint8; states (T, 4): cx, cy, angle (rad), side (px);
    visible (T,) bool. Positions wrap around the frame (torus); angle increasing
    is clockwise on screen (y points down).
    """
    t_count, h, w, _ = frames.shape
    g = tex.shape[0]
    idx = np.flatnonzero(visible)
    if idx.size == 0:
        return
    cx, cy, ang, side = (states[idx, k][:, None, None] for k in range(4))  # (t, 1, 1) each
    ys = np.arange(h, dtype=np.float32)[None, :, None]
    xs = np.arange(w, dtype=np.float32)[None, None, :]
    dx = (xs - cx + w / 2) % w - w / 2  # (t, 1, W)
    dy = (ys - cy + h / 2) % h - h / 2  # (t, H, 1)
    c, s = np.cos(ang), np.sin(ang)
    u = (c * dx + s * dy) / side + 0.5  # (t, H, W)
    v = (-s * dx + c * dy) / side + 0.5
    inside = (u >= 0) & (u < 1) & (v >= 0) & (v < 1)
    iu = np.minimum((u[inside] * g).astype(np.int32), g - 1)
    iv = np.minimum((v[inside] * g).astype(np.int32), g - 1)
    if idx.size == t_count:
        frames[inside] = tex[iv, iu]
    else:
        sub = frames[idx]
        sub[inside] = tex[iv, iu]
        frames[idx] = sub


def scale_params(rng, short_side):
    """Side length ramp: log-side starts at lo, spans `span` over a full grow clip."""
    log_min, log_max = np.log(0.18 * short_side), np.log(0.55 * short_side)
    span = np.log(rng.uniform(1.8, 2.3))
    lo = rng.uniform(log_min, log_max - span)
    return lo, span


def static_state(rng, w, h, frames):
    """A constant (cx, cy, angle, side) drawn from the per-frame marginal of the animated classes."""
    lo, span = scale_params(rng, min(w, h))
    frac = rng.integers(0, frames) / max(frames - 1, 1)
    return np.array([rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * np.pi),
                     np.exp(lo + span * frac)], dtype=np.float32)


def render_video(seed, label, index, frames, w, h):
    """Returns (T, H, W, 3) uint8 frames of one clip of class CLASSES[label]."""
    rng = np.random.default_rng([seed, label, index])
    pair, reverse = divmod(label, 2)
    t = np.arange(frames, dtype=np.float32)
    bg = random_background(rng, h, w)
    video = np.repeat(np.clip(bg + 0.5, 0, 255).astype(np.uint8)[None], frames, axis=0)

    main = np.repeat(static_state(rng, w, h, frames)[None], frames, axis=0)
    second = static_state(rng, w, h, frames)
    second_visible = np.full(frames, rng.uniform() < 0.5)
    if pair == 0:  # horizontal motion on the torus
        main[:, 0] = (main[0, 0] + rng.uniform(0.02, 0.045) * w * t) % w
    elif pair == 1:  # vertical motion on the torus
        main[:, 1] = (main[0, 1] + rng.uniform(0.02, 0.045) * h * t) % h
    elif pair == 2:  # clockwise rotation
        main[:, 2] = main[0, 2] + np.deg2rad(rng.uniform(6.0, 15.0)) * t
    elif pair == 3:  # growth: log-side ramps over the clip
        lo, span = scale_params(rng, min(w, h))
        main[:, 3] = np.exp(lo + span * t / max(frames - 1, 1))
    elif pair == 4:  # the second object appears at a frame in the middle half
        start = int(rng.integers(frames // 4, frames - frames // 4 + 1))
        second_visible = t >= start

    draw_squares(video, second[None].repeat(frames, 0), random_object_texture(rng), second_visible)
    draw_squares(video, main, random_object_texture(rng), np.ones(frames, bool))
    if pair in (5, 6):  # the camera pans: the whole static scene slides over the torus
        speed = rng.uniform(0.05, 0.09) * (w if pair == 5 else h)
        shifts = np.round(speed * t).astype(np.int64)
        axis = 1 if pair == 5 else 0
        video = np.stack([np.roll(video[i], shifts[i], axis=axis) for i in range(frames)])
    # Lighting: fading_in ramps the brightness gain up over the clip; every other
    # class holds one gain drawn from the ramp at a uniformly random frame, so a
    # single frame's brightness has the same distribution in every class.
    lo, hi = rng.uniform(0.7, 0.8), rng.uniform(1.0, 1.1)
    if pair == 7:
        gain = lo + (hi - lo) * t / max(frames - 1, 1)
    else:
        gain = np.full(frames, lo + (hi - lo) * rng.integers(0, frames) / max(frames - 1, 1),
                       dtype=np.float32)
    video = np.clip(video.astype(np.float32) * gain[:, None, None, None] + 0.5, 0,
                    255).astype(np.uint8)
    return video[::-1].copy() if reverse else video


# ---------------------------------------------------------------------------- encoding

def encode_class(out, rels, seed, label, frames, w, h, fps, gop, crf):
    """Renders and encodes the clips of one class with ONE ffmpeg process.

    Starting ffmpeg costs ~0.2 s (more than encoding a small clip), so the clips
    are streamed back to back and cut by the segment muxer at forced IDR frames
    (one every `frames`, B-frames off, so each file is a closed, standalone
    H.264 stream of exactly `frames` frames). The files are then renamed.
    """
    tmp_dir = os.path.join(out, os.path.dirname(rels[0]), ".segments")
    os.makedirs(tmp_dir, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", str(fps), "-i", "-",
           "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-g", str(gop),
           "-bf", "0", "-force_key_frames", f"expr:eq(mod(n,{frames}),0)", "-forced-idr", "1",
           "-pix_fmt", "yuv420p", "-threads", "1", "-map_metadata", "-1",
           "-fflags", "+bitexact", "-flags:v", "+bitexact",
           "-f", "segment", "-segment_format", "mp4", "-reset_timestamps", "1"]
    if len(rels) > 1:
        cmd += ["-segment_frames", ",".join(str(frames * i) for i in range(1, len(rels)))]
    cmd.append(os.path.join(tmp_dir, "%06d.mp4"))
    with open(os.path.join(tmp_dir, "ffmpeg.log"), "w+b") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log)
        try:
            for index in range(len(rels)):
                proc.stdin.write(render_video(seed, label, index, frames, w, h).tobytes())
        except BrokenPipeError:
            pass
        finally:
            proc.stdin.close()
        rc = proc.wait()
        log.seek(0)
        message = log.read().decode(errors="replace").strip()
    if rc != 0:
        raise RuntimeError(f"ffmpeg failed encoding class {CLASSES[label]} into '{tmp_dir}': {message}")
    for index, rel in enumerate(rels):
        seg = os.path.join(tmp_dir, f"{index:06d}.mp4")
        if not os.path.exists(seg):
            raise RuntimeError(f"ffmpeg wrote no segment '{seg}' for '{rel}': {message}")
        os.replace(seg, os.path.join(out, rel))
    os.remove(os.path.join(tmp_dir, "ffmpeg.log"))
    os.rmdir(tmp_dir)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--classes", type=parse_classes, default=list(CLASSES),
                    help="'all', a count N (the first N classes) or comma-separated class names")
    ap.add_argument("--per-class", type=int, default=20, help="videos per class")
    ap.add_argument("--frames", type=int, default=32, help="frames per video")
    ap.add_argument("--size", type=parse_size, default=(64, 64), help="WxH, even")
    ap.add_argument("--fps", type=int, default=8)
    ap.add_argument("--gop", type=int, default=8, help="H.264 keyframe interval")
    ap.add_argument("--crf", type=int, default=18, help="x264 quality (lower = better)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-ratio", type=float, default=0.75,
                    help="fraction of each class's videos that go to train.txt (rest: val.txt)")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="concurrent ffmpeg encoders")
    args = ap.parse_args(argv)
    if args.per_class < 1 or args.frames < 4 or args.fps < 1 or args.gop < 1:
        ap.error("--per-class >= 1, --frames >= 4, --fps >= 1 and --gop >= 1 are required")
    if not 0.0 <= args.split_ratio <= 1.0:
        ap.error(f"--split-ratio {args.split_ratio}: must be in [0, 1]")

    w, h = args.size
    out = os.path.abspath(args.out)
    n_train = int(round(args.per_class * args.split_ratio))
    train, val = [], []
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for new_label, name in enumerate(args.classes):
            label = CLASSES.index(name)  # the generator's class id (seeds the clips, picks the motion)
            os.makedirs(os.path.join(out, "videos", name), exist_ok=True)
            order = np.random.default_rng([args.seed, label, 1 << 20]).permutation(args.per_class)
            train_idx = set(order[:n_train].tolist())
            rels = [f"videos/{name}/{name}_{i:04d}.mp4" for i in range(args.per_class)]
            for i, rel in enumerate(rels):
                (train if i in train_idx else val).append(f"{rel} {new_label}")
            jobs.append(pool.submit(encode_class, out, rels, args.seed, label, args.frames, w, h,
                                    args.fps, args.gop, args.crf))
        for j in jobs:
            j.result()  # re-raises the first ffmpeg failure

    def write(name, lines):
        with open(os.path.join(out, name), "w") as f:
            f.write("".join(line + "\n" for line in lines))

    write("train.txt", train)
    write("val.txt", val)
    write("labels.txt", args.classes)
    params = {"classes": args.classes, "per_class": args.per_class, "frames": args.frames,
              "width": w, "height": h, "fps": args.fps, "gop": args.gop, "crf": args.crf,
              "seed": args.seed, "split_ratio": args.split_ratio,
              "train": len(train), "val": len(val), "generator": "scripts/make_motion_dataset.py"}
    with open(os.path.join(out, "dataset.json"), "w") as f:
        json.dump(params, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"motion dataset: {len(args.classes)} classes x {args.per_class} videos "
          f"({len(train)} train, {len(val)} val), {args.frames} frames at {w}x{h} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
