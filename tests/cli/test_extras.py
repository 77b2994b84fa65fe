"""A missing optional package names the ``pip install 'tsmeter[extra]'`` to run, in one line.

Every optional package is installed in the test environment (the dev setup installs every
extra), and the test process has already imported most of them, so a package cannot be made
missing in this process without tampering with its module cache. Each case therefore runs
``tsmeter`` in a fresh interpreter with a ``sitecustomize`` on PYTHONPATH that makes importing
the package fail exactly as an absent one does (``ModuleNotFoundError`` with its name): the
only way to see a real missing module here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tsmeter.extras import EXTRAS

_SHIM = """
import sys

class _Absent:
    '''Import finder that makes the packages named in TSMETER_TEST_ABSENT missing.'''

    absent = set(__import__("os").environ["TSMETER_TEST_ABSENT"].split(","))

    def find_spec(self, name, path=None, target=None):
        if name.split(".", 1)[0] in self.absent:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, _Absent())
"""


def run_without(
    tmp_path: Path, absent: str, argv: list[str], **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m tsmeter ARGV`` in ``tmp_path`` with the package ``absent`` missing."""
    shim = tmp_path / "shim"
    shim.mkdir(exist_ok=True)
    (shim / "sitecustomize.py").write_text(_SHIM, encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TSMETER_")}
    environ = {**clean, "PYTHONPATH": str(shim), "TSMETER_TEST_ABSENT": absent,
               "XDG_DATA_HOME": str(tmp_path / "xdg"), **env}  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "tsmeter", *argv],
        cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


CASES = {
    "influxdb": ("requests", ["--store", "influxdb://127.0.0.1:9/metering", "metric", "list"], {}),
    "posthog": ("posthog", ["--store", "u.db", "--create", "metric", "list"],
                {"TSMETER_POSTHOG_API_KEY": "phc_test", "TSMETER_POSTHOG_HOST": "http://127.0.0.1:9"}),
    "scheduler": ("apscheduler", ["--store", "u.db", "--create", "scheduler", "run"], {}),
    "postgres": ("psycopg",
                 ["--store", "influxdb://127.0.0.1:9/m?state=postgresql://u@127.0.0.1:9/s",
                  "metric", "list"], {}),
}  # fmt: skip


@pytest.mark.parametrize("extra", sorted(CASES))
def test_a_missing_package_names_the_extra(tmp_path: Path, extra: str) -> None:
    """The command fails with one Error line naming the package and the install; status 1."""
    module, argv, env = CASES[extra]
    done = run_without(tmp_path, module, argv, **env)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"Error: {EXTRAS[extra].feature} needs the package {module!r} (not installed): "
        f"pip install 'tsmeter[{extra}]'"
    ]


def test_the_shim_blocks_only_what_it_names(tmp_path: Path) -> None:
    """Control: with an unrelated package blocked, the same InfluxDB command gets past the
    import and fails on the unreachable server instead (status 5), so the cases above see
    the missing package, not a broken environment."""
    done = run_without(
        tmp_path, "nothing_such", ["--store", "influxdb://127.0.0.1:9/metering", "influx", "init"],
        TSMETER_OUTBOX="off",
    )  # fmt: skip
    assert "needs the package" not in done.stderr
    assert done.returncode == 5, done.stderr


def test_require_report_names_matplotlib(tmp_path: Path) -> None:
    """``require("report")`` (the report command's check) names matplotlib and its extra."""
    shim_run = run_without(tmp_path, "matplotlib", ["--help"])
    assert shim_run.returncode == 0  # help needs no optional package
    code = (
        "from tsmeter.extras import require\n"
        "try:\n    require('report')\n"
        "except ImportError as e:\n    print(type(e).__name__, e)"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "shim"), "TSMETER_TEST_ABSENT": "matplotlib"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env=env,
    )  # fmt: skip
    assert done.stdout.strip() == (
        "MissingExtraError tsmeter report needs the package 'matplotlib' (not installed): "
        "pip install 'tsmeter[report]'"
    ), done.stderr


def test_a_package_two_extras_share_names_the_one_in_use(tmp_path: Path) -> None:
    """requests belongs to the influxdb and the posthog extras: a posthog command names
    posthog (not influxdb, which this store does not use)."""
    done = run_without(
        tmp_path, "requests", ["--store", "u.db", "--create", "posthog", "ping", "--timeout", "1"],
        TSMETER_POSTHOG_API_KEY="phc_test", TSMETER_POSTHOG_HOST="http://127.0.0.1:9",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        "Error: the PostHog integration needs the package 'requests' (not installed): "
        "pip install 'tsmeter[posthog]'"
    ]
