"""Incremental detokenization: token ids in, text pieces out, as they become final.

Byte-level BPE splits a multi-byte character (é, 東, 🚀) over several tokens,
and some tokenizers change earlier text when the next token arrives (leading
spaces, merges).  So a piece is emitted only when decoding the window of recent
tokens gives text that extends what was emitted and does not end in U+FFFD (a
partial UTF-8 sequence).  The window keeps a few tokens of left context
(``prefix``) so that decoders that strip a leading space see what came before.
This is the scheme of text-generation-inference's ``decode_token``.
"""

from __future__ import annotations

from collections.abc import Callable

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._prefix = 0  # start of the left-context window
        self._read = 0  # tokens before this index are already emitted as text

    def push(self, token_id: int) -> str:
        """Add one token; return the new final text (possibly empty)."""
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            piece = new_text[len(prefix_text) :]
            self._prefix = self._read
            self._read = len(self.ids)
            return piece
        return ""

    def flush(self) -> str:
        """Text still held back at the end of the stream (e.g. a truncated character)."""
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text) :] if len(new_text) > len(prefix_text) else ""
