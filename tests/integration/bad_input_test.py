#!/usr/bin/python3
"""The bad-input catalogue of the tools (issue 18): crafted inputs and natural
mistakes, each run through the real executables with a bounded timeout.

Every case asserts: no signal (a negative return code is a crash), no hang
(the timeout), the expected exit code, and substrings of stderr that name the
file or flag and what is wrong; cases that could lose work also check that
what was there before is still there.

The fixture is small and made here: two lossless testsrc2 videos, the tiny
CLIP-shaped backbone of tests/fixtures/backbone, one 2-clip cache, a head
trained for 2 steps, and its score file. Crafted inputs are derived from them
with numpy/torch/lmdb/h5py (no evl code), so the expected answers do not come
from the code under test.

Usage: bad_input_test.py BIN_DIR [-k SUBSTRING]
"""
import concurrent.futures
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures", "backbone")
BACKBONE = os.path.join(FIX, "tiny_clip_openai.pt")
HF = os.path.join(FIX, "tiny_clip_hf.safetensors")

BIN = os.path.abspath(sys.argv[1])
ONLY = sys.argv[sys.argv.index("-k") + 1] if "-k" in sys.argv else ""
ENV = dict(os.environ, EVL_PROGRESS="0", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
failures = []
ran = 0
LOCK = threading.Lock()


def tool(name):
    return os.path.join(BIN, name)


def run(args, cwd=None, timeout=60):
    r = subprocess.run(args, capture_output=True, text=True, errors="replace", env=ENV, cwd=cwd,
                       timeout=timeout)
    return r


def case(name, args, code, needles=(), absent=(), cwd=None, timeout=60, check=None):
    """Runs one case; records a failure instead of raising, so all cases run."""
    global ran
    if ONLY and ONLY not in name:
        return None
    with LOCK:
        ran += 1
    t0 = time.time()
    try:
        r = run(args, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        failures.append(f"{name}: hung (no answer within {timeout} s)")
        return None
    problems = []
    if r.returncode < 0:
        problems.append(f"killed by signal {signal.Signals(-r.returncode).name}")
    elif r.returncode != code:
        problems.append(f"exit {r.returncode}, expected {code}")
    for n in needles:
        if n not in r.stderr:
            problems.append(f"stderr lacks {n!r}")
    for n in absent:
        if n in r.stderr or n in r.stdout:
            problems.append(f"output holds {n!r}")
    if check:
        try:
            why = check(r)
        except (OSError, ValueError) as e:
            why = f"check failed: {e}"
        if why:
            problems.append(why)
    if problems:
        tail = r.stderr.strip().splitlines()[-3:]
        failures.append(f"{name}: " + "; ".join(problems) + f" | stderr: {tail}")
    else:
        print(f"ok   {name} ({time.time() - t0:.1f} s)")
    return r


def extract(d, out, lst, *extra, cwd=None):
    return [tool("evl_extract"), "--list", lst, "--root", d, "--backbone", BACKBONE, "--out", out,
            "--threads", "1", "--frames", "2", "--stride", "1", "--layers", "last2",
            *extra]


def make_fixture(d):
    for name, src in [("a.mkv", "testsrc2=size=40x32:rate=10"),
                      ("b.mkv", "testsrc2=size=32x32:rate=10")]:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", src, "-t", "1",
                        "-c:v", "ffv1", "-pix_fmt", "bgr0", os.path.join(d, name)], check=True)
    with open(os.path.join(d, "list.txt"), "w") as f:
        f.write("a.mkv 0\nb.mkv 1\n")
    r = run(extract(d, os.path.join(d, "cache"), os.path.join(d, "list.txt")))
    assert r.returncode == 0, r.stderr
    r = run([tool("evl_train_head"), "--cache", os.path.join(d, "cache"), "--out",
             os.path.join(d, "run"), "--steps", "2", "--batch-size", "2", "--threads", "1",
             "--eval-every", "0", "--save-every", "0"])
    assert r.returncode == 0, r.stderr
    r = run([tool("evl_eval"), "--cache", os.path.join(d, "cache"), "--checkpoint",
             os.path.join(d, "run", "last.pth"), "--scores", os.path.join(d, "scores.h5"),
             "--threads", "1"])
    assert r.returncode == 0, r.stderr


def copy_cache(d, name):
    dst = os.path.join(d, name)
    shutil.copytree(os.path.join(d, "cache"), dst)
    return dst


