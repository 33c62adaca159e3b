"""Fixtures for generation tests: the tiny random Llama (built once per session)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny():
    """(spec, GenerationModel, onnx path) of the tiny random Llama, via the real export."""
    pytest.importorskip("torch")
    from webaccel.generation import load_generation_model
    from webaccel.generation.testing import tiny_llama_spec

    tiny_llama_spec("tiny-llama")
    return load_generation_model("tiny-llama")


@pytest.fixture(scope="session")
def native(tiny):
    from webaccel.generation.native import NativeGenerator

    _, gm, path = tiny
    return NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
