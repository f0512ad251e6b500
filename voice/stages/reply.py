"""The LLM turn: the caller's words and the history in, the reply out a clause at a time.

On an :class:`~voice.frames.EndOfTurn` the caller's text joins the history and the chat
completion streams (through tasks/, inside the quota, charged to ``VOICE_APP_ID``). Deltas are cut
into clauses (:mod:`voice.clauses`) and each clause goes to speech as soon as it is complete. An
interruption closes the stream between two deltas, so the upstream stops generating.

DTMF: ``0`` repeats the agent's last answer; other digits are collected into the conversation
context (``dtmf``) for the LLM prompt and call-control code to read.

When the LLM cannot answer (quota exhausted, upstream down) the caller hears
:data:`APOLOGY` instead of silence; the error is logged with the call id.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from tasks.errors import ConduitError
from voice.clauses import ClauseSplitter
from voice.frames import Dtmf, EndOfTurn, Frame, Interruption, LLMText
from voice.history import ConversationMemory
from voice.latency import LatencyTool
from voice.pipeline import Stage

log = logging.getLogger("conduit.voice.reply")

APOLOGY = "Sorry, I cannot answer right now. Please try again in a moment."
REPEAT_DIGIT = "0"
# Digits kept in the context: a card or account number, not an unbounded string.
MAX_DTMF_DIGITS = 32

ChatStream = Callable[..., Iterator[str]]


class ReplyStage(Stage):
    name = "reply"

    def __init__(
        self,
        *,
        memory: ConversationMemory,
        latency: LatencyTool,
        chat: ChatStream,
        system_prompt: str,
        max_tokens: int,
        app_id: str,
        on_turn_started: Callable[[int], None],
        call_id: str = "",
    ) -> None:
        super().__init__()
        self.memory = memory
        self.latency = latency
        self.chat = chat
        self.system_prompt = system_prompt
        self.max_tokens = max_tokens
        self.app_id = app_id
        self.on_turn_started = on_turn_started
        self.call_id = call_id
        self.turn = 0
        self.failed_turns = 0  # answered with the apology: the LLM could not answer

    def process_frame(self, frame: Frame) -> None:
        if isinstance(frame, EndOfTurn):
            self._answer(frame)
        elif isinstance(frame, Dtmf):
            self._dtmf(frame.digit)
        elif not isinstance(frame, Interruption):
            self.push(frame)

    def _new_turn(self) -> int:
        self.turn += 1
        self.on_turn_started(self.turn)
        return self.turn

    def _answer(self, frame: EndOfTurn) -> None:
        turn = self._new_turn()
        self.latency.begin_turn(turn, frame.speech_ended_at)
        self.latency.mark(turn, "stt_final", frame.final_at)
        self.memory.append_to_history("user", frame.text)
        messages = self.memory.messages(self.system_prompt)
        splitter = ClauseSplitter()
        first = True
        stream = self.chat(messages, max_tokens=self.max_tokens, app_id=self.app_id)
        try:
            for delta in stream:
                if self.interrupted:
                    return
                self.latency.mark(turn, "llm_first_token")
                for clause in splitter.feed(delta):
                    self.push(LLMText(clause, turn, first=first))
                    first = False
        except ConduitError as error:
            self.failed_turns += 1
            log.warning("voice turn could not be answered: %s", error, extra=self._extra(turn))
            self.push(LLMText(APOLOGY, turn, first=first, last=True))
            return
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()  # stops the upstream when we leave early
        self.push(LLMText(splitter.flush(), turn, first=first, last=True))

    def _dtmf(self, digit: str) -> None:
        if digit == REPEAT_DIGIT:
            last = _last_assistant_text(self.memory.history)
            if last:
                turn = self._new_turn()
                self.latency.begin_turn(turn, time.monotonic())
                # The same clauses as the first time, so it sounds the same.
                splitter = ClauseSplitter()
                clauses = [*splitter.feed(last), splitter.flush()]
                for index, clause in enumerate(clauses):
                    self.push(
                        LLMText(clause, turn, first=index == 0, last=index == len(clauses) - 1)
                    )
            return
        digits = (str(self.memory.get_context("dtmf", "")) + digit)[-MAX_DTMF_DIGITS:]
        self.memory.set_context("dtmf", digits)

    def _extra(self, turn: int) -> dict[str, Any]:
        return {"call_id": self.call_id, "turn": turn}


def _last_assistant_text(history: Sequence[dict[str, str]]) -> str:
    for message in reversed(history):
        if message["role"] == "assistant":
            return message["content"]
    return ""
