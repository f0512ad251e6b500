"""``make run``'s phone call: after the sample workload, the ACS emulator rings Conduit once.

The emulator (the ``acs`` Procfile process) sends an Event Grid IncomingCall to the web app,
which answers it with the real Call Automation SDK; the emulator then opens the media socket,
asks a question in espeak-ng speech, listens to the agent's spoken answer, hangs up, and reports.
This prints that report: both sides' words as the local recogniser heard them and the latencies.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from emulators.acs.__main__ import format_call, place_call
from settings import Settings

DEMO_QUESTION = "what is the weather today"
# The emulator starts with the stack; on a busy machine its first answer can take a while.
EMULATOR_READY_SECS = 60.0
ANOTHER_CALL = '.venv/bin/python -m emulators.acs call "what is the weather today"'


def _emulator_ready(settings: Settings) -> bool:
    cert = Path(settings.acs_emulator_dir) / "tls-cert.pem"
    deadline = time.monotonic() + EMULATOR_READY_SECS
    while time.monotonic() < deadline:
        try:
            trust = ssl.create_default_context(cafile=str(cert))
            url = f"{settings.acs_emulator_url}/_emulator/acs/health"
            if httpx.get(url, verify=trust, timeout=2).status_code == 200:
                return True
        except (OSError, httpx.HTTPError):
            pass
        time.sleep(0.5)
    return False


def place_demo_call(settings: Settings, say: Callable[[str], None]) -> bool:
    """Place one emulated call and print how it went; False when it did not complete."""
    if not settings.embedded_acs:
        say("Phone call demo skipped: ACS_CONNECTION_STRING points at a real ACS resource.")
        return True
    say(f'\nA phone call through the ACS emulator: the caller asks "{DEMO_QUESTION}"…')
    if not _emulator_ready(settings):
        say("  the ACS emulator did not start; see the stack log (process 'acs').")
        return False
    try:
        summary = place_call(settings, {"utterances": [DEMO_QUESTION]})
    except (SystemExit, httpx.HTTPError) as error:
        say(f"  the call could not be placed: {error}")
        return False
    say(format_call(summary))
    say(f"  Place another: {ANOTHER_CALL}")
    report = summary.get("report") or {}
    return summary["state"] == "disconnected" and not report.get("errors") and not summary["error"]
