"""Azure AI Speech engines (``azure-cognitiveservices-speech``): what production uses.

- :class:`AzureRecognizer`: continuous recognition from a push stream of 16 kHz PCM16; partials
  from ``recognizing``, finals from ``recognized``. Azure segments on its own silence timeout, set
  here to :data:`SEGMENTATION_SILENCE_MS`; at the end of an utterance (our VAD's decision) we push
  that much silence so the final comes at once, and wait for it at most :data:`FINAL_WAIT_SECS`.
- :class:`AzureSynthesizer`: ``Raw16Khz16BitMonoPcm`` / ``Raw24Khz16BitMonoPcm`` (the call's rate,
  so nothing is resampled), read in chunks as the service streams them.

Credentials (settings/voice.py): ``AZURE_SPEECH_KEY`` with ``AZURE_SPEECH_REGION`` or
``AZURE_SPEECH_ENDPOINT``; without a key, Entra ID (``DefaultAzureCredential``), which needs
``AZURE_SPEECH_RESOURCE_ID`` and a region. When the service cannot be reached, recognition and
synthesis end in the SDK's ``Canceled``; both raise :class:`EngineError` saying so.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

from settings import Settings
from voice.engines.base import ENGINE_SAMPLE_RATE, EngineError

# Azure ends a phrase after this much silence; our VAD has already waited VAD_STOP_SECONDS.
SEGMENTATION_SILENCE_MS = 300
# How long the end of an utterance waits for Azure's final (a round trip, usually ~100-300 ms).
FINAL_WAIT_SECS = 1.5
# Chunks read from the synthesis stream: 100 ms of 24 kHz PCM16.
SYNTHESIS_CHUNK_BYTES = 4800
ENTRA_SPEECH_SCOPE = "https://cognitiveservices.azure.com/.default"
OUTPUT_FORMATS = {16000: "Raw16Khz16BitMonoPcm", 24000: "Raw24Khz16BitMonoPcm"}


def _first_line(text: str | None) -> str:
    """The SDK's error details are several lines (URL, connection id); logs want one."""
    return (text or "no details").strip().splitlines()[0][:300]


def speech_config(settings: Settings) -> Any:
    """The SDK's SpeechConfig from settings; EngineError naming what is missing."""
    import azure.cognitiveservices.speech as speechsdk

    key = settings.speech_key.get_secret_value() if settings.speech_key else None
    if key and settings.speech_endpoint:
        return speechsdk.SpeechConfig(subscription=key, endpoint=settings.speech_endpoint)
    if key and settings.speech_region:
        return speechsdk.SpeechConfig(subscription=key, region=settings.speech_region)
    if key:
        raise EngineError("AZURE_SPEECH_KEY is set but neither AZURE_SPEECH_REGION nor _ENDPOINT")
    if not (settings.speech_resource_id and settings.speech_region):
        raise EngineError(
            "VOICE_ENGINE=azure needs AZURE_SPEECH_KEY with AZURE_SPEECH_REGION (or _ENDPOINT), "
            "or for Entra ID AZURE_SPEECH_RESOURCE_ID with AZURE_SPEECH_REGION"
        )
    from azure.identity import DefaultAzureCredential

    token = DefaultAzureCredential().get_token(ENTRA_SPEECH_SCOPE).token
    return speechsdk.SpeechConfig(
        auth_token=f"aad#{settings.speech_resource_id}#{token}", region=settings.speech_region
    )


