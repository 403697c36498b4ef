"""Streaming detokenization: token ids in, text pieces out, always valid UTF-8.

SentencePiece's byte fallback writes a character it has no piece for as one token per
UTF-8 byte (`<0xF0><0x9F><0x98><0x80>` for an emoji). Decoding token by token would
print replacement characters; here bytes are buffered until they form whole characters.
User stop strings are matched on the text, and text that may be the start of a stop
string is held back until it is known not to be.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence


class StreamingDetokenizer:
    """Turns a stream of token ids into pieces of complete characters.

    NUL (the byte-fallback piece `<0x00>`, which a model may sample) is dropped: no
    reader sees it, and no PostgreSQL text column holds it, so an answer holding one
    could not be saved.

    Args:
        piece_bytes: the tokenizer's `piece_bytes(id) -> bytes` (b"" for control
            pieces, one byte for a byte-fallback piece).
    """

    def __init__(self, piece_bytes: Callable[[int], bytes]) -> None:
        self.piece_bytes = piece_bytes
        # "ignore" drops bytes that can never form a character (a stray continuation
        # byte) instead of writing U+FFFD; an incomplete tail stays buffered.
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")

    def push(self, token_id: int) -> str:
        """Returns the new complete characters (possibly "") after one more token."""
        return self.decoder.decode(self.piece_bytes(token_id)).replace("\x00", "")

    def flush(self) -> str:
        """Ends the stream: an incomplete trailing character is dropped."""
        return self.decoder.decode(b"", final=True)


class StopMatcher:
    """Finds user stop strings in streamed text.

    `push` returns the text that is safe to show and whether a stop string was seen; the
    stop string itself and anything after it are never shown.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self.stop = tuple(stop)
        self.pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stop) if i >= 0]
        if hits:
            out, self.pending = self.pending[: min(hits)], ""
            return out, True
        keep = self._partial_suffix()
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out, False

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out

    def _partial_suffix(self) -> int:
        """Length of the longest tail of `pending` that begins some stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.pending)), best, -1):
                if s.startswith(self.pending[-n:]):
                    best = n
                    break
        return best
