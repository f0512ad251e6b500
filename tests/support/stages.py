"""Run one voice pipeline stage alone: feed it frames, read what it pushes (pipecat's harness).

    with StageHarness(SpeechStage(synthesizer, latency)) as harness:
        harness.feed(LLMText("Hello there.", turn=1, last=True))
        out = harness.wait_for(lambda frames: any(f.last_of_turn for f in frames ...))

The stage runs in its own thread as in a call; the harness stops and joins it on exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from voice.frames import Frame
from voice.pipeline import Stage

# Generous: a loaded CI machine may take seconds over what takes milliseconds here.
WAIT_SECS = 30.0

S = TypeVar("S", bound=Stage)


class StageHarness(Generic[S]):
    def __init__(self, stage: S) -> None:
        self.stage = stage
        self.out: list[Frame] = []
        self._lock = threading.Lock()
        stage.link(self._collect)

    def _collect(self, frame: Frame) -> None:
        with self._lock:
            self.out.append(frame)

    def __enter__(self) -> StageHarness[S]:
        self.stage.start("harness")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stage.stop()
        self.stage.join()

    def feed(self, *frames: Frame) -> None:
        for frame in frames:
            assert self.stage.queue.put(frame, WAIT_SECS), "the stage did not take the frame"

    # Any, not Frame: a test reads the concrete frames the stage pushed (LLMText, AudioOut ...).
    def frames(self) -> list[Any]:
        with self._lock:
            return list(self.out)

    def wait_for(self, done: Callable[[list[Any]], bool], timeout: float = WAIT_SECS) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stage.error is not None:
                raise AssertionError(f"the stage failed: {self.stage.error!r}")
            frames = self.frames()
            if done(frames):
                return frames
            time.sleep(0.01)
        raise AssertionError(f"timed out; the stage pushed {self.frames()!r:.2000}")
