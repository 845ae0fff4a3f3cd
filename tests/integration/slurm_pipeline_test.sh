#!/usr/bin/env bash
# The real evl pipeline through Slurm, checked against the same pipeline run locally
# (CTest label integration):   slurm_pipeline_test.sh BIN_DIR
#
#  1. A tiny synthetic motion dataset (scripts/make_motion_dataset.py: 3 classes x 4 videos,
#     9 train / 3 val) and the tiny random CLIP fixture (tests/fixtures/backbone/tiny_clip_openai.pt).
#  2. scripts/slurm/local_cluster.sh start; exit 77 (CTest: skipped) with the reason only when
#     Slurm cannot start here.
#  3. scripts/slurm/submit_pipeline.sh with the real tools from BIN_DIR: the training list as a
#     4-task extraction array (augmented views), the val list as a 2-task array, two merges,
#     evl_train_head as a 2-task srun step (--train-tasks 2: data-parallel ranks over Gloo),
#     evl_eval; waits for every job (scontrol: COMPLETED) and prints the job logs
#     on any failure or timeout.
#  4. Checks against local single-process runs of the same tools with the same flags:
#     (a) each merged cache (4 or 2 shards) equals a local `evl_extract` of the whole list:
#         `evl_cache verify`, then every record byte-identical and the manifests equal
#         (compare_outputs.py caches, reading LMDB directly) - extraction is deterministic
#         whatever the sharding;
#     (b) the Slurm eval's scores.h5 equals a local `evl_eval` of the Slurm-trained head on the
#         local val cache;
#     (c) a local 2-rank `evl_train_head` (two processes, --rank/--world-size flags) with the
#         same flags on the local caches gives the same parameters as the 2-task Slurm-trained
#         head, and its local eval the same scores (CPU training is deterministic given the seed
#         and the world size; tests/train/distributed_ranks_test.py compares world sizes).
# Stops the cluster afterwards if this test started it (EVL_SLURM_KEEP=1 keeps it and the work dir).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
slurm=$repo/scripts/slurm
py=/usr/bin/python3
bin=$(cd "${1:?usage: slurm_pipeline_test.sh BIN_DIR (the evl tools)}" && pwd)
export EVL_SLURM_DIR=${EVL_SLURM_DIR:-/tmp/evl-slurm}
export SLURM_CONF=$EVL_SLURM_DIR/slurm.conf
export OMP_WAIT_POLICY=PASSIVE EVL_PROGRESS=0
TIMEOUT=${EVL_SLURM_TEST_TIMEOUT:-300}

