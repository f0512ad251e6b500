"""docker-compose.yml is valid Compose, in both its default and its dev profile.

Needs only the docker client (no engine): `docker compose config` parses, interpolates and
validates offline. The Compose v1 `docker-compose` client is used when the v2 plugin is missing.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.processes import REPO_ROOT

PROD_SERVICES = {"redis", "web", "worker", "bridge", "flower"}
DEV_SERVICES = {"emulators", "azurite", "servicebus-emulator"}


def compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy:
        return [legacy]
    if docker:
        pytest.fail(
            "docker is installed but has no compose plugin; install docker-compose "
            "(make test does) or the compose v2 plugin"
        )
    pytest.skip("no docker client on this machine")


def compose(*args: str) -> str:
    result = subprocess.run(
        [*compose_command(), "-f", str(REPO_ROOT / "docker-compose.yml"), *args],
        cwd=REPO_ROOT,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "ENV_FILE": ".env.example"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_compose_file_is_valid() -> None:
    rendered = compose("config")
    assert "appendonly" in rendered
    assert "replicas: 2" in rendered


def test_default_services_include_the_production_set() -> None:
    # Compose v1 lists profiled services here too, so only the production set is asserted.
    assert set(compose("config", "--services").split()) >= PROD_SERVICES


def test_dev_profile_adds_the_local_stand_ins() -> None:
    services = set(compose("--profile", "dev", "config", "--services").split())
    assert services >= PROD_SERVICES | DEV_SERVICES
