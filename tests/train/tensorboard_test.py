#!/usr/bin/python3
"""What evl_train_head writes for people watching a run, checked from outside:

  - TensorBoard event files: TFRecord records whose masked CRC32C (computed
    here, bitwise) match, decoded with python3-protobuf from
    tensorboard_event.proto (TensorFlow's field numbers); the scalars
    train/loss, train/grad_norm, train/lr, train/samples_per_s, train/loss_scale, val/top1,
    val/top5 equal metrics.jsonl's values (as float32) at the same steps;
  - validation top-1/top-5 on the progress output when computed;
  - best.pth (+ best.json) is the checkpoint of the best val top-1, and
    evl_eval of it scores that top-1; a resumed run keeps it and adds an events file;
  - the run's name (the --out directory's, or --name) is the score file's
    `model` and the name evl_ensemble reports.

Usage: tensorboard_test.py BIN_DIR FIXTURE_DIR (tests/python/make_fixture.py's)
"""
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

import h5py
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
N = 40  # training steps: long enough to be preempted after step 6


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    return crc ^ 0xFFFFFFFF


def masked(data):
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_events(path, event_pb2):
    events = []
    with open(path, "rb") as f:
        data = f.read()
    pos = 0
    while pos < len(data):
        head = data[pos:pos + 8]
        (n,) = struct.unpack("<Q", head)
        (len_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert len_crc == masked(head), f"{path}: record at {pos}: length CRC mismatch"
        body = data[pos + 12:pos + 12 + n]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + n:pos + 16 + n])
        assert body_crc == masked(body), f"{path}: record at {pos}: data CRC mismatch"
        e = event_pb2.Event()
        e.ParseFromString(body)
        events.append(e)
        pos += 16 + n
    assert pos == len(data), f"{path}: trailing bytes"
    return events


def run(cmd, env=None):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"tensorboard_test: {' '.join(cmd)} exited {r.returncode}:\n{r.stdout}")
    return r.stdout


def check(cond, what):
    if not cond:
        sys.exit(f"tensorboard_test: FAILED: {what}")


