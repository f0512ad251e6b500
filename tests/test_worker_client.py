"""Calling tasks from Python: the README's snippet runs from any directory against real workers,
and fails at once, saying what is missing, when the broker or every worker is gone."""

from __future__ import annotations

import re
import subprocess

import pytest

from settings import load_settings
from settings.redis_server import free_port
from tests.support.processes import REPO_ROOT, python_args
from worker import create_celery
from worker.client import NoWorkerError, require_worker


def readme_snippet() -> str:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Calling a task from Python") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, "the README's Python snippet is gone"
    return match.group(1)


@pytest.mark.timeout(60)
def test_no_broker_is_one_clear_error_naming_it() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nothing listens there
    app = create_celery(load_settings(redis_url=url))
    try:
        with pytest.raises(NoWorkerError) as raised:
            require_worker(app)
    finally:
        app.close()
    message = str(raised.value)
    assert "the broker at redis://" in message and "does not answer" in message
    assert "hunter2" not in message  # kombu masks the password
    assert "make run" in message


@pytest.mark.timeout(60)
def test_no_worker_is_one_clear_error(celery_app) -> None:
    with pytest.raises(NoWorkerError, match="no Celery worker answered a ping on redis://"):
        require_worker(celery_app)


@pytest.mark.slow
def test_the_readme_snippet_runs_from_another_directory(
    start_worker, start_emulator, conduit_env, tmp_path
) -> None:
    emulator = start_emulator()
    start_worker(concurrency=2, **emulator.client_env())
    finished = subprocess.run(
        python_args("-c", readme_snippet()),
        # Another directory, with Conduit importable as `make .venv`'s editable install makes it.
        env={**conduit_env, **emulator.client_env(), "PYTHONPATH": str(REPO_ROOT)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "'pong': True" in finished.stdout


def test_the_readme_snippet_fails_fast_with_the_line_when_nothing_answers(
    conduit_env, tmp_path
) -> None:
    finished = subprocess.run(
        python_args("-c", readme_snippet()),
        env={**conduit_env, "PYTHONPATH": str(REPO_ROOT)},  # Redis up, no worker
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode != 0
    assert "NoWorkerError: no Celery worker answered a ping" in finished.stderr
