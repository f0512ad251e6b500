"""Speech in the compressed containers people upload (M4A from phones, WEBM from browsers),
encoded in-process with PyAV's bundled FFmpeg encoders: no ffmpeg binary needed."""

from __future__ import annotations

import io

import av
import numpy as np
from av.audio.stream import AudioStream

# Extension → (FFmpeg muxer, audio codec), as a phone's voice memo and a browser's
# MediaRecorder write them. "ipod" is the muxer ffmpeg picks for .m4a (brand "M4A ").
COMPRESSED_FORMATS = {"m4a": ("ipod", "aac"), "webm": ("webm", "libopus")}


def compressed(pcm: np.ndarray, sample_rate: int, extension: str) -> bytes:
    """Mono int16 ``pcm`` encoded as a complete ``extension`` file."""
    muxer, codec = COMPRESSED_FORMATS[extension]
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = sample_rate
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout="mono")
        # PyAV types a codec given by a plain string as any kind of stream: it is audio here.
        assert isinstance(stream, AudioStream), f"{codec} is not an audio codec"
        # The encoder cuts the frame into its own frame size; None flushes what it holds.
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()
