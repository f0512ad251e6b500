"""Is this file something Whisper will accept? Checked before any upload, from the file alone.

Whisper takes MP3, MP4, MPEG, MPGA, M4A, WAV and WEBM files of at most 25 MB. The extension is
not enough (a renamed text file has one), so the first bytes are read and must be the container
the extension promises. No audio decoding here: that is audio_chunks.py's job.
"""

from __future__ import annotations

from pathlib import Path

from tasks.errors import InvalidInput

# Azure OpenAI's limit for one Whisper upload.
MAX_UPLOAD_BYTES = 25 * 1024 * 1024
SNIFF_BYTES = 16

# The container each extension must hold, as Whisper decodes by it.
CONTAINER_BY_EXTENSION = {
    ".mp3": "mpeg-audio",
    ".mpga": "mpeg-audio",
    ".mpeg": "mpeg-audio",
    ".mp4": "mp4",
    ".m4a": "mp4",
    ".wav": "wave",
    ".webm": "webm",
}
SUPPORTED_EXTENSIONS = tuple(ext.lstrip(".") for ext in CONTAINER_BY_EXTENSION)


def sniff_container(head: bytes) -> str | None:
    """The audio container the first bytes of a file announce, or None when none of ours."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wave"
    if head[4:8] == b"ftyp":
        return "mp4"
    if head[:4] == b"\x1a\x45\xdf\xa3":  # EBML, the header of Matroska and WebM
        return "webm"
    # An ID3 tag, or an MPEG audio frame sync: eleven set bits, a valid layer (not 00).
    if head[:3] == b"ID3" or (
        len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06
    ):
        return "mpeg-audio"
    return None


def validate_audio_file(path: str | Path) -> Path:
    """``path`` if Whisper will take it; otherwise an InvalidInput saying what is wrong."""
    path = Path(path)
    extension = path.suffix.lower()
    if extension not in CONTAINER_BY_EXTENSION:
        raise InvalidInput(
            f"audio file {path.name!r} has an unsupported extension; Whisper "
            f"accepts {', '.join(SUPPORTED_EXTENSIONS)}"
        )
    if not path.is_file():
        raise InvalidInput(f"audio file {str(path)!r} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise InvalidInput(f"audio file {path.name!r} is empty")
    if size > MAX_UPLOAD_BYTES:
        raise InvalidInput(
            f"audio file {path.name!r} is {size / 2**20:.1f} MB; Whisper accepts at "
            f"most {MAX_UPLOAD_BYTES // 2**20} MB: split or compress it first"
        )
    with path.open("rb") as file:
        found = sniff_container(file.read(SNIFF_BYTES))
    expected = CONTAINER_BY_EXTENSION[extension]
    if found != expected:
        raise InvalidInput(
            f"audio file {path.name!r} is named {extension} but its content is "
            f"{found or 'not audio'}; expected {expected}"
        )
    return path