def main():
    bin_dir, fixture = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="evl_tb_")
    try:
        run(["protoc", f"--python_out={tmp}", f"-I{HERE}", "tensorboard_event.proto"])
        sys.path.insert(0, tmp)
        import tensorboard_event_pb2 as event_pb2

        tool = lambda n: os.path.join(bin_dir, n)  # noqa: E731
        out = os.path.join(tmp, "k400-tiny")
        env = dict(os.environ, EVL_PROGRESS="1", EVL_PROGRESS_INTERVAL="0")
        common = ["--cache", os.path.join(fixture, "cache-qk-fp16"), "--val-cache",
                  os.path.join(fixture, "cache-qk-int8"), "--batch-size", "4", "--lr", "5e-3",
                  "--heads", "2", "--log-every", "1", "--save-every", "0",
                  "--threads", "2", "--precision", "fp32"]
        # A run preempted (SIGTERM) after at least 6 of its N steps, then resumed
        # with the same command plus --resume (a resume must keep --steps).
        cmd = [tool("evl_train_head"), "--out", out, "--steps", str(N), "--eval-every", "2",
               *common]
        first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env)
        metrics = os.path.join(out, "metrics.jsonl")
        deadline = time.time() + 300
        while first.poll() is None and time.time() < deadline:
            if os.path.exists(metrics) and sum(1 for l in open(metrics) if l.strip()) >= 6:
                break
            time.sleep(0.002)
        first.send_signal(signal.SIGTERM)
        log, _ = first.communicate(timeout=300)
        check(first.returncode == 4, f"SIGTERM after step 6 of {N}: exit {first.returncode}, "
              f"4 expected (a run that finished first cannot test the resume):\n{log}")
        check("val top-1" in log and "top-5" in log, f"no val top-1/top-5 in the output:\n{log}")
        run(cmd + ["--resume"], env)

        lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
        check([l["step"] for l in lines] == list(range(1, N + 1)), f"metrics.jsonl steps 1..{N}")
        files = sorted(glob.glob(os.path.join(out, "events.out.tfevents.*")))
        check(len(files) == 2, f"one events file per process, got {files}")
        by_step = {}
        for path in files:
            events = read_events(path, event_pb2)
            check(events[0].file_version == "brain.Event:2", f"{path}: first event")
            for e in events[1:]:
                check(e.WhichOneof("what") == "summary", f"{path}: a summary event")
                check(e.step not in by_step, f"step {e.step} twice")
                check(abs(e.wall_time - events[0].wall_time) < 3600, "wall_time in seconds")
                by_step[e.step] = {v.tag: v.simple_value for v in e.summary.value}
        check(sorted(by_step) == list(range(1, N + 1)), f"event steps {sorted(by_step)}")
        f32 = lambda v: float(np.float32(v))  # noqa: E731
        for l in lines:
            got = by_step[l["step"]]
            want = {"train/loss": l["loss"], "train/grad_norm": l["grad_norm"], "train/lr": l["lr"],
                    "train/samples_per_s": l["samples_per_s"], "train/loss_scale": l["loss_scale"]}
            if l["val_top1"] is not None:
                want.update({"val/top1": l["val_top1"], "val/top5": l["val_top5"]})
            check(set(got) == set(want), f"step {l['step']}: tags {sorted(got)}")
            for tag, v in want.items():
                check(got[tag] == f32(v), f"step {l['step']} {tag}: {got[tag]} != {v}")
        check(all(l["loss_scale"] == 1.0 for l in lines), "fp32: loss scale 1")

        # best.pth: the first step with the best val top-1
        vals = [(l["val_top1"], -l["step"]) for l in lines if l["val_top1"] is not None]
        check(len(vals) == N // 2, f"validation at steps 2, 4, ..., {N}")
        top1, neg_step = max(vals)
        best = json.load(open(os.path.join(out, "best.json")))
        check((best["step"], best["val_top1"]) == (-neg_step, top1), f"best.json {best}")
        ckpt = torch.load(os.path.join(out, "best.pth"), map_location="cpu")
        check(ckpt["next_step"] == best["step"], f"best.pth is step {ckpt['next_step']}")
        report = os.path.join(tmp, "best.json")
        run([tool("evl_eval"), "--cache", os.path.join(fixture, "cache-qk-int8"), "--checkpoint",
             os.path.join(out, "best.pth"), "--scores", os.path.join(tmp, "best.h5"), "--json",
             report])
        check(abs(json.load(open(report))["metrics"]["top1"] - top1) < 1e-12,
              "evl_eval of best.pth scores the recorded top-1")

        # the model name: the run directory's, or --name; evl_ensemble reports them
        named = os.path.join(tmp, "run2")
        run([tool("evl_train_head"), "--out", named, "--steps", "2", "--name", "b16-tiny",
             "--eval-every", "0", *common], env)
        scores = []
        for ckpt_path, want in ((os.path.join(out, "last.pth"), "k400-tiny"),
                                (os.path.join(named, "last.pth"), "b16-tiny")):
            s = os.path.join(tmp, f"{want}.h5")
            run([tool("evl_eval"), "--cache", os.path.join(fixture, "cache-qk-fp16"),
                 "--checkpoint", ckpt_path, "--scores", s])
            with h5py.File(s, "r") as f:
                check(f.attrs["model"] == want, f"score file model {f.attrs['model']} != {want}")
            scores.append(s)
        ens = os.path.join(tmp, "ens.json")
        run([tool("evl_ensemble"), "--val", *scores, "--alpha-step", "0.5", "--json", ens])
        names = [m["name"] for m in json.load(open(ens))["models"]]
        check(names == ["k400-tiny", "b16-tiny"], f"evl_ensemble models {names}")
        print(f"tensorboard_test: ok ({len(by_step)} steps in {len(files)} event files)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
