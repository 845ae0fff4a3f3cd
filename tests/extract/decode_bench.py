#!/usr/bin/python3
"""python3-av baseline for bench_decode: the official loader's full decode
(decode every frame, to_ndarray rgb24, dict by pts, sort). Prints one line per
(video, threads): `<seconds_per_clip> <frames> <threads> <path>`."""
import sys, time, av

reps = int(sys.argv[1])
for threads in (1, 2):
    for path in sys.argv[2:]:
        best = None
        for _ in range(reps):
            t0 = time.perf_counter()
            with av.open(path) as c:
                s = c.streams.video[0]
                s.thread_count = threads
                s.thread_type = "AUTO" if threads > 1 else "SLICE"
                frames = {f.pts: f.to_ndarray(format="rgb24") for f in c.decode(video=0)}
                frames = [frames[k] for k in sorted(frames)]
            dt = time.perf_counter() - t0
            best = dt if best is None else min(best, dt)
        print(f"{best:.6f} {len(frames)} {threads} {path}", flush=True)
