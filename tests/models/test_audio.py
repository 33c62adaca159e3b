from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import pytest

from webaccel.errors import InvalidInputError
from webaccel.models import audio as A


def _wav_bytes(x: np.ndarray, rate: int, width: int = 2, channels: int = 1) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((x * 32767).astype("<i2").tobytes())
        else:  # 8-bit PCM is unsigned
            w.writeframes((x * 127 + 128).astype(np.uint8).tobytes())
    return buf.getvalue()


def _tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(x.size, 1 / rate)[spec.argmax()])


@pytest.fixture(scope="module")
def beckett() -> Path:
    from webaccel.models.whisper import beckett_wav

    try:
        return beckett_wav()
    except Exception as exc:  # the wheel is an optional test asset
        pytest.skip(str(exc))


def test_load_audio_from_all_the_forms_users_pass(tmp_path: Path) -> None:
    tone = _tone(440, 16000)
    data = _wav_bytes(tone, 16000)
    p = tmp_path / "t.wav"
    p.write_bytes(data)
    for x in (p, str(p), data, tone, (tone, 16000), (tone * 32767).astype(np.int16)):
        y = A.load_audio(x)
        assert y.dtype == np.float32 and y.shape == (16000,)
        assert np.abs(y - tone).max() < 1e-3
    stereo = np.stack([tone, tone], 1)
    assert np.abs(A.load_audio(stereo) - tone).max() < 1e-6
    assert np.abs(A.load_audio(stereo.T) - tone).max() < 1e-6
    eight_bit = A.load_audio(_wav_bytes(tone, 16000, width=1))
    assert np.abs(eight_bit - tone).max() < 0.02


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resample_keeps_pitch_and_duration(rate: int) -> None:
    y = A.load_audio(_wav_bytes(_tone(440, rate), rate))
    assert abs(y.size - 16000) <= 1
    assert _peak_hz(y, 16000) == pytest.approx(440, abs=1.5)


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"RIFF....WAVEjunk",
        b"\x00" * 100,
        np.zeros((2, 3, 4)),
        np.array([0.1, np.nan]),
        np.array([], np.float32),
        3.5,
        "/nonexistent.wav",
        np.array(["a", "b"]),
    ],
)
def test_bad_audio_raises_typed_errors(bad) -> None:
    with pytest.raises(InvalidInputError):
        A.load_audio(bad)


def test_silence_is_reported() -> None:
    with pytest.raises(InvalidInputError, match="silent"):
        A.check_not_silent(A.load_audio(np.zeros(16000, np.float32)))
    A.check_not_silent(_tone(440, 16000))


def test_mel_filters_match_transformers() -> None:
    fe = pytest.importorskip("transformers").WhisperFeatureExtractor()
    assert np.abs(A.mel_filters() - fe.mel_filters.T).max() < 1e-7


def test_log_mel_matches_whisper_feature_extractor(beckett: Path) -> None:
    fe = pytest.importorskip("transformers").WhisperFeatureExtractor()
    rng = np.random.default_rng(0)
    clips = [
        A.load_audio(beckett),
        rng.normal(0, 0.1, 8000).astype(np.float32),
        _tone(1000, 16000, 31.0),
    ]
    for x in clips:
        ours = A.log_mel_spectrogram(x)
        ref = fe(x, sampling_rate=16000, return_tensors="np").input_features[0]
        assert ours.shape == ref.shape == (80, 3000)
        assert np.abs(ours - ref).max() < 1e-4


def test_long_audio_splits_into_30s_windows() -> None:
    x = _tone(300, 16000, 65.0)
    feats = A.log_mel_features(x)
    assert feats.shape == (3, 80, 3000)
