#!/usr/bin/env bash
# Submits the whole evl pipeline to Slurm as dependent jobs and prints the job ids:
#
#   extract train list (array of --shards tasks) ─► merge ─┐
#   extract val list   (array of --val-shards)  ─► merge ─┴► train ─► eval
#
#   scripts/slurm/submit_pipeline.sh --work /scratch/k400-b16 --shards 16 \
#     --train-list train.txt --val-list val.txt --root /data/k400 --backbone ViT-B-16.pt \
#     --extract-config configs/k400_b16_8x16/extract.ini --train-extract-args "--train-views 1" \
#     --train-config configs/k400_b16_8x16/train.ini
#
# Layout under --work: cache-train/ and cache-val/ (merged caches; the array
# tasks write cache-*-parts/part-NNNNN/), run/ (evl_train_head --out; the head
# is run/last.pth), scores.h5 and eval.json (evl_eval), logs/ (one file per job),
# jobs.env (the job ids as shell variables). Without --val-list only the
# training cache and the head are produced (no --val-cache, no eval).
#
# Options (extra *-args strings are split on whitespace):
#   --bin DIR                 evl tools (default: <repo>/build/bin)
#   --train-extract-args STR  more evl_extract flags for the training list (e.g. "--train-views 2")
#   --val-extract-args STR    more evl_extract flags for the validation list
#   --train-args STR          more evl_train_head flags      --eval-args STR  more evl_eval flags
#   --train-tasks N           train the head on N data-parallel ranks (srun, one task per
#                             GPU or CPU share; --batch-size must divide by N)
#   --train-nodes M           spread those tasks over M nodes
#   --gpus N / --cpus N / --mem M / --time T / --partition P / --account A
#                             resources of every job (or the env variables GPUS, CPUS, MEM, TIME,
#                             PARTITION, ACCOUNT; GPUS=1 -> --gres=gpu:1 and --device cuda)
#   --dry-run                 print the sbatch commands, submit nothing
# Output: one line "extract_train=ID extract_val=ID merge_train=ID merge_val=ID train=ID eval=ID".
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

work="" shards=4 val_shards="" bin="$repo/build/bin" dry=()
train_list="" val_list="" root="" backbone=""
extract_config="" val_extract_config="" train_config=""
train_extract_args="" val_extract_args="" train_args="" eval_args="" train_tasks="" train_nodes=""
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run | -h | --help) ;;
    *) [ $# -ge 2 ] || { echo "submit_pipeline.sh: $1 needs a value" >&2; exit 2; } ;;
  esac
  case "$1" in
    --work) work=$2 ;;
    --shards) shards=$2 ;;
    --val-shards) val_shards=$2 ;;
    --bin) bin=$2 ;;
    --train-list) train_list=$2 ;;
    --val-list) val_list=$2 ;;
    --root) root=$2 ;;
    --backbone) backbone=$2 ;;
    --extract-config) extract_config=$2 ;;
    --val-extract-config) val_extract_config=$2 ;;
    --train-config) train_config=$2 ;;
    --train-extract-args) train_extract_args=$2 ;;
    --val-extract-args) val_extract_args=$2 ;;
    --train-args) train_args=$2 ;;
    --train-tasks) train_tasks=$2 ;;
    --train-nodes) train_nodes=$2 ;;
    --eval-args) eval_args=$2 ;;
    --gpus) export GPUS=$2 ;;
    --cpus) export CPUS=$2 ;;
    --mem) export MEM=$2 ;;
    --time) export TIME=$2 ;;
    --partition) export PARTITION=$2 ;;
    --account) export ACCOUNT=$2 ;;
    --dry-run) dry=(--dry-run); shift; continue ;;
    -h | --help) usage ;;
    *) echo "submit_pipeline.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift 2
done
[ -n "$work" ] && [ -n "$train_list" ] && [ -n "$backbone" ] \
  || { echo "submit_pipeline.sh: --work, --train-list and --backbone are required (see --help)" >&2; exit 2; }