skip() { echo "SKIPPED: Slurm cannot start on this machine: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }
step() { echo "== [$SECONDS s] $*"; }

for tool in evl_extract evl_cache evl_train_head evl_eval; do
  [ -x "$bin/$tool" ] || fail "$bin/$tool is not built"
done
if ! command -v slurmctld >/dev/null && [ "$(id -u)" -ne 0 ]; then
  skip "slurm-wlm is not installed and installing it needs root"
fi

work=$(mktemp -d /tmp/evl-slurm-pipeline.XXXXXX)
started_here=0 jobs=()
cleanup() {
  local rc=$?
  # A failed run leaves no dependants of its failed stage behind in the queue.
  [ "$rc" = 0 ] || [ ${#jobs[@]} = 0 ] || scancel "${jobs[@]}" 2>/dev/null || true
  [ "$started_here" = 1 ] && [ "${EVL_SLURM_KEEP:-0}" != 1 ] && "$slurm/local_cluster.sh" stop || true
  if [ "${EVL_SLURM_KEEP:-0}" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

step "1. dataset and backbone"
"$py" "$repo/scripts/make_motion_dataset.py" --out "$work/data" --classes 3 --per-class 4 \
  --frames 12 --size 48x48 --seed 0 --split-ratio 0.75 --jobs 2 >/dev/null
backbone=$repo/tests/fixtures/backbone/tiny_clip_openai.pt
[ -s "$backbone" ] || fail "missing fixture $backbone"
[ "$(wc -l <"$work/data/train.txt")" = 9 ] && [ "$(wc -l <"$work/data/val.txt")" = 3 ] \
  || fail "expected 9 train / 3 val videos, got $(wc -l <"$work/data/train.txt") / $(wc -l <"$work/data/val.txt")"

# The stages' options travel as config files, as in a real run (--extract-config, --train-config).
cat >"$work/extract.ini" <<'EOF'
frames = 4
stride = 2
temporal-views = 2
spatial-views = 1
layers = last2
store = qk
dtype = fp16
device = cpu
threads = 1
batch-size = 4
EOF
cat >"$work/train.ini" <<'EOF'
steps = 12
batch-size = 6
lr = 1e-3
seed = 5
eval-every = 6
save-every = 6
log-every = 3
threads = 1
device = cpu
EOF
train_extract_flags=(--train-views 2 --flip --photometric --seed 3)

step "2. local Slurm"
if ! "$slurm/local_cluster.sh" status >/dev/null 2>&1; then
  started_here=1
  # A half-started cluster gets one clean stop-and-start before the test gives up.
  "$slurm/local_cluster.sh" start ||
    { "$slurm/local_cluster.sh" stop || true; sleep 2; "$slurm/local_cluster.sh" start; } ||
    skip "scripts/slurm/local_cluster.sh start failed twice (see above)"
fi

step "3. submit_pipeline.sh"
# CPUS=1: two array tasks run at once on a 2-core node.
ids=$(CPUS=1 "$slurm/submit_pipeline.sh" --work "$work/pipe" --shards 4 --val-shards 2 --bin "$bin" \
  --train-list "$work/data/train.txt" --val-list "$work/data/val.txt" --root "$work/data" \
  --backbone "$backbone" --extract-config "$work/extract.ini" \
  --train-extract-args "${train_extract_flags[*]}" --train-config "$work/train.ini" --eval-args "--threads 1" \
  --train-tasks 2)
echo "submitted: $ids"
# shellcheck disable=SC2046
set -- $(echo "$ids" | tr ' ' '\n' | cut -d= -f2)
[ $# = 6 ] || fail "submit_pipeline.sh printed '$ids', expected 6 job ids"
jobs=("$@")

show_logs() {
  for f in "$work"/pipe/logs/*; do
    [ -f "$f" ] && { echo "--- $f" >&2; tail -n 40 "$f" >&2; }
  done
  squeue >&2 || true
}
# job_states ID: the states of a job (one per array task) while Slurm remembers it (MinJobAge).
job_states() { scontrol -o show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p' | sort -u; }
deadline=$((SECONDS + TIMEOUT))
while :; do
  queued=0
  for id in "$@"; do [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ] && queued=1; done
  for id in "$@"; do
    bad=$(job_states "$id" | grep -v -E '^(COMPLETED|PENDING|RUNNING|CONFIGURING|COMPLETING)$' || true)
    [ -z "$bad" ] || { show_logs; fail "job $id ended $(echo "$bad" | tr '\n' ' ')"; }
  done
  [ $queued = 0 ] && break
  [ $SECONDS -lt $deadline ] || { show_logs; fail "jobs still queued after ${TIMEOUT}s"; }
  sleep 1
done
for id in "$@"; do
  states=$(job_states "$id" | tr '\n' ' ')
  [ "$states" = "COMPLETED " ] || { show_logs; fail "job $id: states '$states', expected COMPLETED"; }
done
for f in cache-train/manifest.json cache-val/manifest.json run/last.pth scores.h5 eval.json; do
  [ -s "$work/pipe/$f" ] || { show_logs; fail "the pipeline did not write $f"; }
done
for i in 0 1 2 3; do
  grep -q "evl-extract task $i/4" "$work"/pipe/logs/evl-extract-train-*_"$i".out \
    || fail "no log of training extraction task $i"
done
step "all 6 jobs COMPLETED"

step "4a. local single-process extraction == merged Slurm caches"
"$bin/evl_extract" --config "$work/extract.ini" --list "$work/data/train.txt" --root "$work/data" \
  --backbone "$backbone" --out "$work/local-train" "${train_extract_flags[@]}" --shard-index 0 --num-shards 1
"$bin/evl_extract" --config "$work/extract.ini" --list "$work/data/val.txt" --root "$work/data" \
  --backbone "$backbone" --out "$work/local-val" --shard-index 0 --num-shards 1
for c in pipe/cache-train pipe/cache-val local-train local-val; do
  "$bin/evl_cache" verify "$work/$c" >/dev/null || fail "evl_cache verify $work/$c"
done
"$bin/evl_cache" info "$work/pipe/cache-train"
"$py" "$here/compare_outputs.py" caches "$work/pipe/cache-train" "$work/local-train"
"$py" "$here/compare_outputs.py" caches "$work/pipe/cache-val" "$work/local-val"
# The train cache really holds 2 augmented views of each of the 9 clips; the val cache 2 test views.
[ "$("$py" -c 'import json,sys; print(sum(s["records"] for s in json.load(open(sys.argv[1]))["shards"]))' \
  "$work/pipe/cache-train/manifest.json")" = 18 ] || fail "expected 18 training records"

step "4b. local evl_eval of the Slurm-trained head == the Slurm eval"
"$bin/evl_eval" --cache "$work/local-val" --checkpoint "$work/pipe/run/last.pth" \
  --scores "$work/local-scores-slurm-head.h5" --threads 1
"$py" "$here/compare_outputs.py" scores "$work/pipe/scores.h5" "$work/local-scores-slurm-head.h5"

step "4c. local 2-rank evl_train_head with the same flags == the 2-task srun-trained head"
grep -q "rank 1 of 2 .*Slurm (srun)" "$work"/pipe/logs/evl-train-*.out \
  || { show_logs; fail "the training job did not run as 2 srun ranks"; }
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pids=()
for r in 0 1; do
  "$bin/evl_train_head" --config "$work/train.ini" --cache "$work/local-train" \
    --val-cache "$work/local-val" --out "$work/local-run" --rank $r --world-size 2 \
    --master-addr 127.0.0.1 --master-port "$port" --dist-timeout 120 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || fail "a local rank failed"; done
"$py" "$here/compare_outputs.py" heads "$work/pipe/run/last.pth" "$work/local-run/last.pth"
"$bin/evl_eval" --cache "$work/local-val" --checkpoint "$work/local-run/last.pth" \
  --scores "$work/local-scores.h5" --threads 1
"$py" "$here/compare_outputs.py" scores "$work/pipe/scores.h5" "$work/local-scores.h5"
step "PASS"
