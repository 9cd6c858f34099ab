"""Builds libqkv with CMake (from the source tree this folder sits in) and
ships it inside the package, so `pip install ./python` gives a working
`import qkv`. QKV_LIBRARY=/path/to/libqkv.so ships that library instead."""
import os
import shutil
import subprocess

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        lib = os.environ.get("QKV_LIBRARY")
        if not lib:
            build = os.path.join(ROOT, "build", "python-lib")
            subprocess.check_call(["cmake", "-S", ROOT, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
                                   "-DQKV_BUILD_TESTS=OFF"])
            subprocess.check_call(["cmake", "--build", build, "--target", "qkv_shared", "-j", "2"])
            lib = os.path.join(build, "libqkv.so")
        shutil.copy2(os.path.realpath(lib), os.path.join(self.build_lib, "qkv", "libqkv.so"))


class BinaryDistribution(Distribution):
    """The wheel carries a compiled library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
