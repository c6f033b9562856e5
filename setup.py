"""Build the Cython kernels of ``sketchcore._cpu`` and the launch-trace replayer of
``sketchcore._cuda`` (plain C: no CUDA toolkit needed).

Every ``sketchcore/_cpu/*.pyx`` and ``sketchcore/_cuda/*.pyx`` becomes an extension, so
adding a module needs no edit here. OpenMP flags are chosen per compiler; without OpenMP the kernels build
serially (``prange`` degrades to ``range``).

Environment switches
--------------------
SKETCHCORE_DEBUG=1      boundscheck/wraparound back on, -O0 -g: for chasing a bad index.
SKETCHCORE_PORTABLE=1   no ``-march=native`` (for wheels that travel to other CPUs).
SKETCHCORE_NO_OPENMP=1  serial build even where OpenMP is available.
"""
import os
import sys
import glob
import shutil
import tempfile
import subprocess

import numpy
from setuptools import setup, Extension
from setuptools.command.build_ext import build_ext
from Cython.Build import cythonize

DEBUG = os.environ.get("SKETCHCORE_DEBUG", "0") == "1"
PORTABLE = os.environ.get("SKETCHCORE_PORTABLE", "0") == "1"
NO_OPENMP = os.environ.get("SKETCHCORE_NO_OPENMP", "0") == "1"


def _compiler_accepts(compiler, flags):
    """Compile a trivial OpenMP program with ``flags``; True when it builds and links."""
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as fh:
            fh.write("#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n")
        objs = compiler.compile([src], output_dir=tmp, extra_postargs=flags)
        compiler.link_executable(objs, os.path.join(tmp, "probe"), output_dir=tmp,
                                 extra_postargs=flags)
        return True
    except Exception:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BuildExt(build_ext):
    """Pick optimisation and OpenMP flags for the compiler actually in use."""

    def build_extensions(self):
        ctype = self.compiler.compiler_type
        if ctype == "msvc":
            compile_flags, link_flags = ["/O2"], []
            omp = ["/openmp"]
            omp_link = []
        else:
            compile_flags = ["-O0", "-g"] if DEBUG else ["-O3"]
            # Lets gcc vectorise sqrtf/fmaf in the Philox Gaussian batches (nothing reads errno).
            compile_flags.append("-fno-math-errno")
            if not PORTABLE and not DEBUG:
                compile_flags.append("-march=native")
            link_flags = []
            if sys.platform == "darwin":
                omp, omp_link = ["-Xpreprocessor", "-fopenmp"], ["-lomp"]
            else:
                omp, omp_link = ["-fopenmp"], ["-fopenmp"]
        use_omp = not NO_OPENMP and _compiler_accepts(self.compiler, omp + omp_link)
        if not use_omp:
            print("sketchcore: building without OpenMP (kernels run serially)")
        for ext in self.extensions:
            ext.extra_compile_args = compile_flags + (omp if use_omp else [])
            ext.extra_link_args = link_flags + (omp_link if use_omp else [])
        super().build_extensions()


def _extensions():
    exts = []
    paths = glob.glob(os.path.join("sketchcore", "_cpu", "*.pyx"))
    paths += glob.glob(os.path.join("sketchcore", "_cuda", "*.pyx"))   # no CUDA needed to build
    for path in sorted(paths):
        module = os.path.splitext(path)[0].replace(os.sep, ".")
        exts.append(Extension(
            module, [path],
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        ))
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "embedsignature": True,
    }
    return cythonize(exts, compiler_directives=directives, quiet=True)


setup(ext_modules=_extensions(), cmdclass={"build_ext": BuildExt})
