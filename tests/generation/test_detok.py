"""Incremental detokenization: pieces are final, and multi-byte characters come out whole."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from webaccel.generation.detok import IncrementalDetokenizer
from webaccel.generation.testing import SPECIALS, byte_tokenizer_json

BYTE_TOK = Tokenizer.from_str(byte_tokenizer_json())

TEXTS = [
    "Grüße aus Köln",
    "東京は日本の首都です。",
    "Emoji 🚀🔥 and ZWJ 👩‍👩‍👧",
    "  spaces  ",
    "a\nb\tc",
]


def pieces_of(tok: Tokenizer, text: str) -> tuple[list[str], list[int]]:
    ids = tok.encode(text, add_special_tokens=False).ids
    d = IncrementalDetokenizer(lambda xs: tok.decode(xs, skip_special_tokens=True))
    out = [d.push(i) for i in ids]
    out.append(d.flush())
    return [p for p in out if p], ids


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokens_reassemble_characters(text):
    pieces, ids = pieces_of(BYTE_TOK, text)
    assert len(ids) == len(text.encode())  # one token per UTF-8 byte
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    if any(ord(c) > 127 for c in text):
        assert len(pieces) < len(ids)  # multi-byte characters waited for their last byte


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_streams_back_exactly(text):
    # A special token's text (e.g. "<|im_start|>") encodes to that special token,
    # which decoding skips, as Hugging Face tokenizers do: not plain text.
    assume(not any(special in text for special in SPECIALS))
    pieces, _ = pieces_of(BYTE_TOK, text)
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces if "\ufffd" not in text)


def test_a_truncated_character_is_flushed_at_the_end():
    ids = BYTE_TOK.encode("ok 🚀", add_special_tokens=False).ids[:-1]  # drop the last byte
    d = IncrementalDetokenizer(lambda xs: BYTE_TOK.decode(xs))
    streamed = "".join(d.push(i) for i in ids)
    assert streamed == "ok "
    assert d.flush() == "\ufffd"


def test_special_tokens_add_no_text():
    d = IncrementalDetokenizer(lambda xs: BYTE_TOK.decode(xs, skip_special_tokens=True))
    ids = BYTE_TOK.encode("hi", add_special_tokens=False).ids
    assert "".join(d.push(i) for i in [*ids, 2]) + d.flush() == "hi"  # 2 = <|im_end|>


def _smollm_tokenizer() -> Tokenizer:
    # SmolLM2's real tokenizer comes with its export (built once per $WEBACCEL_HOME,
    # ~2 min the first time; the slow end-to-end tests reuse it).
    pytest.importorskip("gguf")
    from webaccel.models import registry

    spec = registry.get("smollm2")
    spec.ensure_onnx("fp32")
    return Tokenizer.from_file(str(spec.artifact_dir("fp32") / "tokenizer.json"))


@pytest.mark.parametrize("text", [*TEXTS, " Hello world, it's 2026!", "naïve café ñ"])
def test_smollm2_tokenizer_streams_back_exactly(text):
    tok = _smollm_tokenizer()
    pieces, _ = pieces_of(tok, text)
    assert "".join(pieces) == tok.decode(tok.encode(text, add_special_tokens=False).ids)
    assert not any("\ufffd" in p for p in pieces)
