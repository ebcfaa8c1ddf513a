"""Token ids to text for streaming: incremental decoding that never emits half a character or a stop string.

The same rules as `trtq run` (runtime/generate.py): text a stop string could still claim is held back, a trailing
U+FFFD (an incomplete multi-byte character) waits for the next token, and the text is cut before the first stop
string.
"""

from __future__ import annotations

from collections.abc import Sequence


class TextStream:
    def __init__(self, tokenizer, stops: Sequence[str] = ()):
        self.tok = tokenizer
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.ids: list[int] = []
        self.sent = 0
        self.stopped = False
        self.text = ""

    def push(self, token: int) -> str:
        """Add one generated token; returns the text that can be sent now ('' when none)."""
        if self.stopped:
            return ""
        self.ids.append(int(token))
        self.text = self.tok.decode(self.ids, skip_special_tokens=True)
        cut = _first_stop(self.text, self.stops)
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            return self._emit(len(self.text))
        safe = len(self.text) - self.hold
        if self.text.endswith("\ufffd"):
            safe = min(safe, len(self.text) - 1)
        return self._emit(safe)

    def finish(self) -> str:
        """The rest of the text at the end of the sequence."""
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        out = self.text[self.sent : upto]
        self.sent = upto
        return out


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None
