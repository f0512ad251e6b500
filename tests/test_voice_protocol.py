"""The ACS media wire format: every inbound kind, key casing, both rates, and a parser that no
input can make raise (hypothesis)."""

from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from voice import protocol
from voice.frames import (
    AudioIn,
    AudioMetadata,
    Dtmf,
    TranscriptionIn,
    TranscriptionMetadata,
    frame_bytes,
)
from voice.protocol import AcsParser


def test_audio_metadata_at_both_rates() -> None:
    parser = AcsParser()
    for rate, size in ((16000, 640), (24000, 960)):
        frame = parser.parse(protocol.inbound_audio_metadata(rate))
        assert frame == AudioMetadata(sample_rate=rate, length=size)
        assert frame_bytes(rate) == size


def test_audio_data_round_trip_in_acs_camel_case() -> None:
    pcm = bytes(range(256)) * 2 + bytes(128)
    message = {
        "kind": "AudioData",
        "audioData": {
            "timestamp": "2024-11-15T19:16:12.925Z",
            "participantRawID": "8:acs:caller",
            "data": base64.b64encode(pcm).decode(),
            "silent": False,
        },
    }
    frame = AcsParser().parse(json.dumps(message))
    assert frame == AudioIn(
        pcm=pcm, silent=False, timestamp="2024-11-15T19:16:12.925Z", participant="8:acs:caller"
    )


def test_key_casing_as_acs_varies_it() -> None:
    pcm = bytes(640)
    message = {"Kind": "AUDIODATA", "AudioData": {"Data": base64.b64encode(pcm).decode()}}
    frame = AcsParser().parse(json.dumps(message))
    assert isinstance(frame, AudioIn) and frame.pcm == pcm


def test_dtmf_digits_and_tone_names() -> None:
    parser = AcsParser()
    assert parser.parse(protocol.inbound_dtmf("3")) == Dtmf("3")
    assert parser.parse('{"kind":"DtmfData","dtmfData":{"data":"pound"}}') == Dtmf("#")
    assert parser.parse(protocol.inbound_dtmf("Z")) is None
    assert parser.counters.malformed == 1


def test_transcription_kinds() -> None:
    parser = AcsParser()
    meta = parser.parse(
        '{"kind":"TranscriptionMetadata","transcriptionMetadata":{"subscriptionId":"s",'
        '"locale":"en-US","callConnectionId":"c","correlationId":"r"}}'
    )
    assert meta == TranscriptionMetadata("en-US", "c", "s", "r")
    partial = parser.parse(protocol.inbound_transcription("what is", final=False))
    final = parser.parse(protocol.inbound_transcription("what is the weather today", final=True))
    assert isinstance(partial, TranscriptionIn) and not partial.final
    assert isinstance(final, TranscriptionIn) and final.final
    assert [word.text for word in final.words] == "what is the weather today".split()


def test_outbound_messages_are_what_acs_plays_and_stops() -> None:
    pcm = bytes(range(200)) * 3
    played = json.loads(protocol.audio_message(pcm))
    assert played == {
        "Kind": "AudioData",
        "AudioData": {"Data": base64.b64encode(pcm).decode()},
        "StopAudio": None,
    }
    assert json.loads(protocol.stop_audio_message()) == {
        "Kind": "StopAudio",
        "AudioData": None,
        "StopAudio": {},
    }
    assert protocol.outbound_kind(protocol.audio_message(pcm)) == ("AudioData", pcm)
    assert protocol.outbound_kind(protocol.stop_audio_message()) == ("StopAudio", None)


def test_unknown_and_malformed_are_counted_and_logged_once(caplog) -> None:
    parser = AcsParser("call-1")
    bad = [
        "not json",
        "[1, 2]",
        '{"kind": 3}',
        '{"kind":"AudioData","audioData":{"data":"***"}}',
        '{"kind":"AudioData","audioData":{"data":"AAEC"}}',  # 3 bytes: not 16-bit PCM
        '{"kind":"AudioMetadata","audioMetadata":{"sampleRate":8000}}',
        '{"kind":"AudioData","audioData":"nope"}',
    ]
    for message in bad:
        assert parser.parse(message) is None
    for _ in range(5):
        assert parser.parse('{"kind":"Mystery","mystery":{}}') is None
    assert parser.counters.malformed == len(bad)
    assert parser.counters.unknown_kinds == {"Mystery": 5}
    unknown_logs = [r for r in caplog.records if "unknown kind" in r.getMessage()]
    assert len(unknown_logs) == 1


_json = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
_kinds = st.sampled_from(
    ["AudioMetadata", "audiodata", "AudioData", "DtmfData", "TranscriptionData",
     "TranscriptionMetadata", "StopAudio", ""]
)  # fmt: skip
_payload_keys = st.sampled_from(
    ["audioMetadata", "audioData", "dtmfData", "transcriptionData", "transcriptionMetadata"]
)


@settings(max_examples=300, deadline=None)
@given(kind=_kinds, key=_payload_keys, payload=_json)
def test_no_structured_input_raises(kind: str, key: str, payload: object) -> None:
    parser = AcsParser()
    parser.parse(json.dumps({"kind": kind, key: payload}))
    if isinstance(payload, dict):
        parser.parse(json.dumps({"kind": kind, key: {**payload, "data": payload.get("data")}}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.text(max_size=200))
def test_no_raw_input_raises(message: bytes | str) -> None:
    AcsParser().parse(message)
