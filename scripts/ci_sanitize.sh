#!/usr/bin/env bash
# The sanitizer stage of CI (`make sanitize`): builds test executables with
# AddressSanitizer (leak checks included) + UndefinedBehaviorSanitizer at -O1 -g
# in their own build directory and runs each one; a failing test or any sanitizer
# report, from the test or from a tool it runs, fails the stage. LibTorch itself
# is not instrumented: evl's code, the tools and the tests are.
#   scripts/ci_sanitize.sh [test-executable...]   (default: see below)
#   ASAN_BUILD_DIR  build directory (default: build-asan)
#   JOBS            parallel compile jobs (default: nproc)
#   CMAKE_FLAGS     extra CMake flags (e.g. -DEVL_SHARED_DIR=...)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${ASAN_BUILD_DIR:-build-asan}
jobs=${JOBS:-$(nproc)}

# shellcheck disable=SC2086  # CMAKE_FLAGS is a list of flags
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DEVL_SANITIZE_ADDRESS=ON -DEVL_SANITIZE_UNDEFINED=ON ${CMAKE_FLAGS:-} >/dev/null

# Default: every unit-labelled test executable (CMake lists them in unit_tests.txt)
# and the LibTorch-free evl_ensemble_tool_test. The other integration executables
# (evl_tools_test, evl_evaluate_test, evl_extract_pipeline_test,
# evl_extract_video_real_test, train_online_dataset_test) run clean too, but need
# every tool built under the sanitizers (~+10 min on 2 cores): name them to run them.
if [ $# -gt 0 ]; then
  tests=("$@")
else
  mapfile -t tests <"$build/unit_tests.txt"
  tests+=(evl_ensemble_tool_test)
fi
cmake --build "$build" -j "$jobs" --target "${tests[@]}"

# A sanitizer error exits with 86, a status no test expects of a tool, and ASan's
# reports (leaks included) also go to files (<test>.asan.<pid>): an error in a tool
# that a test runs fails the stage even where the test captures the tool's stderr.
# (UBSan reports go to stderr only: GCC 12's libubsan ignores log_path next to ASan.)
reports=$PWD/$build/sanitizer-reports
rm -rf "$reports" && mkdir -p "$reports"
asan_options=${ASAN_OPTIONS:-detect_leaks=1}:exitcode=86
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}:exitcode=86
export OMP_WAIT_POLICY=PASSIVE EVL_PROGRESS=0  # as CTest runs them (tests/CMakeLists.txt)

failed=()
for t in "${tests[@]}"; do
  start=$SECONDS
  status=passed
  ASAN_OPTIONS=$asan_options:log_path=$reports/$t.asan \
    "$build/bin/$t" --gtest_brief=1 >"$build/$t.log" 2>&1 || status=FAILED
  if compgen -G "$reports/$t.*" >/dev/null; then
    status="FAILED (sanitizer report)"
    cat "$reports/$t".*
  fi
  echo "sanitize: $t $status ($((SECONDS - start)) s)"
  if [ "$status" != passed ]; then
    tail -n 30 "$build/$t.log"
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "sanitize: ${#failed[@]} of ${#tests[@]} failed: ${failed[*]}" >&2
  exit 1
fi
echo "sanitize: all ${#tests[@]} test executables clean under ASan + UBSan"
