"""``python -m bridge``: the bridge itself, and tools that work on Service Bus or the local bus.

python -m bridge                         run the bridge (the Procfile's ``bridge`` process)
python -m bridge send QUEUE FILE|-       send the JSON in FILE (``-``: stdin) as one message;
                                         --lines: one message per line
python -m bridge peek QUEUE              browse messages without taking them (JSON lines)
python -m bridge dlq QUEUE               list dead letters with their reasons (JSON lines)
python -m bridge dlq QUEUE --resubmit    move dead letters back to the queue
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from bridge.bus import Bus, OutgoingMessage, ReceivedMessage, connect_bus
from bridge.errors import BridgeError
from settings import SettingsError, get_settings

DEFAULT_MAX = 100


def _property(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--property {text!r} must look like KEY=VALUE")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge", description="Service Bus <-> Celery bridge and its tools."
    )
    commands = parser.add_subparsers(dest="command")

    send = commands.add_parser("send", help="send JSON message(s) to a queue")
    send.add_argument("queue")
    send.add_argument("file", help="a file with the message body, or - for stdin")
    send.add_argument("--lines", action="store_true", help="one message per non-empty line")
    send.add_argument("--message-id", help="the message id (default: a new uuid per message)")
    send.add_argument(
        "--property",
        action="append",
        type=_property,
        default=[],
        metavar="KEY=VALUE",
        help="an application property (repeatable)",
    )

    peek = commands.add_parser("peek", help="browse a queue's messages without taking them")
    peek.add_argument("queue")
    peek.add_argument("--max", type=int, default=DEFAULT_MAX)

    dlq = commands.add_parser("dlq", help="list a queue's dead letters, or resubmit them")
    dlq.add_argument("queue")
    dlq.add_argument("--max", type=int, default=DEFAULT_MAX)
    dlq.add_argument("--resubmit", action="store_true", help="move them back to the queue")
    return parser


def _as_json(message: ReceivedMessage) -> str:
    shown = {
        "sequence_number": message.sequence_number,
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "delivery_count": message.delivery_count,
        "enqueued_time": message.enqueued_time.isoformat() if message.enqueued_time else None,
        "application_properties": dict(message.application_properties),
        "body": message.body,
    }
    if message.dead_letter_reason is not None:
        shown["dead_letter_reason"] = message.dead_letter_reason
        shown["dead_letter_description"] = message.dead_letter_description
    return json.dumps(shown, ensure_ascii=False)


def send(bus: Bus, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    bodies = [line for line in text.splitlines() if line.strip()] if args.lines else [text]
    if args.message_id and len(bodies) > 1:
        sys.exit("--message-id names one message; leave it out with --lines")
    messages = [
        OutgoingMessage(
            body=body,
            message_id=args.message_id or str(uuid.uuid4()),
            application_properties=dict(args.property),
        )
        for body in bodies
    ]
    bus.send(args.queue, messages)
    for message in messages:
        print(message.message_id)
    print(f"sent {len(messages)} message(s) to {args.queue}", file=sys.stderr)
    return 0


def show(messages: Sequence[ReceivedMessage]) -> int:
    for message in messages:
        print(_as_json(message))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
    except SettingsError as error:
        sys.exit(str(error))
    if args.command is None:
        from bridge.runner import run_bridge

        return run_bridge(settings)

    bus = connect_bus(settings)
    try:
        if args.command == "send":
            return send(bus, args)
        if args.command == "peek":
            return show(bus.peek(args.queue, args.max))
        if args.resubmit:
            moved = bus.resubmit_dead_letters(args.queue, args.max)
            print(f"resubmitted {moved} dead letter(s) to {args.queue}", file=sys.stderr)
            return 0
        return show(bus.dead_letters(args.queue, args.max))
    except BridgeError as error:
        sys.exit(f"{args.command} {args.queue}: {error}")
    finally:
        bus.close()
