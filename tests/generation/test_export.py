"""The ONNX export with KV cache decodes exactly like PyTorch (tiny random Llama)."""

from __future__ import annotations

import json

import onnx
import pytest

from webaccel.generation import GenerationParams

torch = pytest.importorskip("torch")


def test_native_greedy_equals_pytorch(tiny, native):
    from transformers import LlamaConfig, LlamaForCausalLM

    from webaccel.generation.testing import build_tiny_llama  # noqa: F401  (same construction)

    spec, gm, path = tiny
    # Rebuild the identical PyTorch model (same seed and config as build_tiny_llama).
    meta = gm.meta
    cfg = LlamaConfig(
        vocab_size=meta["vocab_size"],
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=meta["layers"],
        num_attention_heads=4,
        num_key_value_heads=meta["kv_heads"],
        max_position_embeddings=meta["max_positions"],
        initializer_range=0.4,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    for prompt in ["Hello", "Grüße 東京 🚀", "x" * 60]:
        ids = gm.encode(prompt)
        ours = native.generate(ids, GenerationParams(max_tokens=24)).token_ids
        with torch.no_grad():
            out = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=24,
                do_sample=False,
                eos_token_id=None,
                pad_token_id=0,
            )
        assert ours == out[0, len(ids) :].tolist(), prompt
        assert len(set(ours)) > 3  # the random model does not collapse to one token


def test_files_beside_the_model(tiny):
    _, gm, path = tiny
    meta = json.loads((path.parent / "generation.json").read_text())
    assert meta["layers"] == 2 and meta["kv_heads"] == 2 and meta["eos_token_ids"] == [2]
    graph = onnx.load(str(path)).graph
    names = [i.name for i in graph.input]
    assert names[:3] == ["input_ids", "attention_mask", "position_ids"]
    assert names[3:] == [f"past_key_values.{i}.{kv}" for i in range(2) for kv in ("key", "value")]
    # The tied LM head reads the embedding table: no transposed [hidden, vocab] copy.
    shapes = [tuple(t.dims) for t in graph.initializer]
    assert (64, meta["vocab_size"]) not in shapes and (meta["vocab_size"], 64) in shapes
    assert (
        gm.apply_chat_template([{"role": "user", "content": "hi"}])
        == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
