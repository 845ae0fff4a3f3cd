#!/usr/bin/env bash
# `make fuzz`: builds the libFuzzer targets (tests/fuzz/) with clang, ASan and
# UBSan in $FUZZ_BUILD_DIR, and runs each one for $FUZZ_SECONDS seconds, one
# at a time, from the checked-in corpus plus freshly generated seeds. New
# inputs go to $FUZZ_BUILD_DIR/corpus/<t>/ (minimise them into tests/fuzz/corpus
# with `fuzz_<t> -merge=1`), findings to $FUZZ_BUILD_DIR/findings/<t>/ (copy a
# crasher, once fixed, to tests/fuzz/crashers/<t>/ so the replay test keeps it).
# Prints execs, execs/s and findings per target; exits 1 if any target found one.
#   FUZZ_SECONDS=60 FUZZ_TARGETS="record manifest" FUZZ_JOBS=2 bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)}         # build parallelism; fuzzing is one process
FUZZ_RSS_MB=${FUZZ_RSS_MB:-2048}
FUZZ_MALLOC_MB=${FUZZ_MALLOC_MB:-1024}  # one allocation above this is a finding
all_targets="record manifest qk_weights pickle safetensors hf_config dataset_list ini scores"
FUZZ_TARGETS=${FUZZ_TARGETS:-$all_targets}

bash scripts/setup.sh --fuzz
cmake -S . -B "$FUZZ_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DEVL_BUILD_FUZZERS=ON \
  -DEVL_BUILD_TESTS=OFF -DEVL_BUILD_PYTHON=OFF -DEVL_USE_PCH=OFF ${CMAKE_FLAGS:-} >/dev/null
cmake --build "$FUZZ_BUILD_DIR" -j "$FUZZ_JOBS" --target evl_fuzzers fuzz_make_seeds

seeds="$FUZZ_BUILD_DIR/seeds"
rm -rf "$seeds"
ASAN_OPTIONS=detect_leaks=0 "$FUZZ_BUILD_DIR/fuzz/fuzz_make_seeds" "$seeds" >/dev/null
/usr/bin/python3 tests/fuzz/make_seeds.py "$seeds" >/dev/null

summary="$FUZZ_BUILD_DIR/fuzz_summary.tsv"
printf 'target\tseconds\texecs\texecs_per_s\tfindings\n' >"$summary"
failed=0
for t in $FUZZ_TARGETS; do
  work="$FUZZ_BUILD_DIR/corpus/$t" findings="$FUZZ_BUILD_DIR/findings/$t"
  rm -rf "$findings"  # this run's findings only (copy keepers to tests/fuzz/crashers/)
  mkdir -p "$work" "$findings" "tests/fuzz/corpus/$t" "$seeds/$t"
  log="$FUZZ_BUILD_DIR/fuzz_$t.log"
  echo "fuzz: $t for ${FUZZ_SECONDS}s (log $log)"
  start=$(date +%s)
  set +e
  "$FUZZ_BUILD_DIR/fuzz/fuzz_$t" "$work" "tests/fuzz/corpus/$t" "$seeds/$t" \
    -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb="$FUZZ_RSS_MB" \
    -malloc_limit_mb="$FUZZ_MALLOC_MB" -max_len=65536 -print_final_stats=1 \
    -artifact_prefix="$findings/" >"$log" 2>&1
  rc=$?
  set -e
  secs=$(( $(date +%s) - start ))
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n1)
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log" | tail -n1)
  found=$(find "$findings" -type f | wc -l)
  if [ "$rc" -ne 0 ] || [ "$found" -ne 0 ]; then
    failed=1
    echo "fuzz: $t FOUND something (exit $rc); see $log and $findings/" >&2
    grep -m3 -E 'ERROR|runtime error|uncaught|SUMMARY' "$log" >&2 || true
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" "$found" >>"$summary"
done
column -t -s $'\t' "$summary"
exit $failed