class AzureRecognizer:
    """Continuous recognition over a push stream, one per call."""

    def __init__(self, config: Any, language: str) -> None:
        import azure.cognitiveservices.speech as speechsdk

        self._sdk = speechsdk
        config.set_property(
            speechsdk.PropertyId.Speech_SegmentationSilenceTimeoutMs, str(SEGMENTATION_SILENCE_MS)
        )
        stream_format = speechsdk.audio.AudioStreamFormat(
            samples_per_second=ENGINE_SAMPLE_RATE, bits_per_sample=16, channels=1
        )
        self._stream = speechsdk.audio.PushAudioInputStream(stream_format=stream_format)
        self._recognizer = speechsdk.SpeechRecognizer(
            speech_config=config,
            audio_config=speechsdk.audio.AudioConfig(stream=self._stream),
            language=language,
        )
        self._finals: queue.Queue[str] = queue.Queue()
        self._partial: str | None = None
        self._lock = threading.Lock()
        self.error: str | None = None
        self._recognizer.recognizing.connect(self._on_recognizing)
        self._recognizer.recognized.connect(self._on_recognized)
        self._recognizer.canceled.connect(self._on_canceled)
        self._started = False

    def _on_recognizing(self, event: Any) -> None:
        with self._lock:
            self._partial = event.result.text

    def _on_recognized(self, event: Any) -> None:
        if event.result.reason == self._sdk.ResultReason.RecognizedSpeech:
            self._finals.put(event.result.text)

    def _on_canceled(self, event: Any) -> None:
        details = event.cancellation_details
        if details.reason == self._sdk.CancellationReason.Error:
            self.error = f"Azure Speech recognition failed: {_first_line(details.error_details)}"
            self._finals.put("")  # wake a waiting finish_utterance

    def _check(self) -> None:
        if self.error:
            raise EngineError(self.error + " (check AZURE_SPEECH_REGION / _ENDPOINT / _KEY)")

    def start_utterance(self) -> None:
        self._check()
        if not self._started:
            self._recognizer.start_continuous_recognition_async()
            self._started = True
        while not self._finals.empty():  # a late final of the last utterance is not this one's
            self._finals.get_nowait()

    def push(self, pcm: bytes) -> str | None:
        self._check()
        self._stream.write(pcm)
        with self._lock:
            partial, self._partial = self._partial, None
        return partial

    def finish_utterance(self) -> str:
        if not self._started:
            return ""
        self._stream.write(bytes(ENGINE_SAMPLE_RATE * SEGMENTATION_SILENCE_MS // 1000 * 2))
        try:
            text = self._finals.get(timeout=FINAL_WAIT_SECS)
        except queue.Empty:
            text = ""
        self._check()
        return text.strip()

    def close(self) -> None:
        self._stream.close()
        if self._started:
            self._recognizer.stop_continuous_recognition_async()


class AzureSynthesizer:
    """Neural TTS to raw PCM at the call's rate; one SDK synthesizer per rate, made on first use."""

    def __init__(self, config: Any, voice: str) -> None:
        self._config = config
        self._voice = voice
        self._synthesizers: dict[int, Any] = {}

    def _synthesizer(self, sample_rate: int) -> Any:
        import azure.cognitiveservices.speech as speechsdk

        if sample_rate not in OUTPUT_FORMATS:
            raise EngineError(f"Azure Speech cannot synthesise raw PCM at {sample_rate} Hz")
        if sample_rate not in self._synthesizers:
            self._config.speech_synthesis_voice_name = self._voice
            self._config.set_speech_synthesis_output_format(
                getattr(speechsdk.SpeechSynthesisOutputFormat, OUTPUT_FORMATS[sample_rate])
            )
            self._synthesizers[sample_rate] = speechsdk.SpeechSynthesizer(
                speech_config=self._config, audio_config=None
            )
        return self._synthesizers[sample_rate]

    def synthesize(self, text: str, sample_rate: int) -> Iterator[bytes]:
        import azure.cognitiveservices.speech as speechsdk

        if not text.strip():
            return
        result = self._synthesizer(sample_rate).start_speaking_text_async(text).get()
        if result.reason == speechsdk.ResultReason.Canceled:
            details = result.cancellation_details
            raise EngineError(
                f"Azure Speech synthesis failed: {_first_line(details.error_details)} "
                "(check AZURE_SPEECH_REGION / _ENDPOINT / _KEY / _VOICE)"
            )
        stream = speechsdk.AudioDataStream(result)
        buffer = bytes(SYNTHESIS_CHUNK_BYTES)
        while True:
            filled = stream.read_data(buffer)
            if filled == 0:
                break
            yield buffer[:filled]
        if stream.status == speechsdk.StreamStatus.Canceled:
            details = stream.cancellation_details
            raise EngineError(
                f"Azure Speech synthesis failed: {_first_line(details.error_details)} "
                "(check AZURE_SPEECH_REGION / _ENDPOINT / _KEY / _VOICE)"
            )

    def close(self) -> None:
        self._synthesizers.clear()
