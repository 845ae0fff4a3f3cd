#!/usr/bin/env bash
# The end-to-end demo (`make demo`): generates a synthetic motion dataset and a
# small random CLIP-shaped backbone, extracts training and test views into
# feature caches, trains two EVL heads (with and without the temporal modules),
# evaluates both, ensembles them, draws pictures, and prints a results table.
#
# The backbone has RANDOM weights and the videos are SYNTHETIC: the numbers show
# the pipeline working, not CLIP's accuracy. To use real CLIP weights, replace
# the backbone line below by e.g.  BACKBONE=/path/to/ViT-B-16.pt  (OpenAI CLIP)
# or a Hugging Face CLIPVisionModel .safetensors file, and drop --input-size.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BUILD_DIR:-build}/bin
OUT=${DEMO_DIR:-demo}
THREADS=${THREADS:-$(nproc)}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
PY=/usr/bin/python3

step() { printf '\n== %s\n' "$*"; }
start=$(date +%s)
rm -rf "$OUT"
mkdir -p "$OUT"

step "1/7 synthetic motion dataset (4 classes: the camera pans right/left/down/up; no single frame tells them apart)"
$PY scripts/make_motion_dataset.py --out "$OUT/data" \
  --classes panning_right,panning_left,panning_down,panning_up --per-class 100 --frames 16 \
  --size 64x64 --seed 0 --split-ratio 0.6

step "2/7 a small CLIP-shaped backbone with random weights (width 128, 4 blocks, patch 8, 32x32 input)"
# --tied-qk: key projection = query projection, so attention compares what tokens
# show (as a trained ViT's does) and EVL's cross-frame attention can follow motion.
BACKBONE=$OUT/backbone.pt
$PY scripts/make_clip_backbone.py --width 128 --layers 4 --patch 8 --image-size 32 --seed 0 \
  --tied-qk --pos-scale 0.3 -o "$BACKBONE"

common=(--root "$OUT/data" --backbone "$BACKBONE" --frames 8 --stride 2 --layers last2 --threads "$THREADS")
step "3/7 evl_extract: 2 augmented training views per clip, 1 test view per validation clip"
"$BIN/evl_extract" --list "$OUT/data/train.txt" --out "$OUT/cache-train" --train-views 2 --seed 1 "${common[@]}"
"$BIN/evl_extract" --list "$OUT/data/val.txt" --out "$OUT/cache-val" --dump-frames "$OUT/frames" --limit 4 \
  "${common[@]}" >/dev/null 2>&1 || true  # a few PNGs of what the model sees
rm -rf "$OUT/cache-val"
"$BIN/evl_extract" --list "$OUT/data/val.txt" --out "$OUT/cache-val" "${common[@]}"
"$BIN/evl_cache" info "$OUT/cache-train"

train=(--cache "$OUT/cache-train" --val-cache "$OUT/cache-val" --steps 200 --batch-size 32 --lr 2e-3
       --eval-every 50 --save-every 100 --log-every 20 --threads "$THREADS")
step "4/7 evl_train_head: EVL head with temporal conv, position embedding and cross-frame attention"
"$BIN/evl_train_head" "${train[@]}" --out "$OUT/run-temporal"
step "5/7 evl_train_head: the same head with every temporal module switched off"
"$BIN/evl_train_head" "${train[@]}" --out "$OUT/run-plain" \
  --no-temporal-conv --no-temporal-pos-embed --no-temporal-cross-attention

step "6/7 evl_eval on the validation cache, then evl_ensemble --alpha-step 0.1"
for run in temporal plain; do
  "$BIN/evl_eval" --cache "$OUT/cache-val" --checkpoint "$OUT/run-$run/last.pth" \
    --scores "$OUT/scores-$run.h5" --labels "$OUT/data/labels.txt" --json "$OUT/eval-$run.json"
done
"$BIN/evl_ensemble" --val "$OUT/scores-temporal.h5" "$OUT/scores-plain.h5" --alpha-step 0.1 \
  --out "$OUT/scores-ensemble.h5" --json "$OUT/ensemble.json"

step "7/7 pictures"
scripts/plot/training_curves.sh "$OUT/run-temporal/metrics.jsonl" "$OUT/curves-temporal.png"
scripts/plot/training_curves.sh "$OUT/run-plain/metrics.jsonl" "$OUT/curves-plain.png"
scripts/plot/confusion.sh "$OUT/eval-temporal.json" "$OUT/confusion-temporal.png"
scripts/plot/alpha_curve.sh "$OUT/ensemble.json" "$OUT/alpha-curve.png"

$PY - "$OUT" "$(( $(date +%s) - start ))" <<'PYEOF'
import json, sys
out, secs = sys.argv[1], int(sys.argv[2])
def ev(name):
    m = json.load(open(f"{out}/eval-{name}.json"))["metrics"]
    return m.get("top1"), m.get("top5"), m.get("mean_class_accuracy")
ens = json.load(open(f"{out}/ensemble.json"))
chosen = ens.get("chosen", {})
n_val = sum(1 for line in open(f"{out}/data/val.txt") if line.strip())
print(f"\n== results (validation, {n_val} clips, 4 classes: chance is 25%)")
print(f"{'model':<34}{'top-1':>8}{'top-5':>8}{'mean class':>12}")
for label, name in [("EVL head, temporal modules on", "temporal"), ("EVL head, temporal modules off", "plain")]:
    t1, t5, mc = ev(name)
    print(f"{label:<34}{100*t1:>7.1f}%{100*t5:>7.1f}%{100*mc:>11.1f}%")
w, v = chosen["weights"], chosen["val"]
label = "ensemble, alpha " + f"{w[0]:.1f} (tuned on val)"
print(f"{label:<34}{100*v['top1']:>7.1f}%{100*v['top5']:>7.1f}%{100*v['mean_class_accuracy']:>11.1f}%")
print(f"\npictures: {out}/curves-*.png, {out}/confusion-temporal.png, {out}/alpha-curve.png, frames in {out}/frames/")
print(f"took {secs} s. The backbone is random and the data synthetic: see README.md for real CLIP weights.")
PYEOF
