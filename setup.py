"""Builds the optional compiled fast paths of the InfluxDB adapter
(src/tsmeter/adapters/influxdb/_speedups.c); everything else is in pyproject.toml. Without a
C compiler the package installs and runs on its Python code."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tsmeter.adapters.influxdb._speedups",
            ["src/tsmeter/adapters/influxdb/_speedups.c"],
            optional=True,
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
        ),
    ]
)
