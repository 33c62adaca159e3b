"""Whisper's vocabulary: the special token ids the decoding loop steers by, and text.

The ids are those of the English-only (``.en``) models; the tokenizer is the
``tokenizer.json`` shipped with the weights package.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from webaccel.models.whisper.ct2 import model_dir

EOT = 50256
SOT = 50257
NO_TIMESTAMPS = 50362
TIMESTAMP_BEGIN = 50363  # every id from here on is a timestamp (off in this loop)


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir() / "tokenizer.json"))


def decode(tokens: Iterable[int]) -> str:
    """Text of generated ids, special tokens dropped, outer spaces trimmed."""
    return str(tokenizer().decode([int(t) for t in tokens], skip_special_tokens=True)).strip()


__all__ = ["EOT", "NO_TIMESTAMPS", "SOT", "TIMESTAMP_BEGIN", "decode", "tokenizer"]
