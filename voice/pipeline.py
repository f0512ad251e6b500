"""Stages in threads, joined by bounded queues of frames; barge-in as a system frame.

A :class:`Stage` overrides one method, :meth:`Stage.process_frame`, and calls :meth:`Stage.push`
for what it passes on. Each stage runs in its own thread and owns a :class:`FrameQueue`:

- data frames wait in order; the queue is bounded, so a slow stage slows the one before it
  instead of growing memory (``put`` blocks, giving up when the pipeline stops);
- system frames (:class:`~voice.frames.SystemFrame`) jump the queue and are never dropped.

:meth:`Pipeline.interrupt` is barge-in: it bumps every stage's generation at once (work in
progress sees that and stops: an LLM stream is closed between tokens, a TTS render between
clauses), empties every queue of data frames, and delivers the :class:`~voice.frames.Interruption`
to each stage as a system frame. Frames a stage pushes for work begun before the interruption are
dropped by :meth:`Stage.push`, so nothing stale reaches the writer.

In outline::

    pipeline = Pipeline([HearingStage(...), TurnStage(...), SpeechStage(...), writer])
    pipeline.start(); pipeline.put(frame); ...; pipeline.stop()
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence

from voice.frames import EndOfCall, Frame, Interruption, SystemFrame

log = logging.getLogger("conduit.voice.pipeline")

# Data frames a stage may have waiting: ~10 s of 20 ms audio. A stage that falls this far
# behind holds up the one before it rather than growing memory.
DEFAULT_QUEUE_FRAMES = 500
# How often a blocked put or an idle stage looks whether the pipeline is stopping.
POLL_SECS = 0.1
# A stage thread gets this long to finish its frame after stop() before we give up joining it.
JOIN_TIMEOUT_SECS = 10.0


class FrameQueue:
    """Bounded for data frames; system frames go first and never wait."""

    def __init__(self, max_data: int = DEFAULT_QUEUE_FRAMES) -> None:
        self._data: collections.deque[Frame] = collections.deque()
        self._system: collections.deque[Frame] = collections.deque()
        self._max = max_data
        self._ready = threading.Condition()
        self.closed = False

    def put(self, frame: Frame, timeout: float | None = None) -> bool:
        """Queue ``frame``; False when the queue is closed (or still full after ``timeout``)."""
        with self._ready:
            if isinstance(frame, SystemFrame):
                self._system.append(frame)
                self._ready.notify_all()
                return True
            if not self._ready.wait_for(
                lambda: self.closed or len(self._data) < self._max, timeout
            ):
                return False
            if self.closed:
                return False
            self._data.append(frame)
            self._ready.notify_all()
            return True

    def get(self, timeout: float | None = None) -> Frame | None:
        """The next frame (system frames first), or None after ``timeout`` / when closed."""
        with self._ready:
            if not self._ready.wait_for(lambda: self.closed or self._system or self._data, timeout):
                return None
            if self._system:
                frame = self._system.popleft()
            elif self._data:
                frame = self._data.popleft()
            else:
                return None
            self._ready.notify_all()
            return frame

    def clear_data(self) -> int:
        """Drop every waiting data frame; how many were dropped."""
        with self._ready:
            dropped = len(self._data)
            self._data.clear()
            self._ready.notify_all()
            return dropped

    def close(self) -> None:
        with self._ready:
            self.closed = True
            self._ready.notify_all()

    def __len__(self) -> int:
        with self._ready:
            return len(self._data) + len(self._system)


class Stage:
    """One step of the pipeline, in its own thread. Override :meth:`process_frame`."""

    name = "stage"
    # False for the stages that detect interruptions (they hear the caller; nothing to cancel).
    interruptible = True

    def __init__(self, max_queue: int = DEFAULT_QUEUE_FRAMES) -> None:
        self.queue = FrameQueue(max_queue)
        self.generation = 0
        self._working_generation = 0
        self._downstream: Callable[[Frame], None] | None = None
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # --- what a stage overrides -------------------------------------------------------------------
    def process_frame(self, frame: Frame) -> None:
        """Handle one frame; the default passes it on."""
        self.push(frame)

    def on_stop(self) -> None:
        """Release what the stage holds; runs in its thread after the last frame."""

    # --- what a stage calls -----------------------------------------------------------------------
    def push(self, frame: Frame) -> None:
        """Pass ``frame`` to the next stage, unless it comes from work an interruption ended."""
        if self._downstream is None:
            return
        if not isinstance(frame, SystemFrame) and self.interrupted:
            return
        self._downstream(frame)

    @property
    def interrupted(self) -> bool:
        """True when an interruption arrived since the current frame's work began."""
        return self.generation != self._working_generation

    # --- run ------------------------------------------------------------------------------------
    def link(self, downstream: Callable[[Frame], None] | None) -> None:
        self._downstream = downstream

    def start(self, call_id: str = "") -> None:
        self._thread = threading.Thread(
            target=self._run, name=f"voice-{self.name}-{call_id[:12]}", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            self.run()
        except BaseException as error:
            self.error = error
            log.exception("voice stage %s failed", self.name)
        finally:
            try:
                self.on_stop()
            except Exception:
                log.exception("voice stage %s failed to stop cleanly", self.name)

    def run(self) -> None:
        """The stage's loop: take a frame, process it, until the end of the call."""
        while True:
            frame = self.queue.get(POLL_SECS)
            if frame is None:
                if self.queue.closed:
                    return
                continue
            if isinstance(frame, EndOfCall):
                return
            if not isinstance(frame, SystemFrame):
                self._working_generation = self.generation
            self.process_frame(frame)

    def interrupt(self, frame: Interruption) -> int:
        """Called from the interrupting thread: stop current work, drop queued data frames."""
        self.generation += 1
        dropped = self.queue.clear_data()
        self.queue.put(frame)
        return dropped

    def stop(self) -> None:
        # Work in progress (an LLM stream, a render) ends at its next check, as on interruption.
        self.generation += 1
        self.queue.put(EndOfCall())
        self.queue.close()

    def join(self, timeout: float = JOIN_TIMEOUT_SECS) -> None:
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("voice stage %s did not stop in %.0f s", self.name, timeout)


class Pipeline:
    """Stages in order: each stage's pushes go into the next one's queue."""

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = list(stages)
        for stage, following in zip(self.stages, self.stages[1:], strict=False):
            stage.link(self._enqueue_into(following))

    @staticmethod
    def _enqueue_into(stage: Stage) -> Callable[[Frame], None]:
        def enqueue(frame: Frame) -> None:
            # Block while the next stage is full, but never past the end of the call.
            while not stage.queue.put(frame, POLL_SECS):
                if stage.queue.closed:
                    return

        return enqueue

    def put(self, frame: Frame) -> None:
        """Feed a frame to the first stage."""
        self._enqueue_into(self.stages[0])(frame)

    def start(self, call_id: str = "") -> None:
        for stage in self.stages:
            stage.start(call_id)

    def interrupt(self, frame: Interruption) -> int:
        """Barge-in: every stage stops and drops queued data; frames dropped in all."""
        # Last stage first: the writer stops sending before upstream stages stop producing.
        return sum(stage.interrupt(frame) for stage in reversed(self.stages) if stage.interruptible)

    def stop(self) -> None:
        for stage in self.stages:
            stage.stop()
        for stage in self.stages:
            stage.join()

    @property
    def errors(self) -> list[BaseException]:
        return [stage.error for stage in self.stages if stage.error is not None]
