"""Whisper as two ONNX graphs, exported from the Hugging Face model with torch.

:func:`export_onnx` writes:

``encoder.onnx``
    ``input_features`` [B, 80, 3000] -> ``cross_key_i`` / ``cross_value_i``
    [B, heads, 1500, 64] for every decoder layer.  The cross-attention K/V are
    computed once here, so the per-token graph never sees encoder states.
``decoder.onnx``
    ``input_ids`` [B, T], ``past_key_i`` / ``past_value_i`` [B, heads, P, 64]
    (P may be 0), the cross K/V -> ``logits`` [B, T, vocab] and
    ``present_key_i`` / ``present_value_i`` [B, heads, P+T, 64].  One graph
    serves the prompt and every later step, so the page loads one decoder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from webaccel.models.whisper.ct2 import load_hf_model
from webaccel.models.whisper.tokens import SOT


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
    model.eval()  # docs/FACTS.md: export can leave the module in training mode
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


__all__ = ["export_onnx"]
