"""``python -m stack.message_docs``: docs/messages.md, generated from the processors themselves.

Each processor's input fields, types, required-ness, defaults and limits come from its pydantic
input model (``Processor.input_model``); its description from its module's docstring; its example
from ``stack/samples/<processor>.jsonl``; the failure payload from the function that builds it;
the routes and size limits from the settings' defaults. So the page cannot drift from the code:
``--check`` (the test suite runs it) fails when the committed page differs from what the code
generates now.

    python -m stack.message_docs           # rewrite docs/messages.md
    python -m stack.message_docs --check   # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from settings import Route, Settings
from tasks.audio_files import MAX_UPLOAD_BYTES, SUPPORTED_EXTENSIONS
from tasks.errors import PermanentError
from tasks.processors import PROCESSORS, Processor
from tasks.processors.base import failure_payload
from tasks.processors.feedback import FeedbackAnalysis

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = REPO_ROOT / "docs" / "messages.md"
SAMPLES = Path(__file__).parent / "samples"
# Result fields beyond {id, taskId, message} that a processor declares as a model.
RESULT_MODELS: dict[str, type[BaseModel]] = {"feedback": FeedbackAnalysis}


def audio_limits(max_message_bytes: int) -> list[str]:
    """The transcribe processor's limits, from the constants its code checks."""
    return [
        f"- Audio: at most {MAX_UPLOAD_BYTES // 2**20} MiB, one of "
        f"{', '.join(SUPPORTED_EXTENSIONS)} (checked by content, not only by name).",
        f"- `audio_base64` travels inside the message, so the whole message must stay under "
        f"{max_message_bytes:,} bytes: under {max_message_bytes * 3 // 4 // 1000:,} KB of audio "
        "before base64. Longer recordings go by `audio_url` or `audio_path`.",
        "- `audio_path` must lie inside `AUDIO_LOCAL_ROOT` (unset: refused); `audio_url` must be "
        "a blob URL with a SAS token, or in the account of `AZURE_STORAGE_ACCOUNT_URL` / "
        "`AZURE_STORAGE_CONNECTION_STRING`.",
    ]


# Limits a processor's code checks beyond its input model, by processor name.
PROCESSOR_LIMITS = {"transcribe": audio_limits}


def default_settings_value(name: str) -> Any:
    """A setting's default, not this machine's environment: the page is the same everywhere."""
    field = Settings.model_fields[name]
    return field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]


