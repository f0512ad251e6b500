"""VoiceConfiguration: aliases, voice per language, from a settings file, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from settings import get_settings
from voice.voices import VoiceConfigError, VoiceConfiguration


def test_built_in_aliases_and_languages() -> None:
    voices = VoiceConfiguration()
    support = voices.get_voice_alias("support_contact_center")
    assert (support.neural_voice, support.style) == ("en-US-JennyNeural", "customerservice")
    assert voices.get_voice_for_language("es-ES").neural_voice == "es-ES-ElviraNeural"
    assert voices.get_voice_for_language("fr").neural_voice == "fr-FR-DeniseNeural"
    assert voices.get_voice_for_language("ja-JP") == voices.get_voice_alias()
    with pytest.raises(VoiceConfigError, match="no voice alias 'nope'"):
        voices.get_voice_alias("nope")


def test_from_the_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "voices.json"
    path.write_text(
        json.dumps(
            {
                "default": "bank",
                "aliases": {"bank": {"neural_voice": "en-GB-SoniaNeural", "style": "calm"}},
                "languages": {"it-IT": "it-IT-ElsaNeural", "en-GB": "bank"},
            }
        )
    )
    monkeypatch.setenv("VOICE_CONFIG_FILE", str(path))
    get_settings.cache_clear()
    voices = VoiceConfiguration.from_settings(get_settings())
    assert voices.get_voice_alias().neural_voice == "en-GB-SoniaNeural"
    assert voices.get_voice_for_language("en-GB").style == "calm"
    italian = voices.get_voice_for_language("it-IT")
    assert (italian.neural_voice, italian.local_voice, italian.language) == (
        "it-IT-ElsaNeural",
        "it",
        "it-IT",
    )
    # The built-ins stay unless replaced.
    assert voices.get_voice_alias("sales").neural_voice == "en-US-AriaNeural"


def test_bad_files_name_the_entry(tmp_path: Path) -> None:
    path = tmp_path / "voices.json"
    path.write_text(json.dumps({"aliases": {"x": {"style": "calm"}}}))
    with pytest.raises(VoiceConfigError, match=r"aliases\.x\.neural_voice is required"):
        VoiceConfiguration.from_file(path)
    path.write_text(json.dumps({"aliases": {"x": {"neural_voice": "v", "pitch": 2}}}))
    with pytest.raises(VoiceConfigError, match="unknown"):
        VoiceConfiguration.from_file(path)
    path.write_text("{")
    with pytest.raises(VoiceConfigError, match="not JSON"):
        VoiceConfiguration.from_file(path)
    with pytest.raises(VoiceConfigError, match="VOICE_CONFIG_FILE"):
        VoiceConfiguration.from_file(tmp_path / "missing.json")


def test_voice_live_takes_an_alias_or_a_voice(monkeypatch: pytest.MonkeyPatch) -> None:
    from voice.voice_live import session_update

    monkeypatch.setenv("AZURE_VOICE_LIVE_VOICE", "empathetic")
    get_settings.cache_clear()
    assert session_update(get_settings(), 16000)["session"]["voice"]["name"] == "en-US-SaraNeural"
    monkeypatch.setenv("AZURE_VOICE_LIVE_VOICE", "en-GB-RyanNeural")
    get_settings.cache_clear()
    assert session_update(get_settings(), 24000)["session"]["voice"]["name"] == "en-GB-RyanNeural"
