"""Builds the optional compiled fast paths, each beside the module that uses it: the InfluxDB
adapter's (src/tsmeter/adapters/influxdb/_speedups.c) and the intake's
(src/tsmeter/metering/_intake.c); everything else is in pyproject.toml. Without a C compiler
the package installs and runs on its Python code."""

from setuptools import Extension, setup

FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]

setup(
    ext_modules=[
        Extension(
            "tsmeter.adapters.influxdb._speedups",
            ["src/tsmeter/adapters/influxdb/_speedups.c"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
        Extension(
            "tsmeter.metering._intake",
            ["src/tsmeter/metering/_intake.c"],
            optional=True,
            extra_compile_args=FLAGS,
        ),
    ]
)
