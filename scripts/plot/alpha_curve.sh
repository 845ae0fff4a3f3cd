#!/usr/bin/env bash
# alpha_curve.sh REPORT.json OUT.png
# Draws evl_ensemble's search (its --json report) as a PNG with gnuplot: for two
# models, val (and test) top-1/top-5 against alpha, the weight of the first
# model; for more, the same against the index of the weight vector in the grid.
# The chosen point is marked.
set -euo pipefail
# shellcheck source=scripts/plot/common.sh
source "$(dirname "$0")/common.sh"
plot_start "REPORT.json OUT.png" "$@"
/usr/bin/python3 - "$in" "$tmp" <<'PY'
import json, sys
src, tmp = sys.argv[1], sys.argv[2]
try:
    doc = json.load(open(src))
    points, chosen = doc["points"], doc["chosen"]["index"]
except (ValueError, KeyError, TypeError) as e:
    sys.exit(f"error: '{src}': not an evl_ensemble report ({e})")
two = doc.get("num_models") == 2
pct = lambda v: "NaN" if v is None else repr(100 * v)
with open(f"{tmp}/curve.dat", "w") as f:
    for i, p in enumerate(points):
        x = p["weights"][0] if two else i
        f.write(" ".join([repr(x), pct(p.get("val_top1")), pct(p.get("val_top5")),
                          pct(p.get("test_top1")), pct(p.get("test_top5"))]) + "\n")
with open(f"{tmp}/vars.gp", "w") as f:
    names = ", ".join(m.get("name", "?") for m in doc.get("models", []))
    x = points[chosen]["weights"][0] if two else chosen
    w = ", ".join(f"{v:g}" for v in points[chosen]["weights"])
    f.write(f'set xlabel "{"alpha (weight of " + doc["models"][0]["name"] + ")" if two else "weight vector (grid order)"}"\n')
    f.write(f'set title "ensemble of {names}: chosen weights ({w})"\n')
    f.write(f"set arrow from {x}, graph 0 to {x}, graph 1 nohead dt 2 lc rgb 'gray40'\n")
    f.write(f"has_test = {1 if doc.get('test') else 0}\n")
PY
gnuplot <<GP
set terminal pngcairo size 1000,650 noenhanced font ",10"
set output "$out"
set datafile missing "NaN"
set grid
set key bottom center
set ylabel "accuracy (%)"
load "$tmp/vars.gp"
if (has_test) {
  plot "$tmp/curve.dat" using 1:2 with linespoints pt 7 ps 0.7 title "val top-1", \
       "$tmp/curve.dat" using 1:3 with linespoints pt 5 ps 0.6 title "val top-5", \
       "$tmp/curve.dat" using 1:4 with linespoints pt 6 ps 0.7 dt 2 title "test top-1", \
       "$tmp/curve.dat" using 1:5 with linespoints pt 4 ps 0.6 dt 2 title "test top-5"
} else {
  plot "$tmp/curve.dat" using 1:2 with linespoints pt 7 ps 0.7 title "val top-1", \
       "$tmp/curve.dat" using 1:3 with linespoints pt 5 ps 0.6 title "val top-5"
}
GP
echo "wrote $out"
