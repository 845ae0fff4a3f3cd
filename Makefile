# The front door (README.md):
#   make demo   set up, build, and run the end-to-end demo on generated data
#   make test   set up, build, and run the test suite (what CI runs)
# Also: make setup | build | bench | format | format-check | sanitize | fuzz | clean.
# BUILD_DIR, JOBS, CMAKE_FLAGS override.
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
BUILD_TYPE ?= Release
CMAKE_FLAGS ?=

# OpenBLAS (pthreads) and LibTorch's OpenMP share the cores: passive waiting
# keeps idle OpenMP workers from spinning against BLAS threads (~30% on 2 cores).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup configure build test test-all demo bench format format-check sanitize fuzz clean

setup:
	@bash scripts/setup.sh

configure: setup
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

# Everything except GPU tests and benchmarks.
test: build
	@cd $(BUILD_DIR) && ctest -LE 'gpu|bench' --output-on-failure -j $(JOBS)

demo: build
	@bash scripts/demo.sh

bench: build
	@bash scripts/bench.sh

format:
	@git ls-files '*.cpp' '*.h' | xargs clang-format -i

# Fails if any tracked C++ file differs from clang-format's output (.clang-format).
format-check:
	@git ls-files '*.cpp' '*.h' | xargs clang-format --dry-run -Werror

# The unit tests under AddressSanitizer + UBSan, in build-asan/ (scripts/ci_sanitize.sh).
sanitize: setup
	@JOBS=$(JOBS) CMAKE_FLAGS="$(CMAKE_FLAGS)" bash scripts/ci_sanitize.sh

# The libFuzzer targets (tests/fuzz/, clang + ASan + UBSan, in build-fuzz/), each
# run FUZZ_SECONDS (default 60) one after another; prints execs and execs/s.
FUZZ_SECONDS ?= 60
fuzz:
	@FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(JOBS) CMAKE_FLAGS="$(CMAKE_FLAGS)" bash scripts/fuzz.sh

clean:
	@rm -rf $(BUILD_DIR)
