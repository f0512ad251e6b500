"""Which voice speaks: :class:`VoiceConfiguration` (the older name), aliases and languages.

An *alias* names a use (``support_contact_center``) and holds the Azure neural voice, its speaking
style and rate, and the espeak-ng voice the local engine uses instead. Languages map to an alias
or directly to a neural voice. Built-in defaults cover a contact centre in four languages; a JSON
file (``VOICE_CONFIG_FILE``) replaces or adds to them:

    {"default": "support_contact_center",
     "aliases": {"support_contact_center": {"neural_voice": "en-US-JennyNeural",
                                            "style": "customerservice", "local_voice": "en-us"}},
     "languages": {"es-ES": "es-ES-ElviraNeural", "en-US": "support_contact_center"}}

    voices = VoiceConfiguration.from_settings(settings)
    voices.get_voice_alias("support_contact_center").neural_voice
    voices.get_voice_for_language("es-ES")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from settings import Settings


class VoiceConfigError(ValueError):
    """The voice configuration file (or a lookup) is wrong; the message names the entry."""


@dataclass(frozen=True)
class VoiceAlias:
    name: str
    neural_voice: str
    style: str | None = None
    # Azure's prosody rate ("+10%", "0.9" ...); None: the voice's own.
    rate: str | None = None
    # The espeak-ng voice the local engine speaks with for this alias.
    local_voice: str = "en-us"

    @property
    def language(self) -> str:
        """``en-US`` from ``en-US-JennyNeural``."""
        return "-".join(self.neural_voice.split("-")[:2])


BUILT_IN_ALIASES = {
    alias.name: alias
    for alias in (
        VoiceAlias("support_contact_center", "en-US-JennyNeural", "customerservice"),
        VoiceAlias("sales", "en-US-AriaNeural", "cheerful"),
        VoiceAlias("empathetic", "en-US-SaraNeural", "empathetic"),
        VoiceAlias("es_support", "es-ES-ElviraNeural", None, local_voice="es"),
        VoiceAlias("fr_support", "fr-FR-DeniseNeural", None, local_voice="fr"),
        VoiceAlias("de_support", "de-DE-KatjaNeural", None, local_voice="de"),
    )
}
BUILT_IN_LANGUAGES = {
    "en-US": "support_contact_center",
    "es-ES": "es_support",
    "fr-FR": "fr_support",
    "de-DE": "de_support",
}
ALIAS_FIELDS = {"neural_voice", "style", "rate", "local_voice"}


@dataclass
class VoiceConfiguration:
    aliases: dict[str, VoiceAlias] = field(default_factory=lambda: dict(BUILT_IN_ALIASES))
    languages: dict[str, str] = field(default_factory=lambda: dict(BUILT_IN_LANGUAGES))
    default: str = "support_contact_center"

    @classmethod
    def from_settings(cls, settings: Settings) -> VoiceConfiguration:
        if settings.voice_config_file is None:
            return cls()
        return cls.from_file(settings.voice_config_file)

    # The older accelerator's constructor name.
    @classmethod
    def from_env(cls) -> VoiceConfiguration:
        from settings import get_settings

        return cls.from_settings(get_settings())

    @classmethod
    def from_file(cls, path: str | Path) -> VoiceConfiguration:
        try:
            document = json.loads(Path(path).read_text())
        except OSError as error:
            raise VoiceConfigError(f"VOICE_CONFIG_FILE {path}: {error.strerror}") from None
        except ValueError as error:
            raise VoiceConfigError(f"VOICE_CONFIG_FILE {path} is not JSON: {error}") from None
        return cls.from_dict(document, source=f"VOICE_CONFIG_FILE {path}")

    @classmethod
    def from_dict(cls, document: Any, source: str = "voice configuration") -> VoiceConfiguration:
        if not isinstance(document, dict):
            raise VoiceConfigError(f"{source} must be a JSON object")
        config = cls()
        for name, entry in (document.get("aliases") or {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("neural_voice"), str):
                raise VoiceConfigError(f"{source}: aliases.{name}.neural_voice is required")
            unknown = set(entry) - ALIAS_FIELDS
            if unknown:
                raise VoiceConfigError(f"{source}: aliases.{name} has unknown {sorted(unknown)}")
            base = config.aliases.get(name, VoiceAlias(name, entry["neural_voice"]))
            config.aliases[name] = replace(base, **entry)
        for language, target in (document.get("languages") or {}).items():
            if not isinstance(target, str):
                raise VoiceConfigError(f"{source}: languages.{language} must be a string")
            config.languages[language] = target
        config.default = str(document.get("default") or config.default)
        if config.default not in config.aliases:
            raise VoiceConfigError(f"{source}: default {config.default!r} is not an alias")
        return config

    def get_voice_alias(self, name: str | None = None) -> VoiceAlias:
        """The alias ``name`` (the default alias when None)."""
        key = name or self.default
        try:
            return self.aliases[key]
        except KeyError:
            raise VoiceConfigError(
                f"no voice alias {key!r}; known: {', '.join(sorted(self.aliases))}"
            ) from None

    def resolve(self, name: str) -> VoiceAlias:
        """``name`` as an alias when it is one, else a neural voice named directly."""
        if name in self.aliases:
            return self.aliases[name]
        return VoiceAlias(name=name, neural_voice=name)

    def get_voice_for_language(self, language: str) -> VoiceAlias:
        """The voice for ``language`` (``es-ES``; ``es`` matches the first ``es-*``): an alias,
        or a neural voice named directly; the default alias when the language is unknown."""
        target = self.languages.get(language)
        if target is None:
            prefix = language.split("-", maxsplit=1)[0].lower() + "-"
            target = next(
                (t for lang, t in self.languages.items() if lang.lower().startswith(prefix)), None
            )
        if target is None:
            return self.get_voice_alias()
        if target in self.aliases:
            return self.aliases[target]
        return VoiceAlias(
            name=target, neural_voice=target, local_voice=language.split("-", maxsplit=1)[0].lower()
        )
