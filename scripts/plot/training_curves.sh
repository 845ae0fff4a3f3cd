#!/usr/bin/env bash
# training_curves.sh RUN_DIR/metrics.jsonl OUT.png
# Draws the training curves of an evl_train_head run as one PNG (gnuplot):
# loss, validation top-1/top-5 and learning rate against the step. Lines of
# metrics.jsonl are JSON objects such as
#   {"step":10,"loss":1.2,"lr":4e-4,"samples_per_s":100,"val_top1":0.5,"val_top5":0.9}
# and any field may be absent from a line (validation runs only now and then).
set -euo pipefail
# shellcheck source=scripts/plot/common.sh
source "$(dirname "$0")/common.sh"
plot_start "METRICS.jsonl OUT.png" "$@"
# JSON lines -> columns: step loss lr val_top1 val_top5 (NaN when absent).
/usr/bin/python3 - "$in" "$tmp/train.dat" <<'PY'
import json, sys
rows = []
with open(sys.argv[1]) as f:
    for n, line in enumerate(f, 1):
        line = line.strip()
        if not line:
            continue
        try:
            d = json.loads(line)
        except ValueError as e:
            sys.exit(f"error: '{sys.argv[1]}' line {n}: not JSON ({e})")
        if "step" not in d:
            continue
        rows.append([d.get(k) for k in ("step", "loss", "lr", "val_top1", "val_top5")])
if not rows:
    sys.exit(f"error: '{sys.argv[1]}': no line with a 'step'")
with open(sys.argv[2], "w") as f:
    for r in rows:
        f.write(" ".join("NaN" if v is None else repr(float(v)) for v in r) + "\n")
PY
gnuplot <<GP
set terminal pngcairo size 1200,900 noenhanced font ",10"
set output "$out"
set datafile missing "NaN"
stats "$tmp/train.dat" using 1 nooutput
set xrange [STATS_min:STATS_max > STATS_min ? STATS_max : STATS_min + 1]
set multiplot layout 3,1 title "training curves: $in"
set grid
set xlabel "step"
set ylabel "loss"
plot "$tmp/train.dat" using 1:(\$2) with lines lw 1.5 title "train loss"
set ylabel "accuracy (%)"
set key bottom right
plot "$tmp/train.dat" using 1:(100*\$4) with linespoints pt 7 ps 0.6 title "val top-1", \
     "$tmp/train.dat" using 1:(100*\$5) with linespoints pt 7 ps 0.6 title "val top-5"
set ylabel "learning rate"
set format y "%.1e"
plot "$tmp/train.dat" using 1:(\$3) with lines lw 1.5 title "lr"
unset multiplot
GP
echo "wrote $out"
