"""``make run``'s phone call (stack/call_demo.py) against a real web app and the emulators."""

from __future__ import annotations

import subprocess
from urllib.parse import urlparse

import pytest

from settings import get_settings
from stack.call_demo import place_demo_call
from tests.support.acs_emulator import RunningAcsEmulator
from tests.support.calls_web import CallsWebStarter
from tests.support.processes import REPO_ROOT, python_args


@pytest.mark.slow
def test_the_demo_call_is_answered_and_printed(
    start_calls_web: CallsWebStarter,
    calls_acs: RunningAcsEmulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, _ = start_calls_web(AUTH_DISABLED="true")
    for name, value in calls_acs.client_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("WEB_PORT", str(urlparse(url).port))
    get_settings.cache_clear()
    lines: list[str] = []
    assert place_demo_call(get_settings(), lines.append), lines
    printed = "\n".join(lines)
    assert "answered in" in printed and "caller: 'what is the weather today'" in printed
    assert "agent:" in printed and "first after" in printed
    assert "python -m emulators.acs call" in printed


@pytest.mark.slow
def test_the_call_command_places_another_call(
    start_calls_web: CallsWebStarter, calls_acs: RunningAcsEmulator, conduit_env: dict[str, str]
) -> None:
    url, _ = start_calls_web(AUTH_DISABLED="true")
    env = {**conduit_env, **calls_acs.client_env(), "WEB_PORT": str(urlparse(url).port)}
    done = subprocess.run(
        python_args("-m", "emulators.acs", "call", "hello world", "--dtmf", "1"),
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,  # the assertion shows the output
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "caller: 'hello world' (heard as 'Hello world.')" in done.stdout
    assert ": disconnected, answered in" in done.stdout
