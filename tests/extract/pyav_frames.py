#!/usr/bin/python3
"""Reference for video tests: decodes videos with PyAV the way the official EVL
loader does (dict keyed by frame.pts, sorted) and prints one line per video:
`<num_frames> <path>`. With --dump DIR I1,I2,..., also writes the RGB24 bytes
(PyAV to_ndarray('rgb24'), what the official loader sees) of those
presentation indices of every video to DIR/<basename>.<i>.rgb."""
import os, sys, av

args = sys.argv[1:]
dump = None
if args and args[0] == "--dump":
    dump = (args[1], [int(i) for i in args[2].split(",")])
    args = args[3:]
def decode_pts(path):
    with av.open(path) as c:
        return [f.pts for f in c.decode(video=0)]


for path in args:
    keys = sorted(set(decode_pts(path)), key=lambda k: (k is None, k))
    print(len(keys), path, flush=True)
    if dump:
        # Second pass converting only the wanted frames (the last one decoded
        # with a given pts wins, as in the loader's dict).
        want = {keys[i]: i for i in dump[1] if i < len(keys)}
        got = {}
        with av.open(path) as c:
            for f in c.decode(video=0):
                if f.pts in want:
                    got[want[f.pts]] = f.to_ndarray(format="rgb24")
        base = os.path.basename(path)
        for i, a in got.items():
            with open(f"{dump[0]}/{base}.{i}.rgb", "wb") as out:
                out.write(a.tobytes())
