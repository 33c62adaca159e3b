"""Whisper tiny.en in headless Chromium: encoder + decoder driven from Python."""
from __future__ import annotations

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_beckett_is_transcribed_in_the_browser(accelerator):
    from webaccel.models import whisper

    out = accelerator.accelerate("whisper-tiny-en", str(whisper.beckett_wav()),
                                 {"timeout": 600})
    assert out["text"] == "Ever tried, ever failed. No matter, try again. Fail again. Fail better."
    assert out["browser"] == "chromium" and out["backend"] in ("wasm", "webgpu")
    assert out["bridge_runs"] >= 2  # the encoder once, then decoder steps
    # The decoder's fixed cross-attention inputs (~18 MB) stay in the page after
    # the first step, so the bridge adds far less than a resend per step would.
    again = accelerator.accelerate("whisper-tiny-en", str(whisper.beckett_wav()),
                                   {"timeout": 600})
    assert again["text"] == out["text"]
    assert again["round_trip_ms"] < 4 * again["page_ms"] + 5000


def test_multi_graph_model_has_no_single_file():
    from webaccel.errors import InvalidInputError
    from webaccel.models import registry

    spec = registry.get("whisper-tiny-en")
    with pytest.raises(InvalidInputError, match="several graphs"):
        spec.ensure_onnx("fp32")


@pytest.mark.parametrize("bad", [b"RIFF....WAVEnot audio", "silence"])
def test_unreadable_or_silent_audio_is_a_clear_error(accelerator, bad):
    import numpy as np

    from webaccel.errors import InvalidInputError

    data = np.zeros(16000, dtype=np.float32) if bad == "silence" else bad
    with pytest.raises(InvalidInputError):
        accelerator.accelerate("whisper-tiny-en", data)
