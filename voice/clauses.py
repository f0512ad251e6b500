"""Cut a streamed reply into clauses to speak (no I/O).

Text goes to speech a clause at a time, so the first words play while the LLM is still writing:
a clause ends at a sentence mark (``.``, ``!``, ``?``) followed by a space, or at ``,;:`` once it
has :data:`MIN_CLAUSE_WORDS` words (shorter pieces sound choppy). A clause that reaches
:data:`MAX_CLAUSE_WORDS` without any mark is cut at a word boundary, so a reply without
punctuation still starts early and is never held whole.

    >>> splitter = ClauseSplitter()
    >>> splitter.feed("Hello there. How")
    ['Hello there.']
    >>> splitter.flush()
    'How'
"""

from __future__ import annotations

import re

MIN_CLAUSE_WORDS = 4
MAX_CLAUSE_WORDS = 20
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s")
_CLAUSE_END = re.compile(r"[,;:]\s")


class ClauseSplitter:
    def __init__(self) -> None:
        self._buffer = ""

    def feed(self, delta: str) -> list[str]:
        """Add streamed text; the clauses it completed."""
        self._buffer += delta
        clauses = []
        while (clause := self._next_clause()) is not None:
            clauses.append(clause)
        return clauses

    def _next_clause(self) -> str | None:
        text = self._buffer
        cut = None
        sentence = _SENTENCE_END.search(text)
        if sentence:
            cut = sentence.end()
        for mark in _CLAUSE_END.finditer(text):
            if cut is not None and mark.end() >= cut:
                break
            if len(text[: mark.end()].split()) >= MIN_CLAUSE_WORDS:
                cut = mark.end()
                break
        if cut is None:
            words = list(re.finditer(r"\S+\s", text))
            if len(words) >= MAX_CLAUSE_WORDS:
                cut = words[MAX_CLAUSE_WORDS - 1].end()
        if cut is None:
            return None
        clause, self._buffer = text[:cut].strip(), text[cut:]
        return clause or self._next_clause()

    def flush(self) -> str:
        """The rest of the reply, when the stream has ended."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest
