"""The sample workload: feedback forms in several languages and two spoken clips, one long
enough to be split into chunks, sent through the bus exactly as a producing service would.

The clips are synthesised at run time with espeak-ng (emulators/speech.py), so nothing binary is
committed, and the emulator's recogniser can hear what was said.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bridge.bus import Bus, OutgoingMessage
from settings import Route, Settings

SAMPLES = Path(__file__).parent / "samples"
APP_ID = "sample-workload"
SHORT_CLIP = "what is the weather today"
# About forty seconds of speech: longer than the chunk limit `make run` sets, so it is split.
LONG_CLIP = ". ".join(
    [
        "thank you for calling the support line",
        "my order arrived late and the box was damaged",
        "i would like a replacement or a refund please",
        "the tracking number did not work for three days",
        "please call me back tomorrow morning",
    ]
    * 3
)


@dataclass(frozen=True)
class SampleMessage:
    """One input message, where it goes, and how progress lines name it."""

    route: Route
    message_id: str
    body: dict
    label: str


def route_for(settings: Settings, processor: str) -> Route:
    for route in settings.routes:
        if route.processor == processor:
            return route
    raise LookupError(
        f"no route uses the {processor!r} processor: add one to CONDUIT_ROUTES "
        f"(e.g. in_queue:{processor}:out_queue)"
    )


def new_run_id() -> str:
    """A tag making this run's messages new ones. Redis keeps its data between runs, and a
    message id seen before is dropped as a duplicate (or answered from its stored result), as
    Service Bus and the tasks are meant to do; a producer sends new ids for new work."""
    return f"{time.strftime('%H%M%S')}-{secrets.token_hex(4)}"


def feedback_messages(route: Route, run_id: str = "sample") -> list[SampleMessage]:
    lines = (SAMPLES / "feedback.jsonl").read_text(encoding="utf-8").splitlines()
    messages = []
    for number, line in enumerate(filter(None, lines), start=1):
        form = json.loads(line)
        # The file's own ids make each line sendable as it is; a run sends new ones.
        body = {
            **form,
            "id": f"{run_id}-form-{number}",
            "taskId": f"{run_id}-{number}",
            "app_id": APP_ID,
        }
        messages.append(
            SampleMessage(
                route, f"{run_id}-form-{number}", body, f"form {number:>2} ({form['language']})"
            )
        )
    return messages


def audio_messages(route: Route, audio_dir: Path, run_id: str = "sample") -> list[SampleMessage]:
    from emulators.speech import synthesize, wav_bytes

    audio_dir.mkdir(parents=True, exist_ok=True)
    messages = []
    for name, text in (("short", SHORT_CLIP), ("long", LONG_CLIP)):
        path = audio_dir / f"sample-{name}.wav"
        path.write_bytes(wav_bytes(synthesize(text)))
        body = {
            "id": f"{run_id}-audio-{name}",
            "taskId": f"{run_id}-audio-{name}",
            "app_id": APP_ID,
            "audio_path": str(path.resolve()),
            "language": "en",
            "response_format": "verbose_json",
        }
        messages.append(SampleMessage(route, f"{run_id}-audio-{name}", body, f"audio {name}"))
    return messages


def sample_workload(settings: Settings, audio_dir: Path) -> list[SampleMessage]:
    run_id = new_run_id()
    return feedback_messages(route_for(settings, "feedback"), run_id) + audio_messages(
        route_for(settings, "transcribe"), audio_dir, run_id
    )


def send_workload(bus: Bus, messages: Sequence[SampleMessage]) -> None:
    by_queue: dict[str, list[OutgoingMessage]] = {}
    for message in messages:
        outgoing = OutgoingMessage(
            body=json.dumps(message.body, ensure_ascii=False), message_id=message.message_id
        )
        by_queue.setdefault(message.route.in_queue, []).append(outgoing)
    for queue, batch in by_queue.items():
        bus.send(queue, batch)