def type_text(schema: dict[str, Any]) -> str:
    """A JSON schema's type as a short reader's string: ``string | integer``, ``"a" | "b"``."""
    if "enum" in schema:
        return " | ".join(json.dumps(value) for value in schema["enum"])
    if "anyOf" in schema:
        return " | ".join(type_text(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {type_text(schema.get('items', {}))}"
    return str(schema.get("type", "any"))


LIMIT_KEYS = {
    "minLength": "at least {} character(s)",
    "maxLength": "at most {} character(s)",
    "minimum": "≥ {}",
    "maximum": "≤ {}",
    "minItems": "at least {} item(s)",
    "maxItems": "at most {} item(s)",
    "pattern": "matches `{}`",
}


def limits_text(schema: dict[str, Any]) -> str:
    found = [template.format(schema[key]) for key, template in LIMIT_KEYS.items() if key in schema]
    for option in schema.get("anyOf", []):
        found += [
            template.format(option[key]) for key, template in LIMIT_KEYS.items() if key in option
        ]
    return ", ".join(found)


def fields_table(model: type[BaseModel]) -> list[str]:
    schema = model.model_json_schema()
    required = set(schema.get("required", []))
    rows = [
        "| field | type | required | default | limits | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, prop in schema.get("properties", {}).items():
        default = json.dumps(prop["default"]) if "default" in prop else ""
        cells = [
            f"`{name}`",
            type_text(prop).replace("|", "\\|"),
            "yes" if name in required else "no",
            f"`{default}`" if default else "",
            limits_text(prop),
            prop.get("description", ""),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    if (
        schema.get("additionalProperties") is not False
        and model.model_config.get("extra") == "allow"
    ):
        rows.append("| *any other* | any | no | | | kept and passed on |")
    return rows


def sample_lines(processor: str) -> list[str]:
    path = SAMPLES / f"{processor}.jsonl"
    if not path.exists():
        return []
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def processor_section(
    processor: Processor, routes: list[Route], max_message_bytes: int
) -> list[str]:
    module = sys.modules[processor.input_model.__module__]
    lines = [f"## `{processor.name}`", ""]
    lines += [inspect.cleandoc(module.__doc__ or "").strip(), ""]
    using = [route for route in routes if route.processor == processor.name]
    if using:
        shown = ", ".join(f"`{r.in_queue}` → `{r.out_queue}`" for r in using)
        lines += [f"Default routes: {shown}.", ""]
    else:
        lines += [
            f"No default route: add one with `CONDUIT_ROUTES=...,in_queue:{processor.name}:"
            "out_queue`.",
            "",
        ]
    lines += ["### Input", "", *fields_table(processor.input_model), ""]
    limits = PROCESSOR_LIMITS.get(processor.name)
    if limits is not None:
        lines += [*limits(max_message_bytes), ""]
    samples = sample_lines(processor.name)
    if samples:
        sample_path = f"stack/samples/{processor.name}.jsonl"
        lines += [
            f"Example (the first line of `{sample_path}`, {len(samples)} line(s) in all):",
            "",
            "```json",
            json.dumps(json.loads(samples[0]), ensure_ascii=False, indent=2),
            "```",
            "",
        ]
    lines += ["### Result", ""]
    lines += ['On success: the input\'s `id` and `taskId`, `"message": "SUCCESS"`, and:', ""]
    result_model = RESULT_MODELS.get(processor.name)
    if result_model is not None:
        lines += [*fields_table(result_model), ""]
    else:
        lines += ["the fields named in the description above.", ""]
    return lines


def render() -> str:
    routes: list[Route] = default_settings_value("routes")
    max_bytes: int = default_settings_value("bridge_max_message_bytes")
    deliveries: int = default_settings_value("local_bus_max_delivery_count")
    duplicate_window: float = default_settings_value("local_bus_duplicate_window_s")
    failure = failure_payload(
        {"id": "sample-feedback-01", "taskId": None},
        PermanentError("invalid field 'text': String should have at least 1 character"),
    )
    lines = [
        "# Message formats",
        "",
        "<!-- Generated by `python -m stack.message_docs` from the processors' input models, the",
        "     samples and the settings' defaults. Do not edit: change the code and regenerate",
        "     (a test fails while this page is out of date). -->",
        "",
        "Every message is a JSON object in UTF-8, sent to a route's input queue; its result is",
        "one JSON message on the route's output queue, with the input's `id` (and `taskId`)",
        "and the task id as the Service Bus `message_id`. Routes come from `CONDUIT_ROUTES`",
        "(`in_queue:processor:out_queue`, comma-separated).",
        "",
        "## Common rules",
        "",
        f"- **Size**: at most {max_bytes:,} bytes per message, in and out "
        "(`BRIDGE_MAX_MESSAGE_BYTES`; Service Bus standard's 256 KiB). A result over it is "
        "replaced by the failure payload below with error type `ResultTooLarge`.",
        "- **The message id** names the work: a message id sent again is the same work "
        f"(the local bus drops a repeat within {duplicate_window:g} s, as Service Bus duplicate "
        "detection does; a repeat after that is answered from the stored result).",
        "- **Rejected before any work** (dead-lettered, reason shown by "
        "`python -m bridge dlq QUEUE`): a body that is not JSON or not an object "
        "(`MalformedJson`), one that fails the processor's input model (`InvalidFields`, every "
        "field at fault named), a route naming no processor (`UnknownProcessor`).",
        f"- **Retries**: a message whose processing crashes is delivered again, at most "
        f"{deliveries} times on the local bus (`LOCAL_BUS_MAX_DELIVERY_COUNT`; the queue's "
        "max delivery count on Service Bus), then dead-lettered.",
        "- **A failure** (the input was valid but the work failed for good: a permanent "
        "upstream error, retries used up, a file that cannot be read) is one result with "
        '`"message": "failed"`:',
        "",
        "```json",
        json.dumps(failure, indent=2),
        "```",
        "",
        "## Sending the samples",
        "",
        "With `make run` up, each file in `stack/samples/` is sendable as it is, one message per",
        "line (their ids are fixed, so sending a file twice is answered once):",
        "",
        "```sh",
    ]
    for processor in sorted(PROCESSORS.values(), key=lambda p: p.name):
        route = next((r for r in routes if r.processor == processor.name), None)
        if route and sample_lines(processor.name):
            lines.append(
                f"python -m bridge send {route.in_queue} stack/samples/{processor.name}.jsonl "
                "--lines"
            )
    lines += [
        "```",
        "",
        "The terminal running `make run` prints every result, labelled `not from this run` when it",
        "is not from the sample workload, and takes it off the queue. To keep results for",
        "`python -m bridge peek form_oq` (or your own consumer), start the stack with",
        "`make run RUN_ARGS=--no-consume` (`python -m stack --no-consume`): it then only browses.",
        "",
    ]
    for processor in sorted(PROCESSORS.values(), key=lambda p: p.name):
        lines += processor_section(processor, routes, max_bytes)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.message_docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the page is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC_PATH.read_text(encoding="utf-8") if DOC_PATH.exists() else ""
        if current != text:
            print(
                f"{DOC_PATH.relative_to(REPO_ROOT)} is out of date: run python -m "
                "stack.message_docs",
                file=sys.stderr,
            )
            return 1
        return 0
    DOC_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DOC_PATH.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
