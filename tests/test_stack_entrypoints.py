"""Every way to start a Conduit process reports a wrong setting as one line and a non-zero exit:
the Procfile's commands (what `make run`, honcho and docker-compose run), `make run` itself, and
each console script pyproject.toml declares."""

from __future__ import annotations

import importlib
import shlex
import subprocess
import sys
import tomllib

import pytest

from stack.commands import COMMANDS
from tests.support.processes import REPO_ROOT

# A cold import of celery or gunicorn on a loaded 2-core machine.
EXIT_TIMEOUT_SECS = 120.0
BAD_SETTING = {"APP_TPM_QUOTA": "lots"}
EXPECTED = "APP_TPM_QUOTA='lots' is not valid"


def procfile() -> dict[str, list[str]]:
    lines = (REPO_ROOT / "Procfile").read_text(encoding="utf-8").splitlines()
    return {
        name.strip(): shlex.split(command)
        for name, _, command in (line.partition(":") for line in lines if line.strip())
    }


def console_scripts() -> dict[str, str]:
    with (REPO_ROOT / "pyproject.toml").open("rb") as file:
        return tomllib.load(file)["project"]["scripts"]


def script_args(target: str) -> list[str]:
    """What a console script's wrapper runs, without needing the package installed here."""
    module, _, function = target.partition(":")
    return [
        sys.executable,
        "-c",
        f"import sys; from {module} import {function}; sys.argv[0] = 'x'; sys.exit({function}())",
    ]


def in_venv(args: list[str]) -> list[str]:
    """``celery``/``gunicorn`` from the tests' virtualenv, as stack/run.py puts it on the PATH."""
    if args[0] == "python":
        return [sys.executable, *args[1:]]
    return [str(REPO_ROOT / ".venv" / "bin" / args[0]), *args[1:]]


ENTRY_POINTS = {
    **{f"Procfile {name}": in_venv(args) for name, args in procfile().items()},
    "make run": [sys.executable, "-m", "stack"],
    **{name: script_args(target) for name, target in console_scripts().items()},
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
def test_a_wrong_setting_is_one_line_and_a_failed_exit(name, conduit_env, tmp_path) -> None:
    finished = subprocess.run(
        ENTRY_POINTS[name],
        # Another directory, with the repo on the path as `make .venv`'s editable install puts it.
        env={**conduit_env, **BAD_SETTING, "PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=EXIT_TIMEOUT_SECS,
        check=False,
    )
    output = (finished.stdout + finished.stderr).strip()
    assert finished.returncode != 0, output
    assert len(output.splitlines()) == 1, output
    assert EXPECTED in output
    assert "Traceback" not in output


def test_the_console_scripts_run_the_procfile_commands() -> None:
    """conduit-web and conduit-worker run what the Procfile runs, so the two cannot drift."""
    assert {name: shlex.split(command) for name, command in COMMANDS.items()} == {
        name: procfile()[name] for name in COMMANDS
    }


def test_every_console_script_names_a_function() -> None:
    for name, target in console_scripts().items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
