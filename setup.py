"""Build hook for the one C extension; everything else is declared in setup.cfg.

``runa.splinter._fastchan`` is the channel fast path (bench/bus.py, "Wake"). It is optional:
without a C compiler and the Python headers (Debian: build-essential, python3-dev) the build
goes on without it and runa.splinter uses its pure-Python path, which behaves the same.
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
        )
    ],
)
