#!/usr/bin/env bash
# confusion.sh REPORT.json OUT.png
# Draws a confusion matrix (rows = true class, columns = predicted, each row
# normalised to 1) as a PNG heat map with gnuplot. REPORT.json is any JSON with
# a "confusion" matrix ([[K] x K] counts), found at the top level or nested
# (evl_eval's --json, or evl_ensemble's report: chosen.test, else chosen.val);
# "class_names" beside it label the axes when K <= 40.
set -euo pipefail
# shellcheck source=scripts/plot/common.sh
source "$(dirname "$0")/common.sh"
plot_start "REPORT.json OUT.png" "$@"
/usr/bin/python3 - "$in" "$tmp" <<'PY'
import json, sys
src, tmp = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(src))
except ValueError as e:
    sys.exit(f"error: '{src}': not JSON ({e})")
def find(d):
    if isinstance(d, dict):
        if isinstance(d.get("confusion"), list):
            return d
        for key in ("chosen", "test", "val", "metrics"):
            if key in d and d[key] is not None:
                r = find(d[key])
                if r:
                    return r
        for v in d.values():
            r = find(v)
            if r:
                return r
    return None
m = find(doc)
if not m:
    sys.exit(f"error: '{src}': no 'confusion' matrix found")
conf = m["confusion"]
k = len(conf)
if k == 0 or any(len(r) != k for r in conf):
    sys.exit(f"error: '{src}': 'confusion' is not a square matrix")
with open(f"{tmp}/conf.dat", "w") as f:
    for r in conf:
        s = sum(r)
        f.write(" ".join(repr(v / s if s else 0.0) for v in r) + "\n")
names = m.get("class_names") or doc.get("class_names") or []
tics = ""
if names and len(names) == k and k <= 40:
    q = lambda s: '"' + str(s).replace('"', "'") + '"'
    tics = ", ".join(f"{q(n)} {i}" for i, n in enumerate(names))
with open(f"{tmp}/tics.gp", "w") as f:
    if tics:
        f.write(f"set xtics ({tics}) rotate by 60 right\nset ytics ({tics})\n")
    elif k > 40:
        f.write("unset xtics\nunset ytics\n")
    acc = m.get("top1")
    f.write(f'set title "confusion matrix, {k} classes' +
            (f', top-1 {100 * acc:.2f}%' if isinstance(acc, (int, float)) else "") + '"\n')
PY
k=$(wc -l < "$tmp/conf.dat")
size=$(( k > 40 ? 1400 : 900 ))
gnuplot <<GP
set terminal pngcairo size $size,$size noenhanced font ",9"
set output "$out"
set xlabel "predicted class"
set ylabel "true class"
set xrange [-0.5:$k-0.5]
set yrange [$k-0.5:-0.5]
set cbrange [0:1]
set cblabel "fraction of the true class"
set palette defined (0 "white", 0.2 "#9ecae1", 1 "#08306b")
set size ratio -1
load "$tmp/tics.gp"
plot "$tmp/conf.dat" matrix with image notitle
GP
echo "wrote $out"