[[ "$shards" =~ ^[1-9][0-9]*$ ]] || { echo "submit_pipeline.sh: --shards '$shards' must be a positive integer" >&2; exit 2; }
val_shards=${val_shards:-$shards}
for n in "$train_tasks" "$train_nodes"; do
  [ -z "$n" ] || [[ "$n" =~ ^[1-9][0-9]*$ ]] \
    || { echo "submit_pipeline.sh: --train-tasks/--train-nodes '$n' must be a positive integer" >&2; exit 2; }
done
val_extract_config=${val_extract_config:-$extract_config}

abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
work=$(abs "$work")
export EVL_BIN
EVL_BIN=$(abs "$bin")
mkdir -p "$work/logs"
device=()
[ "${GPUS:-0}" -gt 0 ] 2>/dev/null && device=(--device cuda)

submit() { "$here/submit_stage.sh" "${dry[@]}" --log-dir "$work/logs" "$@"; }

# extract_and_merge NAME LIST SHARDS CONFIG EXTRA -> sets ids extract_<NAME>, merge_<NAME>
extract_and_merge() {
  local name=$1 list=$2 n=$3 config=$4 extra=$5
  local args=(--list "$(abs "$list")" --backbone "$(abs "$backbone")" "${device[@]}")
  [ -n "$config" ] && args=(--config "$(abs "$config")" "${args[@]}")
  [ -n "$root" ] && args+=(--root "$(abs "$root")")
  # shellcheck disable=SC2206
  [ -n "$extra" ] && args+=($extra)
  local parts=() i
  for ((i = 0; i < n; i++)); do parts+=("$(printf '%s/cache-%s-parts/part-%05d' "$work" "$name" "$i")"); done
  local eid mid
  eid=$(EVL_PARTS_DIR="$work/cache-$name-parts" submit --name "evl-extract-$name" --array "$n" \
    "$here/extract_array.sbatch" "${args[@]}")
  mid=$(GPUS=0 submit --name "evl-merge-$name" --after "$eid" "$here/merge.sbatch" "$work/cache-$name" "${parts[@]}")
  printf -v "extract_$name" '%s' "$eid"
  printf -v "merge_$name" '%s' "$mid"
}

extract_train="" extract_val="" merge_train="" merge_val="" train="" eval=""
extract_and_merge train "$train_list" "$shards" "$extract_config" "$train_extract_args"
[ -n "$val_list" ] && extract_and_merge val "$val_list" "$val_shards" "$val_extract_config" "$val_extract_args"

targs=(--cache "$work/cache-train" --out "$work/run" "${device[@]}")
[ -n "$train_config" ] && targs=(--config "$(abs "$train_config")" "${targs[@]}")
[ -n "$val_list" ] && targs+=(--val-cache "$work/cache-val")
# shellcheck disable=SC2206
[ -n "$train_args" ] && targs+=($train_args)
train=$(TASKS=$train_tasks NODES=$train_nodes submit --name evl-train --after "$merge_train" ${merge_val:+--after "$merge_val"} \
  "$here/train.sbatch" "${targs[@]}")

if [ -n "$val_list" ]; then
  eargs=(--cache "$work/cache-val" --checkpoint "$work/run/last.pth" --scores "$work/scores.h5"
    --json "$work/eval.json" "${device[@]}")
  # shellcheck disable=SC2206
  [ -n "$eval_args" ] && eargs+=($eval_args)
  eval=$(submit --name evl-eval --after "$train" "$here/eval.sbatch" "${eargs[@]}")
fi

line="extract_train=$extract_train extract_val=$extract_val merge_train=$merge_train merge_val=$merge_val train=$train eval=$eval"
[ ${#dry[@]} -eq 0 ] && echo "$line" | tr ' ' '\n' >"$work/jobs.env"
echo "$line"
