"""The engines: the local ones for real; Azure's as far as they go offline (configuration, output
format, and a clean error when the service cannot be reached)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from settings.config import Settings, load_settings
from settings.redis_server import free_port
from tests.support.processes import REPO_ROOT
from voice.engines.base import ENGINE_SAMPLE_RATE, EngineError, FreshEngines, engines_from_settings
from voice.engines.local import LocalRecognizer, LocalSynthesizer, read_phrases

QUESTION = "what is the weather today"


def azure_settings(**values) -> Settings:
    return load_settings(voice_engine="azure", **values)


def unreachable_endpoint() -> str:
    # A loopback port nothing listens on: the SDK's connection is refused at once.
    return f"wss://127.0.0.1:{free_port()}/speech"


def test_azure_configuration_names_what_is_missing() -> None:
    from voice.engines.azure import speech_config

    with pytest.raises(EngineError, match="AZURE_SPEECH_KEY with AZURE_SPEECH_REGION"):
        speech_config(azure_settings())
    with pytest.raises(EngineError, match="neither AZURE_SPEECH_REGION nor _ENDPOINT"):
        speech_config(azure_settings(speech_key=SecretStr("k" * 32)))
    config = speech_config(
        azure_settings(speech_key=SecretStr("k" * 32), speech_region="westeurope")
    )
    assert config.region == "westeurope"


@pytest.mark.parametrize(
    ("rate", "name"), [(16000, "raw-16khz-16bit-mono-pcm"), (24000, "raw-24khz-16bit-mono-pcm")]
)
def test_azure_synthesis_asks_for_raw_pcm_at_the_call_rate(rate: int, name: str) -> None:
    import azure.cognitiveservices.speech as speechsdk

    from voice.engines.azure import AzureSynthesizer, speech_config

    config = speech_config(
        azure_settings(speech_key=SecretStr("k" * 32), speech_endpoint=unreachable_endpoint())
    )
    synthesizer = AzureSynthesizer(config, "en-US-JennyNeural")
    synthesizer._synthesizer(rate)
    assert config.output_format == speechsdk.OutputFormat.Simple  # recognition output untouched
    assert (
        config.get_property(speechsdk.PropertyId.SpeechServiceConnection_SynthOutputFormat) == name
    )
    assert config.speech_synthesis_voice_name == "en-US-JennyNeural"
    with pytest.raises(EngineError, match="cannot synthesise raw PCM at 8000 Hz"):
        synthesizer._synthesizer(8000)


def test_azure_engines_fail_cleanly_when_the_service_is_unreachable() -> None:
    settings = azure_settings(
        speech_key=SecretStr("k" * 32), speech_endpoint=unreachable_endpoint()
    )
    engines = engines_from_settings(settings)
    try:
        with pytest.raises(EngineError, match=r"Azure Speech synthesis failed: .*AZURE_SPEECH"):
            list(engines.synthesizer.synthesize("hello", 16000))
        recognizer = engines.recognizer
        recognizer.start_utterance()
        recognizer.push(bytes(6400))
        with pytest.raises(EngineError, match="Azure Speech recognition failed"):
            recognizer.finish_utterance()
            recognizer.start_utterance()  # the error may land after the wait for a final
    finally:
        engines.close()


def test_local_recognizer_is_exact_with_phrases_and_hears_something_without(tmp_path) -> None:
    phrases_file = tmp_path / "phrases.txt"
    phrases_file.write_text("# demo\nWhat is the weather today?\nhello world\nzzyzzx qq\n")
    phrases = read_phrases(phrases_file)
    assert phrases == [QUESTION, "hello world", "zzyzzx qq"]
    speech = b"".join(LocalSynthesizer().synthesize(QUESTION, 16000))
    grammar = LocalRecognizer(phrases)
    assert grammar.phrases == [QUESTION, "hello world"]  # the unknown words' phrase is skipped
    assert grammar.transcribe(speech) == QUESTION
    open_vocabulary = LocalRecognizer()
    heard = open_vocabulary.transcribe(speech)
    assert heard and heard != QUESTION  # real recognition, imperfect on synthetic speech
    with pytest.raises(EngineError, match="LOCAL_STT_PHRASES_FILE"):
        read_phrases(tmp_path / "missing.txt")


def test_fresh_engines_reuse_released_sets() -> None:
    provider = FreshEngines(load_settings(), max_idle=1)
    first = provider.acquire()
    provider.release(first)
    assert provider.acquire() is first
    second = provider.acquire()
    assert second is not first
    provider.release(first)
    provider.release(second)  # over max_idle: closed, not kept
    provider.close()


def test_the_emulators_and_the_agent_share_one_espeak_in_a_process() -> None:
    """libespeak-ng has one sample callback per process: two drivers replaced each other's, and
    whichever initialised first then rendered silence (the agent heard nothing in a process
    where the emulators' speech had spoken first)."""
    from emulators.speech import synthesize

    before = synthesize(QUESTION, sample_rate=16000)
    ours = b"".join(LocalSynthesizer().synthesize(QUESTION, 16000))
    after = synthesize(QUESTION, sample_rate=16000)
    assert len(before) > 8000 and len(after) > 8000
    assert len(ours) > 16000
    assert LocalRecognizer([QUESTION, "hello world"]).transcribe(ours) == QUESTION


def test_a_new_recognizer_hears_its_first_streamed_utterance() -> None:
    """A fresh pocketsphinx decoder used to hear '' for its first streamed utterance with make
    run's grammar (its feature normalisation starts from the model's defaults), so the agent
    answered no caller on a new engine set."""
    phrases = read_phrases(REPO_ROOT / "emulators" / "phrases.txt")
    silence = bytes(int(0.3 * ENGINE_SAMPLE_RATE) * 2)
    speech = silence + b"".join(LocalSynthesizer().synthesize(QUESTION, 16000)) + silence
    recognizer = LocalRecognizer(phrases)
    recognizer.start_utterance()
    for start in range(0, len(speech), 640):  # 20 ms frames, as ACS sends them
        recognizer.push(speech[start : start + 640])
    assert recognizer.finish_utterance() == QUESTION
