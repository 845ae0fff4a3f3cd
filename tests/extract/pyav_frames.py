#!/usr/bin/python3
"""Reference for video tests: decodes videos with PyAV the way the official EVL
loader does (dict keyed by frame.pts, sorted) and prints one line per video:
`<num_frames> <path>`. With --dump DIR I1,I2,..., also writes the RGB24 bytes of
those presentation indices of the first video to DIR/<i>.rgb (PyAV to_ndarray)."""
import sys, av

args = sys.argv[1:]
dump = None
if args and args[0] == "--dump":
    dump = (args[1], [int(i) for i in args[2].split(",")])
    args = args[3:]
for path in args:
    frames = {}
    with av.open(path) as c:
        for f in c.decode(video=0):
            frames[f.pts] = f.to_ndarray(format="rgb24") if dump else None
    keys = sorted(frames)
    print(len(keys), path)
    if dump:
        for i in dump[1]:
            open(f"{dump[0]}/{i}.rgb", "wb").write(frames[keys[i]].tobytes())
        dump = None
