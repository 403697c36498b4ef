"""Builds the C++ CPU kernels; everything else about the package is in pyproject.toml.

`model_service/cpu_kernels.cc` holds XLA FFI handlers and is the extension module
`model_service._cpu_kernels`, which hands them to `model_service.cpu_kernels`. It
compiles against the FFI headers that jaxlib ships.
"""

import platform
from importlib.util import find_spec
from pathlib import Path

from setuptools import Extension, setup

JAXLIB_INCLUDE = Path(find_spec("jaxlib").submodule_search_locations[0]) / "include"
# x86-64 CPUs from 2013 on (Haswell, Zen) have AVX2, FMA and F16C; elsewhere the
# kernel's portable vector code is compiled for the target's own vector unit.
X86_64 = platform.machine() in ("x86_64", "AMD64")
VECTOR_FLAGS = ["-mavx2", "-mfma", "-mf16c"] if X86_64 else []

setup(
    ext_modules=[
        Extension(
            "model_service._cpu_kernels",
            sources=["model_service/cpu_kernels.cc"],
            include_dirs=[str(JAXLIB_INCLUDE)],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", *VECTOR_FLAGS],
        )
    ]
)
