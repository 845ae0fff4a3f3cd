#!/usr/bin/python3
"""evl_train_head as several processes (c10d Gloo over loopback), checked
against one process at the same global batch and seed:

  - 2 and 4 ranks (1 thread each), and 2 ranks with --batch-split 2, train the
    head of 1 rank (dropout on: its masks are functions of the sample, not of
    the rank or micro-batch): every metrics.jsonl loss and gradient norm within TOL_LOSS
    (relative; the gradient norm is what shows the averaging: Adam itself would
    not notice gradients W times too large), the parameters within the fp32
    reduction-order tolerance derived below, and validation top-1/top-5
    identical at every evaluation;
  - --online (decode + backbone per batch): 2 ranks train the 1-rank head;
  - torchrun's variables (RANK, WORLD_SIZE, ...) and srun's (SLURM_PROCID,
    SLURM_STEP_NUM_TASKS, ...) launch the same run as the flags;
  - SIGTERM to every rank stops all after one step with one checkpoint (exit
    4 everywhere); --resume on every rank ends bit-identical to the
    uninterrupted 2-rank run;
  - a rank killed mid-run makes the survivor exit non-zero within
    --dist-timeout naming it, and so does a rank that hangs (SIGSTOP); a rank
    that never arrives is named; a rank with
    another configuration is refused naming the differing line; a --batch-size
    that does not divide by the world is a usage error (exit 2).

The tolerance. Ranks sum the same per-sample gradients in another order (each
rank sums its share, then the allreduce adds the shares), so each gradient
component differs by a few fp32 ulps of the sum of its terms' magnitudes.
AdamW divides by sqrt(v): where a component's true gradient is far above that
rounding, its step changes by the same relative few ulps (~1e-7 of a step),
and later steps carry the difference on through the training dynamics, which
amplify it. A parameter can move at most MOVE = sum_t lr_t * (1 - beta1) /
sqrt(1 - beta2) under Adam; the runs must agree to TOL_PARAM = 1e-3 * MOVE, a
thousandth of that (the largest difference measured on this fixture is ~1e-2 of
this bound: 2e-7 for 2 ranks, 1.2e-5 for 4 at lr 5e-3, printed by the test).
Where the true gradient is exactly zero, the computed one is pure rounding
noise and Adam turns noise of any size into steps of up to lr: the attention
key biases are such parameters (adding b to every key adds q.b to every logit
of a softmax, which cancels), so for them only |delta| <= 2 * MOVE holds.

Usage: distributed_ranks_test.py BIN_DIR FIXTURE_DIR (tests/python/make_fixture.py's)
"""
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import torch

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
STEPS = 12
LR = 5e-3
TOL_LOSS = 1e-5


