#!/usr/bin/env bash
# Installs every Debian package evl needs on a fresh Debian 12 machine, as root,
# idempotently and without questions. Run by `make setup` (and so by `make demo`
# and `make test`); safe to run again: it installs only what is missing.
set -euo pipefail

packages=(
  # toolchain; clang-format (14 on Debian 12) for make format / format-check
  g++ cmake ninja-build pkg-config ccache make git clang-format
  # LibTorch (CPU) and an optimised system BLAS: without libopenblas0-pthread,
  # libtorch's libblas.so.3 is netlib's reference BLAS and fp32 is ~65x slower.
  libtorch-dev libopenblas0-pthread libgloo-dev
  # stage libraries
  libhdf5-dev liblmdb-dev libavformat-dev libavcodec-dev libavutil-dev libswscale-dev
  libtbb-dev libboost-program-options-dev nlohmann-json3-dev libxxhash-dev
  libgtest-dev libgmock-dev
  # tools: ffmpeg CLI (test videos), gnuplot (pictures), lmdb-utils
  ffmpeg gnuplot-nox lmdb-utils
  # Python references for the tests (use /usr/bin/python3)
  python3-torch python3-numpy python3-h5py python3-lmdb python3-xxhash python3-av python3-pil
  # the Python package (python/: pybind11 module; pip install ./python in a venv)
  pybind11-dev python3-pybind11 python3-dev python3-venv python3-setuptools python3-wheel
  # the TensorBoard event test decodes with python3-protobuf from a .proto (protoc)
  python3-protobuf protobuf-compiler
)
# `make fuzz` (scripts/fuzz.sh) only: clang with its libFuzzer and sanitizer
# runtimes. The normal build and its replay of the fuzz corpus need neither.
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-14-dev)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: setup needs root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: all ${#packages[@]} packages present"
fi

# libtorch links libblas.so.3 through the alternatives system: make sure the
# optimised OpenBLAS is the selected one (the reference BLAS is ~65x slower).
blas=$(update-alternatives --query libblas.so.3-x86_64-linux-gnu 2>/dev/null | awk '/^Value:/ {print $2}')
case "$blas" in
  *openblas*) ;;
  *)
    cand=$(update-alternatives --list libblas.so.3-x86_64-linux-gnu | grep openblas-pthread | head -n1)
    if [ -n "$cand" ]; then
      update-alternatives --set libblas.so.3-x86_64-linux-gnu "$cand"
      blas=$cand
    else
      echo "error: OpenBLAS is not available as libblas.so.3; fp32 would be ~65x slower" >&2
      exit 1
    fi
    ;;
esac
echo "setup: system BLAS is $blas"
