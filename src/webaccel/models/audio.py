"""Audio in: decode, mono, resample to 16 kHz, and Whisper's log-mel features.

The features follow openai/whisper ``audio.py`` (and Hugging Face's
``WhisperFeatureExtractor``, which ``tests/models/test_audio.py`` compares
against): 30 s windows of 16 kHz audio, a 400-point periodic Hann STFT with
hop 160 and reflect padding, power spectrum, 80 Slaney mel filters from 0 to
8 kHz, ``log10`` clamped at 1e-10, floored at (max - 8), then ``(x + 4) / 4``.
The last STFT frame is dropped, giving 3000 frames per window.
"""

from __future__ import annotations

import io
import os
from functools import cache
from math import gcd
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples per window
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames per window
SILENCE_PEAK = 1e-4  # peak |amplitude| (full scale 1.0) below which audio counts as silent
MAX_SECONDS = 60 * 60

AudioLike = str | os.PathLike[str] | bytes | bytearray | memoryview | np.ndarray | tuple[Any, int]


def load_audio(data: AudioLike, sample_rate: int | None = None) -> np.ndarray:
    """Mono float32 samples at 16 kHz in [-1, 1] from what a user would pass.

    ``data`` is a path or the bytes of a WAV file (PCM 8/16/24/32-bit or
    float; other containers need the optional ``soundfile``), a numpy array
    (``sample_rate`` says its rate; 16 kHz assumed otherwise; int arrays are
    scaled from their full range), or a ``(array, sample_rate)`` tuple.
    """
    if isinstance(data, tuple):
        if len(data) != 2 or not isinstance(data[1], int | np.integer):
            raise InvalidInputError("an audio tuple must be (samples, sample_rate)")
        pair: tuple[Any, Any] = data
        data, sample_rate = np.asarray(pair[0]), int(pair[1])
    if isinstance(data, np.ndarray):
        samples, rate = data, sample_rate or SAMPLE_RATE
    elif isinstance(data, bytes | bytearray | memoryview):
        if not len(data):
            raise InvalidInputError("empty audio bytes")
        samples, rate = _decode(io.BytesIO(bytes(data)), "the audio bytes")
    elif isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.is_file():
            raise InvalidInputError(f"audio file not found: {path}")
        samples, rate = _decode(path, str(path))
    else:
        raise InvalidInputError(
            f"cannot read audio from {type(data).__name__}; give a path, WAV bytes, "
            "a numpy array or (array, sample_rate)"
        )
    return resample(to_mono_float(samples), rate, SAMPLE_RATE)