def check(cond, what):
    if not cond:
        sys.exit(f"distributed_ranks_test: FAILED: {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Runs:
    def __init__(self, bin_dir, fixture, tmp):
        self.tool = os.path.join(bin_dir, "evl_train_head")
        self.tmp = tmp
        self.common = ["--cache", os.path.join(fixture, "cache-qk-fp16"), "--val-cache",
                       os.path.join(fixture, "cache-qk-int8"), "--batch-size", "4", "--lr",
                       str(LR), "--heads", "2", "--log-every", "1", "--save-every", "0",
                       "--eval-every", "3", "--threads", "1", "--precision", "fp32",
                       "--seed", "3"]  # dropout at the recipe's 0.5: masks follow the sample

    def cmd(self, out, *extra, steps=STEPS):
        return [self.tool, "--out", os.path.join(self.tmp, out), "--steps", str(steps),
                *self.common, *extra]

    def start(self, out, world, *extra, env_style="flags", steps=STEPS, ranks=None,
              timeout=60):
        port = free_port()
        procs = []
        for r in (range(world) if ranks is None else ranks):
            env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
            args = list(extra) + ["--dist-timeout", str(timeout)]
            if env_style == "flags":
                args += ["--rank", str(r), "--world-size", str(world), "--master-addr",
                         "127.0.0.1", "--master-port", str(port)]
            elif env_style == "torchrun":
                env.update(RANK=str(r), WORLD_SIZE=str(world), LOCAL_RANK=str(r),
                           MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
            elif env_style == "srun":
                env.update(SLURM_PROCID=str(r), SLURM_STEP_NUM_TASKS=str(world),
                           SLURM_LOCALID=str(r), SLURM_STEP_NODELIST="localhost",
                           MASTER_PORT=str(port))
            procs.append(subprocess.Popen(self.cmd(out, *args, steps=steps), env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        return procs

    def run(self, out, world, *extra, **kw):
        procs = self.start(out, world, *extra, **kw)
        logs = [p.communicate(timeout=600)[0] for p in procs]
        for r, (p, log) in enumerate(zip(procs, logs)):
            check(p.returncode == 0, f"{out}: rank {r} exited {p.returncode}:\n{log}")
        return logs


def strip_caches(args):
    """args without --cache DIR and --val-cache DIR."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--cache", "--val-cache"):
            skip = True
        else:
            out.append(a)
    return out


def wait_for_lines(procs, path, n):
    """Until metrics.jsonl `path` has n lines (or a rank exits, or 300 s pass)."""
    deadline = time.time() + 300
    while time.time() < deadline and all(p.poll() is None for p in procs):
        if os.path.exists(path) and sum(1 for l in open(path) if l.strip()) >= n:
            return
        time.sleep(0.005)


def metrics(path):
    return [json.loads(l) for l in open(os.path.join(path, "metrics.jsonl")) if l.strip()]


def params(path):
    return torch.load(os.path.join(path, "last.pth"), map_location="cpu")["model"]


def lr_sum(steps=STEPS):
    # lr_t of the official cosine per step (no warmup), summed over the run.
    return sum(LR * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps))


def compare(tmp, ref, other, exact=False, steps=STEPS):
    a, b = metrics(os.path.join(tmp, ref)), metrics(os.path.join(tmp, other))
    check([l["step"] for l in a] == [l["step"] for l in b], f"{other}: the same steps as {ref}")
    for x, y in zip(a, b):
        for f in ("loss", "grad_norm"):
            check(abs(x[f] - y[f]) <= TOL_LOSS * abs(x[f]) if not exact else x[f] == y[f],
                  f"{other} step {x['step']}: {f} {y[f]} vs {ref}'s {x[f]}")
        check(x["val_top1"] == y["val_top1"] and x["val_top5"] == y["val_top5"],
              f"{other} step {x['step']}: validation {y['val_top1']}/{y['val_top5']} vs "
              f"{ref}'s {x['val_top1']}/{x['val_top5']}")
    pa, pb = params(os.path.join(tmp, ref)), params(os.path.join(tmp, other))
    check(pa.keys() == pb.keys(), f"{other}: the parameter names of {ref}")
    move = lr_sum(steps) * (1 - 0.9) / math.sqrt(1 - 0.999)
    tol = 1e-3 * move
    worst = {}
    for k in pa:
        d = (pa[k].double() - pb[k].double()).abs().max().item()
        if exact:
            check(torch.equal(pa[k], pb[k]), f"{other}: {k} differs from {ref} by {d}")
        elif k.endswith("attn.k_proj.bias"):
            check(d <= 2 * move, f"{other}: {k} differs by {d} > Adam's bound {2 * move}")
        else:
            check(d <= tol, f"{other}: {k} differs from {ref} by {d} > {tol}")
            worst[k] = d
    if worst:
        k = max(worst, key=worst.get)
        print(f"{other} vs {ref}: largest parameter difference {worst[k]:.3g} ({k}; "
              f"tolerance {tol:.3g}); losses and gradient norms within {TOL_LOSS:g} "
              f"(relative); validation identical")


def main():
    bin_dir, fixture = sys.argv[1], sys.argv[2]
    tmp = tempfile.mkdtemp(prefix="evl_dist_")
    try:
        runs = Runs(bin_dir, fixture, tmp)
        # The reference: one process.
        r = subprocess.run(runs.cmd("w1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        check(r.returncode == 0, f"1 rank: exit {r.returncode}:\n{r.stdout}")
        check(any(l["val_top1"] is not None for l in metrics(os.path.join(tmp, "w1"))),
              "the reference validates")

        logs = runs.run("w2", 2)
        check("done:" in logs[0] and "done:" not in logs[1], "rank 0 alone reports the run")
        check(not os.path.exists(os.path.join(tmp, "w2", "metrics.jsonl.1")),
              "one metrics.jsonl")
        compare(tmp, "w1", "w2")
        runs.run("w4", 4)
        compare(tmp, "w1", "w4")
        runs.run("w2split", 2, "--batch-split", "2")
        compare(tmp, "w1", "w2split")
        # The environment of torchrun and of srun: the very run of the flags.
        runs.run("w2torchrun", 2, env_style="torchrun")
        compare(tmp, "w2", "w2torchrun", exact=True)
        runs.run("w2srun", 2, env_style="srun")
        compare(tmp, "w2", "w2srun", exact=True)

        # --online (features computed per batch from the videos): each rank decodes
        # and runs the backbone for its share only; the same head as one process.
        data = os.path.join(fixture, "data")
        online = ["--online", "--list", os.path.join(data, "val.txt"), "--root", data,
                  "--backbone", os.path.join(ROOT, "tests/fixtures/backbone/tiny_clip_openai.pt"),
                  "--frames", "4", "--stride", "2", "--layers", "1,2",
                  # fp32 compute and storage: a rank runs the backbone on batches of
                  # another size, whose GEMM blockings change a feature by fp32 ulps;
                  # rounding to fp16 (or bf16) then moves a few of them by a whole
                  # fp16 ulp (5e-4 relative), and 4 steps carry that to ~4e-5
                  "--backbone-precision", "fp32", "--dtype", "fp32"]
        saved = runs.common
        runs.common = strip_caches(saved) + online
        r = subprocess.run(runs.cmd("o1", steps=4), stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           env=dict(os.environ, OMP_WAIT_POLICY="PASSIVE"))
        check(r.returncode == 0, f"online, 1 rank: exit {r.returncode}:\n{r.stdout}")
        runs.run("o2", 2, steps=4)
        compare(tmp, "o1", "o2", steps=4)
        runs.common = saved

        # Preemption: SIGTERM to every rank after step 4, then --resume on every rank.
        procs = runs.start("w2resume", 2)
        wait_for_lines(procs, os.path.join(tmp, "w2resume", "metrics.jsonl"), 4)
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for r, p in enumerate(procs):
            log = p.communicate(timeout=300)[0]
            check(p.returncode == 4, f"SIGTERM: rank {r} exited {p.returncode}, 4 expected:\n{log}")
        saved = [f for f in os.listdir(os.path.join(tmp, "w2resume")) if f.startswith("checkpoint-")]
        check(len(saved) == 1, f"one checkpoint at the stop, got {saved}")
        runs.run("w2resume", 2, "--resume")
        compare(tmp, "w2", "w2resume", exact=True)

        # A rank killed mid-run: the survivor exits non-zero within the timeout, naming it.
        procs = runs.start("w2kill", 2, steps=100000, timeout=20)
        wait_for_lines(procs, os.path.join(tmp, "w2kill", "metrics.jsonl"), 3)
        procs[1].kill()
        t0 = time.time()
        log = procs[0].communicate(timeout=120)[0]
        waited = time.time() - t0
        procs[1].communicate()
        check(procs[0].returncode not in (0, None) and waited < 20 + 10,
              f"rank 0 after rank 1 was killed: exit {procs[0].returncode} after {waited:.1f} s")
        check("rank 1" in log and ("gone" in log or "failed" in log),
              f"rank 0's message names rank 1:\n{log[-2000:]}")
        print(f"killed rank 1: rank 0 exited {procs[0].returncode} after {waited:.1f} s: "
              f"{[l for l in log.splitlines() if 'rank 1' in l][-1]}")

        # A rank that hangs (SIGSTOP): the survivor's collective times out after
        # --dist-timeout, and the heartbeat names the stopped rank.
        procs = runs.start("w2stop", 2, steps=100000, timeout=5)
        wait_for_lines(procs, os.path.join(tmp, "w2stop", "metrics.jsonl"), 3)
        procs[1].send_signal(signal.SIGSTOP)
        t0 = time.time()
        try:
            log = procs[0].communicate(timeout=120)[0]
        finally:
            procs[1].kill()
            procs[1].communicate()
        waited = time.time() - t0
        check(procs[0].returncode == 1 and waited < 5 + 15 and "rank 1 is gone" in log,
              f"rank 1 stopped: rank 0 exit {procs[0].returncode} after {waited:.1f} s:\n"
              f"{log[-2000:]}")
        print(f"stopped rank 1: rank 0 exited after {waited:.1f} s (--dist-timeout 5)")

        # A rank that never arrives, and one with another configuration.
        t0 = time.time()
        procs = runs.start("w2alone", 2, ranks=[0], timeout=3)
        log = procs[0].communicate(timeout=120)[0]
        check(procs[0].returncode == 1 and "rank 1" in log and "did not arrive" in log,
              f"rank 1 never started: exit {procs[0].returncode}:\n{log}")
        check(time.time() - t0 < 60, "the missing rank is reported within the timeout")
        check(not os.path.exists(os.path.join(tmp, "w2alone", "last.pth")), "nothing trained")
        port = free_port()
        procs = []
        for rank, lr in ((0, str(LR)), (1, "1e-3")):
            cmd = runs.cmd("w2mismatch", "--rank", str(rank), "--world-size", "2",
                           "--master-port", str(port), "--dist-timeout", "20")
            cmd[cmd.index("--lr") + 1] = lr
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))
        logs = [p.communicate(timeout=120)[0] for p in procs]
        check(all(p.returncode == 1 for p in procs) and
              all("another configuration" in l and "lr = " in l for l in logs),
              f"a rank with another --lr is refused naming the line: {logs}")
        r = subprocess.run(runs.cmd("w3", "--rank", "0", "--world-size", "3"),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        check(r.returncode == 2 and "multiple of the world size" in r.stdout,
              f"--batch-size 4 over 3 ranks: exit {r.returncode}:\n{r.stdout}")
        print("distributed_ranks_test: OK")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
