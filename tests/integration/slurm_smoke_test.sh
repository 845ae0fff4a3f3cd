#!/usr/bin/env bash
# Integration test of scripts/slurm/ on a real single-node Slurm (CTest label integration).
#  1. scripts/slurm/local_cluster.sh start (installs slurm-wlm + munge when root and missing);
#     exit 77 (CTest: skipped) with the reason only when Slurm cannot start here.
#  2. submit_stage.sh: a 4-task array job writing one file per task + an afterok join job;
#     checks every task's output and the joined file; a failing job's afterok dependant never runs,
#     also when submitted after the failure.
#  3. submit_pipeline.sh with recording stand-ins for the evl tools (EVL_BIN): checks that
#     the array tasks got --shard-index i --num-shards 4 and their own --out part, and that
#     merge -> train -> eval ran in dependency order with the expected arguments.
# Stops the cluster afterwards if this test started it (EVL_SLURM_KEEP=1 keeps it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
slurm=$repo/scripts/slurm
export EVL_SLURM_DIR=${EVL_SLURM_DIR:-/tmp/evl-slurm}
export SLURM_CONF=$EVL_SLURM_DIR/slurm.conf
TIMEOUT=${EVL_SLURM_TEST_TIMEOUT:-240}

skip() { echo "SKIPPED: Slurm cannot start on this machine: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

if ! command -v slurmctld >/dev/null && [ "$(id -u)" -ne 0 ]; then
  skip "slurm-wlm is not installed and installing it needs root"
fi
started_here=0
if ! "$slurm/local_cluster.sh" status >/dev/null 2>&1; then
  started_here=1
  # A half-started cluster (stale pid files, a daemon left from a killed run)
  # gets one clean stop-and-start before the test gives up.
  "$slurm/local_cluster.sh" start ||
    { "$slurm/local_cluster.sh" stop || true; sleep 2; "$slurm/local_cluster.sh" start; } ||
    skip "scripts/slurm/local_cluster.sh start failed twice (see above)"
fi
work=$(mktemp -d /tmp/evl-slurm-test.XXXXXX)
cleanup() {
  [ "$started_here" = 1 ] && [ "${EVL_SLURM_KEEP:-0}" != 1 ] && "$slurm/local_cluster.sh" stop || true
  rm -rf "$work"
}
trap cleanup EXIT

# wait_jobs ID... : until none of the jobs is in the queue (or TIMEOUT).
wait_jobs() {
  local deadline=$((SECONDS + TIMEOUT)) id left
  while [ $SECONDS -lt $deadline ]; do
    left=0
    for id in "$@"; do [ -n "$(squeue -h -j "$id" -o %i 2>/dev/null)" ] && left=1; done
    [ $left = 0 ] && return 0
    sleep 1
  done
  squeue >&2
  fail "jobs $* still queued after ${TIMEOUT}s"
}

# ---- 2. array job + afterok join
mkdir -p "$work/smoke"
array=$("$slurm/submit_stage.sh" --name smoke-array --array 4 --log-dir "$work/logs" \
  "$slurm/run.sbatch" bash -c "echo task \$SLURM_ARRAY_TASK_ID of \$SLURM_ARRAY_TASK_COUNT > $work/smoke/part-\$SLURM_ARRAY_TASK_ID")
join=$("$slurm/submit_stage.sh" --name smoke-join --after "$array" --log-dir "$work/logs" --jobid-file "$work/join.id" \
  "$slurm/run.sbatch" bash -c "cat $work/smoke/part-0 $work/smoke/part-1 $work/smoke/part-2 $work/smoke/part-3 > $work/smoke/joined")
[ "$(cat "$work/join.id")" = "$join" ] || fail "--jobid-file holds '$(cat "$work/join.id")', expected $join"
bad=$("$slurm/submit_stage.sh" --name smoke-fail --log-dir "$work/logs" "$slurm/run.sbatch" false)
never=$("$slurm/submit_stage.sh" --name smoke-never --after "$bad" --log-dir "$work/logs" \
  "$slurm/run.sbatch" touch "$work/smoke/never")
echo "submitted array $array, join $join, failing $bad, dependant $never"
wait_jobs "$array" "$join" "$bad" "$never"
for i in 0 1 2 3; do
  [ "$(cat "$work/smoke/part-$i" 2>/dev/null)" = "task $i of 4" ] || fail "array task $i wrote '$(cat "$work/smoke/part-$i" 2>/dev/null)'"
done
expected=$(printf 'task %d of 4\n' 0 1 2 3)
[ "$(cat "$work/smoke/joined" 2>/dev/null)" = "$expected" ] || fail "joined file is '$(cat "$work/smoke/joined" 2>/dev/null)'"
[ ! -e "$work/smoke/never" ] || fail "a job ran although its afterok dependency failed"
# The failing job has left the queue by now: a dependant submitted after it ended must
# still never run (submit_stage.sh keeps dependencies Slurm remembers, not only queued ones).
late=$("$slurm/submit_stage.sh" --name smoke-late --after "$bad" --log-dir "$work/logs" \
  "$slurm/run.sbatch" touch "$work/smoke/late")
wait_jobs "$late"
[ ! -e "$work/smoke/late" ] || fail "a job ran although its afterok dependency had already failed"
echo "array + afterok join: OK"

# ---- 3. submit_pipeline.sh with recording stand-ins for the tools
bin=$work/bin
mkdir -p "$bin"
for tool in evl_extract evl_cache evl_train_head evl_eval; do
  cat >"$bin/$tool" <<STUB
#!/usr/bin/env bash
# Stand-in for $tool: records its arguments, creates the directory/file it would write.
echo "\$(date +%s.%N) $tool \$*" >> "$work/calls.log"
prev=""
for a in "\$@"; do
  case "\$prev" in --out) mkdir -p "\$a" ;; --scores|--json) touch "\$a" ;; esac
  prev=\$a
