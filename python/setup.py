"""pip install ./python: builds the extension evl._evl with evl's own CMake
build (of the repository this folder is part of) and installs the package evl.

Offline: it needs nothing beyond the Debian packages of scripts/setup.sh
(setuptools, cmake, ninja, pybind11-dev and evl's build dependencies); make a
virtual environment with `/usr/bin/python3 -m venv --system-site-packages`
so that Debian's setuptools, numpy and torch are visible in it.

Environment variables:
  EVL_BUILD_DIR  an evl CMake build directory to build the target in; an
                 existing one (CMakeCache.txt present) is used as configured,
                 so an already-built tree costs only the extension's link.
                 Default: a fresh configuration under setuptools' build_temp.
  EVL_BUILD_JOBS parallel compile jobs (default: CMake's / Ninja's choice).
"""
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def version():
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(evl VERSION ([0-9.]+)", f.read()).group(1)


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        build_dir = os.environ.get("EVL_BUILD_DIR") or os.path.join(
            os.path.abspath(self.build_temp), "cmake")
        if not os.path.exists(os.path.join(build_dir, "CMakeCache.txt")):
            generator = ["-G", "Ninja"] if shutil.which("ninja") else []
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build_dir, *generator,
                                   "-DCMAKE_BUILD_TYPE=Release", "-DEVL_BUILD_TESTS=OFF",
                                   "-DEVL_BUILD_PYTHON=ON", "-DEVL_USE_PCH=OFF",
                                   f"-DPython_EXECUTABLE={sys.executable}"])
        jobs = os.environ.get("EVL_BUILD_JOBS")
        subprocess.check_call(["cmake", "--build", build_dir, "--target", "evl_python",
                               *(["--parallel", jobs] if jobs else [])])
        built = [f for f in os.listdir(os.path.join(build_dir, "python", "evl"))
                 if f.startswith("_evl") and f.endswith(".so")]
        if len(built) != 1:
            raise RuntimeError(f"evl: expected one _evl*.so in {build_dir}/python/evl, "
                               f"found {built}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(os.path.join(build_dir, "python", "evl", built[0]), target)


setup(
    name="evl",
    version=version(),
    description="Read evl feature caches and score files from Python and PyTorch",
    packages=["evl"],
    ext_modules=[Extension("evl._evl", sources=[])],
    cmdclass={"build_ext": CMakeBuild},
    python_requires=">=3.9",
    install_requires=["numpy"],
    zip_safe=False,
)
