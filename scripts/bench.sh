#!/usr/bin/env bash
# The benchmark suite (`make bench`): runs every bench_* executable in
# $BUILD_DIR/bin, keeps each one's output in $BUILD_DIR/bench/<name>.log,
# collects their final `BENCH_JSON {...}` lines into $BUILD_DIR/bench/results.json
# and regenerates docs/PERFORMANCE.md from it (scripts/bench_report.py).
#   BUILD_DIR    build directory (default: build)
#   BENCH_QUICK  1: run each benchmark with --quick (proves the pipeline; figures
#                are not meaningful)
#   BENCH_DOC    where to write the report (default: docs/PERFORMANCE.md)
#   BENCH_TIMEOUT seconds allowed per benchmark (default: 600)
# A benchmark that is not built is reported as "not built"; one that fails or
# times out is reported as such; neither stops the suite. Sizes of the full run
# are chosen so the suite takes well under 15 minutes on 2 idle cores.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
build=${BUILD_DIR:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
bin=$build/bin
out=$build/bench
doc=${BENCH_DOC:-$root/docs/PERFORMANCE.md}
quick=${BENCH_QUICK:-0}
per_bench_timeout=${BENCH_TIMEOUT:-600}
python=/usr/bin/python3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

# The suite, in report order, with the flags of the full run (see each
# benchmark's opening comment); any other bench_* found in bin/ runs after them
# with its defaults.
known=(bench_backbone bench_decode bench_cache bench_extract bench_loader bench_python bench_train
  bench_ensemble bench_distributed)
declare -A full_flags=(
  [bench_backbone]="--batch 8 --threads 2 --iters 3"
  [bench_decode]=""
  [bench_cache]="--records 40 --dir $build/bench/tmp"
  [bench_extract]="--clips 6 --threads 2 --dir $build/bench/tmp"
  [bench_loader]="--records 8 --batch 2 --dir $build/bench/tmp"
  [bench_python]="--records 8 --dir $build/bench/tmp"
  [bench_train]=""
  [bench_ensemble]=""
  [bench_distributed]="--dir $build/bench/tmp"
)

names=("${known[@]}")
if [ -d "$bin" ]; then
  for f in "$bin"/bench_*; do
    [ -x "$f" ] || continue
    n=$(basename "$f")
    [[ " ${known[*]} " == *" $n "* ]] || names+=("$n")
  done
fi

rm -rf "$out/runs" "$out/tmp" "$out/results.json" "$out/loadavg_samples"  # keeps cached models (bench_extract)
mkdir -p "$out/runs" "$out/tmp"
cat /proc/loadavg >"$out/loadavg_start"
date -u +%Y-%m-%dT%H:%M:%SZ >"$out/started"
mode=full
[ "$quick" = 1 ] && mode=quick
echo "bench: $mode mode, ${#names[@]} benchmarks, build $build, load $(cut -d' ' -f1-3 /proc/loadavg)"

suite_start=$(date +%s.%N)
for name in "${names[@]}"; do
  meta=$out/runs/$name.meta
  log=$out/runs/$name.log
  if [ ! -x "$bin/$name" ]; then
    printf 'status=not built\nargs=\nseconds=0\nrc=\n' >"$meta"
    echo "bench: $name: not built"
    continue
  fi
  if [ "$quick" = 1 ]; then
    args="--quick"
  else
    args=${full_flags[$name]:-}
  fi
  echo "bench: $name $args"
  cat /proc/loadavg >>"$out/loadavg_samples"
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086  # args are words on purpose
  timeout --kill-after=10 "$per_bench_timeout" "$bin/$name" $args >"$log" 2>&1
  rc=$?
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    status="timed out after ${per_bench_timeout} s"
  elif [ $rc -ne 0 ]; then
    status="failed (exit $rc)"
  elif ! grep -q '^BENCH_JSON ' "$log"; then
    status="no BENCH_JSON line"
  else
    status=ok
  fi
  printf 'status=%s\nargs=%s\nseconds=%s\nrc=%s\n' "$status" "$args" "$secs" "$rc" >"$meta"
  echo "bench: $name: $status in ${secs} s"
  [ "$status" = ok ] || tail -5 "$log" | sed 's/^/    /'
done
suite_end=$(date +%s.%N)
rm -rf "$out/tmp"
cat /proc/loadavg >"$out/loadavg_end"
awk -v a="$suite_start" -v b="$suite_end" 'BEGIN { printf "%.1f\n", b - a }' >"$out/seconds"

"$python" "$root/scripts/bench_report.py" collect --dir "$out" --mode "$mode" \
  -o "$out/results.json" || exit 1
"$python" "$root/scripts/bench_report.py" render "$out/results.json" -o "$doc" || exit 1
echo "bench: wrote $out/results.json and $doc in $(cat "$out/seconds") s"