done
if [ "$tool" = evl_cache ] && [ "\$1" = merge ]; then mkdir -p "\$2"; fi
if [ "$tool" = evl_train_head ]; then
  for a in "\$@"; do [ "\$prev" = --out ] && touch "\$a/last.pth"; prev=\$a; done
fi
STUB
  chmod +x "$bin/$tool"
done
printf 'v%d.mp4 0\n' 1 2 3 4 5 6 >"$work/train.txt"
printf 'w%d.mp4 0\n' 1 2 >"$work/val.txt"
ids=$("$slurm/submit_pipeline.sh" --work "$work/pipe" --shards 4 --val-shards 2 --bin "$bin" \
  --train-list "$work/train.txt" --val-list "$work/val.txt" --root "$work" --backbone "$work/backbone.pt" \
  --train-extract-args "--train-views 2" --train-args "--steps 10")
echo "pipeline: $ids"
# shellcheck disable=SC2046
wait_jobs $(echo "$ids" | tr ' ' '\n' | cut -d= -f2)
calls=$work/calls.log
[ -f "$calls" ] || fail "no tool ran"
for i in 0 1 2 3; do
  grep -q -- "evl_extract .*--list $work/train.txt.*--train-views 2 --shard-index $i --num-shards 4 --out $work/pipe/cache-train-parts/part-0000$i\$" "$calls" \
    || fail "extract task $i of the training list: unexpected arguments; calls: $(cat "$calls")"
done
[ "$(grep -c 'evl_extract .*--list '"$work"'/val.txt.*--num-shards 2 ' "$calls")" = 2 ] || fail "expected 2 val extraction tasks"
grep -q "evl_cache merge $work/pipe/cache-train $work/pipe/cache-train-parts/part-00000 .*part-00003\$" "$calls" || fail "merge of the training parts"
grep -q "evl_cache verify $work/pipe/cache-val\$" "$calls" || fail "verify of the merged val cache"
grep -q "evl_train_head --cache $work/pipe/cache-train --out $work/pipe/run --val-cache $work/pipe/cache-val --steps 10\$" "$calls" || fail "train arguments"
grep -q "evl_eval --cache $work/pipe/cache-val --checkpoint $work/pipe/run/last.pth --scores $work/pipe/scores.h5" "$calls" || fail "eval arguments"
# Dependency order: each list's extract tasks before its merge, both merges before train, train before eval.
line_of() { sort -n "$calls" | grep -n -- "$1" | cut -d: -f1 | sort -n | sed -n "$2"; }
[ "$(line_of 'evl_extract .*train.txt' '$p')" -lt "$(line_of 'evl_cache merge .*cache-train ' '1p')" ] \
  && [ "$(line_of 'evl_extract .*val.txt' '$p')" -lt "$(line_of 'evl_cache merge .*cache-val ' '1p')" ] \
  && [ "$(line_of 'evl_cache verify' '$p')" -lt "$(line_of evl_train_head '1p')" ] \
  && [ "$(line_of evl_train_head '1p')" -lt "$(line_of evl_eval '1p')" ] \
  || fail "stages ran out of dependency order: $(sort -n "$calls")"
grep -q "^train=" "$work/pipe/jobs.env" || fail "jobs.env missing"
echo "submit_pipeline.sh: 4+2 array tasks, 2 merges, train, eval in dependency order: OK"
echo PASS
