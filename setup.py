"""Builds the optional compiled fast paths (src/tsmeter/_speedups.c);
everything else is in pyproject.toml. Without a C compiler the package installs and runs on
its Python code."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tsmeter._speedups",
            ["src/tsmeter/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
