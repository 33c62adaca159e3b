"""WEBACCEL_DECODE_STEP: the captured decode step's shape (rows x cache positions), or off."""

from __future__ import annotations

import pytest

from webaccel.errors import InvalidInputError
from webaccel.generation.runner import (
    DECODE_STEP_POSITIONS,
    DECODE_STEP_ROWS,
    decode_step_option,
)


@pytest.mark.parametrize(
    "raw,want",
    [
        ("", {"batch": DECODE_STEP_ROWS, "max_len": DECODE_STEP_POSITIONS}),
        ("4x256", {"batch": 4, "max_len": 256}),
        (" 2X32 ", {"batch": 2, "max_len": 32}),
        ("off", None),
        ("0", None),
    ],
)
def test_values(monkeypatch, raw, want):
    monkeypatch.setenv("WEBACCEL_DECODE_STEP", raw)
    assert decode_step_option() == want


@pytest.mark.parametrize("raw", ["8", "8x", "axb", "0x64", "8x1", "8x64x2"])
def test_bad_values_say_what_to_give(monkeypatch, raw):
    monkeypatch.setenv("WEBACCEL_DECODE_STEP", raw)
    with pytest.raises(InvalidInputError, match="WEBACCEL_DECODE_STEP"):
        decode_step_option()