def edit_manifest(cache, edit):
    p = os.path.join(cache, "manifest.json")
    m = json.load(open(p))
    edit(m)
    json.dump(m, open(p, "w"), indent=2)


def shard_of(cache):
    return os.path.join(cache, json.load(open(os.path.join(cache, "manifest.json")))["shards"][0]
                        ["name"])


def torch_edit(src, dst, edit):
    """Loads an evl checkpoint with PyTorch, edits the dict, saves it."""
    code = ("import sys, torch\nd = torch.load(sys.argv[1])\n" + edit +
            "\ntorch.save(d, sys.argv[2])\n")
    subprocess.run(["/usr/bin/python3", "-c", code, src, dst], check=True)


def crashes(d):
    # 1. Truncated LMDB data.mdb: a SIGBUS in every reader before the fix.
    trunc = copy_cache(d, "trunc")
    data = os.path.join(shard_of(trunc), "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    msg = ["data.mdb is truncated", shard_of(trunc)]
    # verify reports each bad shard on stdout ("BAD <shard> ...") and exits 1
    case("truncated data.mdb: evl_cache verify", [tool("evl_cache"), "verify", trunc], 1,
         check=lambda r: None if all(m in r.stdout for m in msg) else f"stdout: {r.stdout}")
    for sub in (["info", trunc], ["export", trunc, "--h5", os.path.join(d, "t.h5")]):
        case(f"truncated data.mdb: evl_cache {sub[0]}", [tool("evl_cache")] + sub, 1, msg)
    case("truncated data.mdb: evl_cache merge",
         [tool("evl_cache"), "merge", os.path.join(d, "trunc_merged"), trunc], 1, msg)
    case("truncated data.mdb: evl_eval",
         [tool("evl_eval"), "--cache", trunc, "--checkpoint", os.path.join(d, "run", "last.pth"),
          "--scores", os.path.join(d, "t2.h5")], 1, msg)
    case("truncated data.mdb: evl_train_head",
         [tool("evl_train_head"), "--cache", trunc, "--out", os.path.join(d, "trun"), "--steps",
          "1", "--batch-size", "2"], 1, msg)
    case("truncated data.mdb: resuming evl_extract",
         extract(d, trunc, os.path.join(d, "list.txt")), 1, msg,
         check=lambda r: None if os.path.getsize(data) == size // 2 else "data.mdb was changed")

    # 2. A manifest saying heads: 0 (SIGFPE in training before).
    h0 = copy_cache(d, "heads0")
    edit_manifest(h0, lambda m: m["backbone"].__setitem__("heads", 0))
    case("manifest heads 0: evl_train_head",
         [tool("evl_train_head"), "--cache", h0, "--out", os.path.join(d, "h0run"), "--steps", "1",
          "--batch-size", "2"], 1, ["manifest.json", "'backbone.heads' is 0"])
    for field, value, needle in [("frames", 0, "'frames' is 0"), ("frames", "8", "wrong type"),
                                 ("layers", [1, 99], "'layers[]' is 99"),
                                 ("temporal_views", -1, "'temporal_views' is -1")]:
        bad = copy_cache(d, f"manifest_{field}_{value}")
        edit_manifest(bad, lambda m: m.__setitem__(field, value))
        case(f"manifest {field}={value!r}: evl_cache info", [tool("evl_cache"), "info", bad], 1,
             ["manifest.json", needle])

    # 3. Checkpoints: a negative next_step (SIGFPE on --resume before), wrong types.
    run_dir = os.path.join(d, "run")
    for label, edit, needle in [
            ("negative next_step", "d['next_step'] = -5", "entry 'next_step' is -5"),
            ("next_step a string", "d['next_step'] = 'x'", "entry 'next_step' is not an integer"),
            ("format_version a float", "d['format_version'] = 1.5",
             "entry 'format_version' is not an integer"),
            ("optimizer state not a dict", "d['optimizer']['state'] = 3",
             "entry 'state' is not a dict")]:
        rd = os.path.join(d, "resume_" + label.replace(" ", "_"))
        shutil.copytree(run_dir, rd)
        torch_edit(os.path.join(run_dir, "last.pth"), os.path.join(rd, "last.pth"), edit)
        case(f"checkpoint {label}: --resume",
             [tool("evl_train_head"), "--cache", os.path.join(d, "cache"), "--out", rd, "--steps",
              "2", "--batch-size", "2", "--resume"], 1, ["last.pth", needle],
             absent=["INTERNAL ASSERT", "Exception raised from", "frame #"])
    nan_ckpt = os.path.join(d, "nan_head.pth")
    torch_edit(os.path.join(run_dir, "last.pth"), nan_ckpt,
               "d['model']['proj.2.weight'][0, 0] = float('nan')")
    case("checkpoint with a NaN parameter: evl_eval",
         [tool("evl_eval"), "--cache", os.path.join(d, "cache"), "--checkpoint", nan_ckpt,
          "--scores", os.path.join(d, "nan.h5")], 1, ["nan_head.pth", "proj.2.weight",
                                                      "NaN/inf"])

    # 4. Byte-flipped score files: the high byte of every global-heap object
    #    index of the variable-length strings (video_ids and string attributes)
    #    and of the heap objects' sizes, which crashed libhdf5 (SIGSEGV) or made
    #    it loop. (tests/evaluate/scores_test.cpp flips the same in-process.)
    raw = open(os.path.join(d, "scores.h5"), "rb").read()
    gcol = raw.find(b"GCOL")
    addr = gcol.to_bytes(8, "little")
    spots, p = [], raw.find(addr)
    while p >= 0:
        spots.append(p + 11)
        p = raw.find(addr, p + 1)
    spots.append(gcol + 16 + 8 + 7)
    flip = os.path.join(d, "flip.h5")
    for n, p in enumerate(spots):
        b = bytearray(raw)
        b[p] ^= 0x80
        open(flip, "wb").write(b)
        case(f"byte-flipped score file #{n} (byte {p}): evl_ensemble",
             [tool("evl_ensemble"), "--val", flip, flip], 1, ["score file '" + flip + "'"],
             timeout=60)


def special_files(d):
    # 5. A FIFO named like a video hung evl_extract forever.
    fdir = os.path.join(d, "fifo")
    os.makedirs(fdir)
    os.mkfifo(os.path.join(fdir, "x.mp4"))
    shutil.copy(os.path.join(d, "a.mkv"), fdir)
    with open(os.path.join(fdir, "list.txt"), "w") as f:
        f.write("x.mp4 0\na.mkv 1\n")
    out = os.path.join(fdir, "out")
    cmd = extract(fdir, out, os.path.join(fdir, "list.txt"))

    def one_row(r):
        rows = open(os.path.join(out, "failures.tsv")).read().splitlines()
        if len(rows) != 1 or not rows[0].startswith("x.mp4\t1\t") or "not a regular file" \
                not in rows[0]:
            return f"failures.tsv is {rows}"
        return None
    case("FIFO in the list: evl_extract", cmd, 3, timeout=60, check=one_row)
    case("FIFO in the list: rerun rewrites failures.tsv (one row)", cmd, 3, timeout=60,
         check=one_row)
    # Directories where files are expected.
    case("directory as --list", extract(d, os.path.join(d, "dl"), d), 1,
         ["dataset list", "not a regular file"])
    case("directory as --config", [tool("evl_extract"), "--config", d, "--print-config"], 2,
         ["config file", "not a regular file"])
    case("directory as --checkpoint",
         [tool("evl_eval"), "--cache", os.path.join(d, "cache"), "--checkpoint", d, "--scores",
          os.path.join(d, "x.h5")], 1, ["not a file"])


def provenance(d):
    lst = os.path.join(d, "list.txt")
    # 6. An unfinished cache (no manifest: killed before the end) resumed with
    #    other settings, and a finished one resumed with another --dtype.
    unf = copy_cache(d, "unfinished")
    os.remove(os.path.join(unf, "manifest.json"))
    before = os.path.getsize(os.path.join(shard_of(os.path.join(d, "cache")), "data.mdb"))
    for flag, value, field in [("--frames", "3", "frames"), ("--layers", "last1", "layers"),
                               ("--dtype", "bf16", "dtype"), ("--seed", "5", "seed")]:
        cmd = extract(d, unf, lst)
        if flag in cmd:
            cmd[cmd.index(flag) + 1] = value
        else:
            cmd += [flag, value]
        case(f"unfinished cache resumed with {flag} {value}", cmd, 2,
             ["provenance.json", f"provenance field '{field}'", "another --out"],
             check=lambda r: None if os.path.getsize(os.path.join(unf, "features-00000-of-00001",
                                                                  "data.mdb")) == before
             else "records were written")
    case("finished cache resumed with --dtype fp32", extract(d, copy_cache(d, "fin"), lst,
                                                             "--dtype", "fp32"),
         2, ["provenance field 'dtype'"])
    # Two writers with other settings on one --out: the second sees the first's provenance.
    two = os.path.join(d, "two")
    r = run(extract(d, two, lst, "--num-shards", "2", "--shard-index", "0"))
    assert r.returncode == 0, r.stderr
    second = extract(d, two, lst, "--num-shards", "2", "--shard-index", "1")
    second[second.index("--frames") + 1] = "3"
    case("second writer with other settings on one --out", second, 2,
         ["provenance field 'frames'"])
    # 8. evl_eval / --resume on a cache whose layers differ from the head's.
    other = os.path.join(d, "blocks01")
    r = run(extract(d, other, lst)[:-1] + ["0,1"])  # the head reads blocks 1, 2
    assert r.returncode == 0, r.stderr
    case("evl_eval on a cache of other layers",
         [tool("evl_eval"), "--cache", other, "--checkpoint", os.path.join(d, "run", "last.pth"),
          "--scores", os.path.join(d, "l.h5")], 1, ["provenance field 'layers'", other])
    rd = os.path.join(d, "resume_layers")
    shutil.copytree(os.path.join(d, "run"), rd)
    case("--resume on a cache of other layers",
         [tool("evl_train_head"), "--cache", other, "--out", rd, "--steps", "2", "--batch-size",
          "2", "--resume"], 1, ["provenance field 'layers'"])
    rd2 = os.path.join(d, "resume_steps")
    shutil.copytree(os.path.join(d, "run"), rd2)
    case("--resume with another --steps",
         [tool("evl_train_head"), "--cache", os.path.join(d, "cache"), "--out", rd2, "--steps",
          "9", "--batch-size", "2", "--resume"], 2, ["--steps 9", "resumed run's 2"])
    # 12. merge refuses a record whose checksum fails.
    bad = copy_cache(d, "badrecord")
    code = ("import lmdb, sys\nenv = lmdb.open(sys.argv[1], map_size=1 << 30)\n"
            "with env.begin(write=True) as t:\n k, v = next(iter(t.cursor()))\n"
            " b = bytearray(v); b[len(b) // 2] ^= 0x40; t.put(k, bytes(b))\n")
    subprocess.run(["/usr/bin/python3", "-c", code, shard_of(bad)], check=True)
    case("merge of a record whose checksum fails",
         [tool("evl_cache"), "merge", os.path.join(d, "merged_bad"), bad], 1,
         ["checksum", "0000000000/000"],
         check=lambda r: None if not os.path.exists(os.path.join(d, "merged_bad",
                                                                 "manifest.json"))
         else "a manifest was written")
    # evl_predict from another directory, with the cache gone: the checkpoint's provenance.
    gone = os.path.join(d, "gone")
    shutil.copytree(os.path.join(d, "run"), gone)
    case("evl_predict from another directory",
         [tool("evl_predict"), "--backbone", BACKBONE, "--checkpoint",
          os.path.join(gone, "last.pth"), "--video", os.path.join(d, "a.mkv"), "--threads", "1"],
         0, ["settings from the provenance recorded in checkpoint"], cwd="/")


def weights(d):
    lst = os.path.join(d, "list.txt")
    # 9. NaN backbone weights; 10. a TorchScript storage shorter than its tensor.
    nanbb = os.path.join(d, "nan.pt")
    code = ("import sys, torch\nm = torch.jit.load(sys.argv[1])\n"
            "p = dict(m.visual.named_parameters())['transformer.resblocks.1.mlp.c_fc.weight']\n"
            "with torch.no_grad(): p[0, 0] = float('nan')\nm.save(sys.argv[2])\n")
    subprocess.run(["/usr/bin/python3", "-c", code, BACKBONE, nanbb], check=True)
    cmd = extract(d, os.path.join(d, "nanout"), lst)
    cmd[cmd.index("--backbone") + 1] = nanbb
    case("NaN backbone weights", cmd, 1, ["nan.pt", "NaN or inf"],
         check=lambda r: None if not os.path.exists(os.path.join(d, "nanout", "manifest.json"))
         else "a cache was written")
    short = os.path.join(d, "short.pt")
    with zipfile.ZipFile(BACKBONE) as zin, zipfile.ZipFile(short, "w") as zout:
        # the largest storage record loses half its bytes
        biggest = max((i for i in zin.infolist() if "/data/" in i.filename),
                      key=lambda i: i.file_size)
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename == biggest.filename:
                data = data[:len(data) // 2]
            zout.writestr(info, data)
    cmd[cmd.index("--backbone") + 1] = short
    case("TorchScript storage shorter than its tensor", cmd, 1, ["short.pt"])
    # 11. HF safetensors without config.json, or with num_attention_heads 0.
    hdir = os.path.join(d, "hf")
    os.makedirs(hdir)
    shutil.copy(HF, os.path.join(hdir, "model.safetensors"))
    cmd[cmd.index("--backbone") + 1] = os.path.join(hdir, "model.safetensors")
    case("HF weights without config.json", cmd, 1, ["no config.json beside it"])
    with open(os.path.join(hdir, "config.json"), "w") as f:
        f.write('{"vision_config": {"num_attention_heads": 0}}')
    case("HF config.json with num_attention_heads 0", cmd, 1,
         [os.path.join(hdir, "config.json"), "'num_attention_heads' is 0"])


def videos_and_values(d):
    lst = os.path.join(d, "list.txt")
    # 14. A trimming window past the end of the video.
    tl = os.path.join(d, "trim.txt")
    with open(tl, "w") as f:
        f.write("a.mkv 0 50 60\nb.mkv 1\n")
    out = os.path.join(d, "trimout")
    case("trim window past the end", extract(d, out, tl), 3,
         check=lambda r: None if "after the end of the video" in
         open(os.path.join(out, "failures.tsv")).read() else "no such failure row")
    # 15. A truncated fast-start MP4 reads as a shorter video, with a warning.
    mp4 = os.path.join(d, "fast.mp4")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=32x32:rate=10", "-t", "3", "-c:v", "mpeg4", "-g", "5",
                    "-movflags", "+faststart", mp4], check=True)
    data = open(mp4, "rb").read()
    open(mp4, "wb").write(data[:len(data) // 3])
    with open(os.path.join(d, "fast.txt"), "w") as f:
        f.write("fast.mp4 0\n")
    case("truncated fast-start MP4", extract(d, os.path.join(d, "fastout"),
                                             os.path.join(d, "fast.txt")), 0,
         ["fast.mp4", "the container declares 30 frames"])
    # The per-video memory bound: 640x480 frames, 2 of them plus their float
    # copies need ~16 MiB.
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=640x480:rate=10", "-t", "1", "-c:v", "ffv1",
                    os.path.join(d, "big.mkv")], check=True)
    with open(os.path.join(d, "big.txt"), "w") as f:
        f.write("big.mkv 0\n")
    out = os.path.join(d, "memout")
    case("decoded frames over --max-decoded-mib",
         extract(d, out, os.path.join(d, "big.txt"), "--max-decoded-mib", "10"), 3,
         check=lambda r: None if "raise --max-decoded-mib" in
         open(os.path.join(out, "failures.tsv")).read() else "no such failure row")
    # Absurd values: usage errors naming the flag.
    for flags, needle in [(["--frames", "99999999999"], "--frames"),
                          (["--input-size", "100000"], "--input-size"),
                          (["--batch-size", "0"], "--batch-size"),
                          (["--thread", "2"], "unrecognised option '--thread'")]:
        case(f"evl_extract {' '.join(flags)}", extract(d, os.path.join(d, "absurd"), lst, *flags),
             2, [needle])
    train = [tool("evl_train_head"), "--cache", os.path.join(d, "cache"), "--out",
             os.path.join(d, "absurd_run"), "--steps", "1", "--batch-size", "2"]
    for flags, needle in [(["--lr", "nan"], "--lr"), (["--num-classes", "4294967296"],
                                                     "--num-classes"),
                          (["--steps", "-3"], "--steps"), (["--mlp-dropout", "1.5"],
                                                           "--mlp-dropout")]:
        case(f"evl_train_head {' '.join(flags)}", train + flags, 2, [needle])
    big = os.path.join(d, "biglabel.txt")
    with open(big, "w") as f:
        f.write("a.mkv 2147483648\n")
    case("a label of 2^31", extract(d, os.path.join(d, "bl"), big), 1,
         ["biglabel.txt' line 1", "2147483648 is absurd"])
    # Forgetting --root: every clip fails, and the summary says why.
    cmd = extract(d, os.path.join(d, "noroot"), lst)
    del cmd[cmd.index("--root"):cmd.index("--root") + 2]
    case("forgotten --root", cmd, 3, ["every clip failed", "no --root given"], cwd="/")
    # A backtrace never reaches the user: --device cuda on a CPU-only LibTorch.
    case("--device cuda without CUDA", extract(d, os.path.join(d, "cuda"), lst, "--device",
                                               "cuda"), 2, ["--device cuda"],
         absent=["frame #", "Exception raised from"],
         check=lambda r: None if len(r.stderr.splitlines()) <= 2
         else f"{len(r.stderr.splitlines())} stderr lines")


def scores_of(path):
    import h5py
    with h5py.File(path, "r") as f:
        ids = [x.decode() if isinstance(x, bytes) else x for x in f["video_ids"][()]]
        return ids, [int(x) for x in f["labels"][()]]


def lists_and_help(d):
    ckpt = os.path.join(d, "run", "last.pth")

    def eval_cmd(cache, scores):
        return [tool("evl_eval"), "--cache", cache, "--checkpoint", ckpt, "--scores", scores,
                "--threads", "1"]

    def write(name, text):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    # 16. Class-name labels: without --labels an error naming the file, the line
    #     and the flag; with a label map they become its indices.
    names = write("names_list.txt", "a.mkv one\nb.mkv zero\n")
    labels = write("labels.txt", "zero\none\n")
    case("class-name labels without --labels", extract(d, os.path.join(d, "nl"), names), 1,
         ["names_list.txt' line 1", "label 'one' is a class name", "--labels FILE"])
    case("class name not in the --labels map",
         extract(d, os.path.join(d, "nl2"), write("names_bad.txt", "a.mkv three\n"),
                 "--labels", labels), 1,
         ["names_bad.txt' line 1", "class 'three' is not in the label map"])
    out = os.path.join(d, "named")
    if case("class-name labels with --labels", extract(d, out, names, "--labels", labels),
            0) is not None:
        case("class-name labels reach the score file", eval_cmd(out, os.path.join(d, "n.h5")), 0,
             check=lambda r: None if scores_of(os.path.join(d, "n.h5")) ==
             (["a.mkv", "b.mkv"], [1, 0]) else f"scores hold {scores_of(os.path.join(d, 'n.h5'))}")
    # 17. One video with two trimming windows is two clips with their own ids
    #     (evl_eval used to fail on the duplicate id after the whole extraction);
    #     the same path and window twice is refused naming both lines.
    two = write("two_windows.txt", "a.mkv 0 0 0.5\na.mkv 1 0.5 1\n")
    out = os.path.join(d, "twowin")
    if case("one video with two trimming windows", extract(d, out, two), 0) is not None:
        case("two windows: distinct ids in the score file", eval_cmd(out, os.path.join(d, "w.h5")),
             0, check=lambda r: None if scores_of(os.path.join(d, "w.h5"))[0] ==
             ["a.mkv@0-0.5", "a.mkv@0.5-1"] else f"ids {scores_of(os.path.join(d, 'w.h5'))[0]}")
    same = write("same_window.txt", "a.mkv 0 0 0.5\nb.mkv 1\na.mkv 1 0.0 0.50\n")
    case("same video and window twice", extract(d, os.path.join(d, "samewin"), same), 1,
         ["same_window.txt' line 3: duplicate of line 1", "same trimming window"])
    # 18. --help prints defaults as their shortest round-trip text (0.0004, not
    #     Boost's 0.00040000000000000002), in every tool.
    for t in ("evl_extract", "evl_train_head", "evl_eval", "evl_predict", "evl_ensemble",
              "evl_cache"):
        case(f"{t} --help defaults", [tool(t), "--help"], 0,
             absent=["000000000", "99999999", "0000001)", "0000007)"])
    case("evl_train_head --help shows lr 0.0004", [tool("evl_train_head"), "--help"], 0,
         check=lambda r: None if "(=0.0004)" in r.stdout else "no '(=0.0004)' in --help")


def main():
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="evl_bad_input_") as d:
        make_fixture(d)
        print(f"fixture ready ({time.time() - t0:.1f} s)")
        # The groups touch disjoint paths under d: two at a time (the cost is
        # mostly process start-up, LibTorch's load included).
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            for f in [pool.submit(g, d) for g in (crashes, provenance, special_files, weights,
                                                  videos_and_values, lists_and_help)]:
                f.result()
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    print(f"{ran - len(failures)} of {ran} cases passed in {time.time() - t0:.1f} s")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