def _decode(src: Any, what: str) -> tuple[np.ndarray, int]:
    import warnings

    from webaccel.extras import require

    wavfile = require("scipy.io.wavfile", "reading audio (whisper-tiny-en)", "audio")

    try:
        with warnings.catch_warnings():
            # LIST/INFO chunks are common and harmless; scipy warns for each.
            warnings.simplefilter("ignore", wavfile.WavFileWarning)
            rate, samples = wavfile.read(src)
        return samples, int(rate)
    # scipy's reader fails on truncated/garbled RIFF data with whatever error the
    # parse reached (ValueError, EOFError, even UnboundLocalError): all mean "not a WAV".
    except Exception as wav_exc:  # noqa: BLE001
        # Not a WAV scipy can read: try libsndfile (FLAC, OGG, ...) if present.
        if hasattr(src, "seek"):
            src.seek(0)
        try:
            import soundfile
        except ImportError:
            raise InvalidInputError(
                f"{what} is not a readable WAV file ({wav_exc}); convert it to WAV "
                "(e.g. `ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav`) or `pip install soundfile`"
            ) from wav_exc
        try:
            samples, rate = soundfile.read(src, dtype="float32", always_2d=False)
            return samples, int(rate)
        except Exception as exc:
            raise InvalidInputError(f"{what} is not a readable audio file ({exc})") from exc


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """float32 in [-1, 1], channels averaged (samples x channels, or channels x samples)."""
    src = np.asarray(samples)
    if src.size == 0:
        raise InvalidInputError("audio has no samples")
    if np.issubdtype(src.dtype, np.integer):
        info = np.iinfo(src.dtype)
        half = (int(info.max) + 1) / 2
        # 8-bit WAV is unsigned, centred on 128; signed PCM scales by -min.
        x = (src.astype(np.float64) - half) / half if info.min == 0 else src / -float(info.min)
    elif np.issubdtype(src.dtype, np.floating):
        x = src.astype(np.float64)
    else:
        raise InvalidInputError(f"audio samples must be numbers, got {src.dtype}")
    if x.ndim == 2:
        if x.shape[1] <= 8:
            x = x.mean(axis=1)
        elif x.shape[0] <= 8:
            x = x.mean(axis=0)
        else:
            raise InvalidInputError(f"2-D audio must have <= 8 channels, got shape {x.shape}")
    elif x.ndim != 1:
        raise InvalidInputError(f"audio must be 1-D or 2-D (channels), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InvalidInputError("audio contains NaN or infinite samples")
    return x.astype(np.float32)


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy ``resample_poly``, Kaiser-windowed FIR)."""
    if rate <= 0:
        raise InvalidInputError(f"invalid sample rate {rate}")
    if x.size / rate > MAX_SECONDS:
        raise InvalidInputError(f"audio is {x.size / rate:.0f} s; the limit is {MAX_SECONDS} s")
    if rate == target:
        return x.astype(np.float32, copy=False)
    from webaccel.extras import require

    resample_poly = require("scipy.signal", "resampling audio", "audio").resample_poly

    g = gcd(rate, target)
    return resample_poly(x, target // g, rate // g).astype(np.float32)


def check_not_silent(x: np.ndarray) -> None:
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < SILENCE_PEAK:
        raise InvalidInputError(
            f"the audio is silent (peak amplitude {peak:.2e}); nothing to transcribe"
        )


# ------------------------------------------------------------------------- mel


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    # Slaney's auditory toolbox scale: linear below 1 kHz, logarithmic above.
    f = np.asarray(f, dtype=np.float64)
    mel = 3.0 * f / 200.0
    log_region = f >= 1000.0
    mel[log_region] = 15.0 + np.log(f[log_region] / 1000.0) / (np.log(6.4) / 27.0)
    return mel


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    f = 200.0 * m / 3.0
    log_region = m >= 15.0
    f[log_region] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (m[log_region] - 15.0))
    return f


@cache
def mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """[n_mels, n_fft//2+1] Slaney-normalized triangles (librosa.filters.mel defaults)."""
    fft_freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    hz = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([sr / 2]))[0], n_mels + 2)
    )
    lower = (fft_freqs[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - fft_freqs[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]  # equal area per filter
    return weights.astype(np.float32)


def log_mel_spectrogram(window: np.ndarray) -> np.ndarray:
    """[80, 3000] float32 features of one 30 s window (shorter input is zero-padded)."""
    x = np.asarray(window, dtype=np.float32)
    if x.ndim != 1:
        raise InvalidInputError("log-mel features take 1-D 16 kHz samples")
    x = np.pad(x[:N_SAMPLES], (0, max(0, N_SAMPLES - x.size)))
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")  # torch.stft(center=True)
    n_frames = 1 + (x.size - N_FFT) // HOP_LENGTH
    frames = np.lib.stride_tricks.as_strided(
        x, shape=(n_frames, N_FFT), strides=(x.strides[0] * HOP_LENGTH, x.strides[0])
    )
    hann = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)  # periodic
    spec = np.fft.rfft(frames.astype(np.float64) * hann, axis=-1)
    power = (spec.real**2 + spec.imag**2)[:-1]  # whisper drops the last frame
    mel = mel_filters().astype(np.float64) @ power.T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def windows(x: np.ndarray) -> list[np.ndarray]:
    """Consecutive 30 s windows (the last one shorter); at least one."""
    return [x[i : i + N_SAMPLES] for i in range(0, max(x.size, 1), N_SAMPLES)]


def log_mel_features(x: np.ndarray) -> np.ndarray:
    """[n_windows, 80, 3000] features for 16 kHz mono audio of any length."""
    return np.stack([log_mel_spectrogram(w) for w in windows(x)])


__all__ = [
    "N_FRAMES",
    "N_MELS",
    "N_SAMPLES",
    "SAMPLE_RATE",
    "check_not_silent",
    "load_audio",
    "log_mel_features",
    "log_mel_spectrogram",
    "mel_filters",
    "resample",
    "to_mono_float",
    "windows",
]
