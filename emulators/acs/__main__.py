"""``python -m emulators.acs``: serve the ACS emulator; ``python -m emulators.acs call "question"``:
place one call through a running emulator and print its transcript and latencies.

The server is Werkzeug's threaded WSGI server over HTTPS (the SDK speaks only TLS), one process:
every call's state and threads live in it. SIGTERM stops it cleanly.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

import httpx
from werkzeug.serving import make_server

from emulators.acs.app import create_app, emulator
from emulators.acs.tls import ensure_certificate
from settings import Settings, configure_logging, settings_or_exit

log = logging.getLogger("conduit.emulators.acs")
# A call with a few questions takes tens of seconds in real time.
CALL_TIMEOUT_SECS = 300.0


def _stop(signum: int, _frame: object) -> None:
    raise SystemExit(0)


def serve(settings: Settings) -> None:
    cert, key = ensure_certificate(Path(settings.acs_emulator_dir))
    app = create_app(settings)
    if settings.log_level != "DEBUG":
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = make_server(
        settings.acs_emulator_host,
        settings.acs_emulator_port,
        app,
        threaded=True,
        ssl_context=(str(cert), str(key)),
    )
    signal.signal(signal.SIGTERM, _stop)
    log.info(
        "ACS emulator serving %s (certificate %s, audience %s)",
        settings.acs_emulator_url,
        cert,
        app.extensions["acs_emulator"].issuer.audience,
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with app.app_context():
            emulator().network.close()


def conduit_incoming_url(settings: Settings) -> str:
    """Where a call rings unless told otherwise: ACS_EMULATOR_TARGET_URL, else the local web
    app's Event Grid route."""
    return (
        settings.acs_emulator_target_url
        or f"http://{settings.web_host}:{settings.web_port}/api/v1/calls/incoming"
    )


def place_call(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    """POST /_emulator/acs/calls with ``wait``; the finished call's summary."""
    body = {"target_url": conduit_incoming_url(settings), **{k: v for k, v in body.items() if v}}
    cert, _ = ensure_certificate(Path(settings.acs_emulator_dir))
    response = httpx.post(
        f"{settings.acs_emulator_url}/_emulator/acs/calls",
        json={**body, "wait": True},
        verify=ssl.create_default_context(cafile=str(cert)),
        timeout=CALL_TIMEOUT_SECS + 30,
    )
    if response.status_code >= 300:
        raise SystemExit(f"the emulator refused the call: {response.text}")
    return response.json()


def format_call(summary: dict[str, Any]) -> str:
    lines = [
        f"call {summary['call_id']}: {summary['state']}, answered in "
        f"{summary['answer_to_media_ms']} ms (ring → media socket open)"
    ]
    report = summary.get("report") or {}
    for turn in report.get("turns", []):
        lines.append(f"  caller: {turn['said']!r} (heard as {turn['caller_heard_as']!r})")
        lines.append(
            f"  agent:  {turn['agent_said']!r} ({turn['reply_audio_s']} s of audio, first after "
            f"{turn['eou_to_first_audio_ms']} ms)"
        )
    if report.get("barge_in_to_stop_audio_ms"):
        lines.append(f"  barge-in → StopAudio: {report['barge_in_to_stop_audio_ms']} ms")
    for error in [summary.get("error"), *report.get("errors", [])]:
        if error:
            lines.append(f"  error: {error}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emulators.acs", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    call = commands.add_parser("call", help="place one call through a running emulator")
    call.add_argument("utterances", nargs="+", help="what the caller says, one phrase each")
    call.add_argument("--barge-in", help="said while the agent answers the first phrase")
    call.add_argument("--dtmf", default="", help="digits pressed after the last phrase")
    call.add_argument("--target-url", help="Conduit's Event Grid route (default: the setting)")
    call.add_argument("--json", action="store_true", help="print the whole call summary")
    args = parser.parse_args(argv)
    # A wrong setting ends it with one line, as every entry point does.
    settings = settings_or_exit("emulators.acs")
    configure_logging(settings)
    if args.command != "call":
        serve(settings)
        return 0
    summary = place_call(
        settings,
        {
            "utterances": args.utterances,
            "barge_in": args.barge_in,
            "dtmf": args.dtmf,
            "target_url": args.target_url,
        },
    )
    print(json.dumps(summary, indent=2) if args.json else format_call(summary))
    return 0 if summary["state"] == "disconnected" and not summary.get("error") else 1


if __name__ == "__main__":
    sys.exit(main())
