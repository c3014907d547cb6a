"""Build hook for the C extensions; everything else is declared in setup.cfg.

``runa.splinter._fastchan`` is the channel fast path (bench/bus.py, "Wake");
``runa.alethia._popcount`` is the memory index's Hamming scan (bench/memory_index.py). Both
are optional: without a C compiler and the Python headers (Debian: build-essential,
python3-dev) the build goes on without them and runa uses the pure paths, which give the same
results.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "runa.splinter._fastchan",
            ["runa/splinter/_fastchan.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=True,
        ),
        Extension(
            "runa.alethia._popcount",
            ["runa/alethia/_popcount.c"],
            extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                "-Wno-missing-field-initializers"],
            optional=True,
        ),
    ],
)
