"""``webaccel models``: list, prepare and quantize with measured accuracy."""
from __future__ import annotations

import json

import duckdb
from typer.testing import CliRunner

from webaccel.cli import app


def test_quantize_builds_measures_and_records_variants(monkeypatch, tmp_path):
    db = tmp_path / "metrics.duckdb"
    monkeypatch.setenv("WEBACCEL_METRICS_DB", str(db))
    result = CliRunner().invoke(app, ["models", "quantize", "minilm", "-p", "int8", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["precision"]: r for r in json.loads(result.output.strip().splitlines()[-1])}
    assert rows["fp32"]["ratio_to_fp32"] == 1.0
    assert rows["int8"]["ratio_to_fp32"] < 0.3  # a real int8 file: ~23 MB of ~90 MB
    assert 0.95 < rows["int8"]["accuracy"] < 1.0  # measured, not assumed
    with duckdb.connect(str(db), read_only=True) as con:
        got = con.execute("SELECT variant, bytes FROM variants WHERE model = 'minilm'").fetchall()
    assert {v for v, _ in got} >= {"fp32", "int8"}


def test_models_list_and_unknown_model():
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0
    assert {"minilm", "nsfw-cnn", "vit-saliency", "smollm2"} <= {m["name"] for m in
                                                                 json.loads(listed.output)}
    missing = runner.invoke(app, ["models", "show", "nope"])
    assert missing.exit_code == 2 and "MODEL_NOT_FOUND" in missing.output


def _relu_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_models_show_json_lists_each_variant_with_bytes_and_measured_accuracy(
    monkeypatch, tmp_path
):
    from webaccel.metrics.store import MetricsStore
    from webaccel.models import registry

    monkeypatch.setenv("WEBACCEL_HOME", str(tmp_path / "home"))
    db = tmp_path / "metrics.duckdb"
    monkeypatch.setenv("WEBACCEL_METRICS_DB", str(db))
    _relu_onnx(tmp_path / "relu.onnx")
    spec = registry.register_onnx("show-relu", tmp_path / "relu.onnx", task="vision")
    fp32 = spec.ensure_onnx("fp32")
    size = fp32.stat().st_size
    store = MetricsStore(db)
    store.record_variant("show-relu", "fp32", nbytes=size, metric="cosine", accuracy=1.0,
                         latency_ms=0.1)
    store.record_variant("show-relu", "fp32", nbytes=size + 1, metric="cosine", accuracy=0.5)
    store.close()
    result = CliRunner().invoke(app, ["models", "show", "show-relu", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    (variant,) = info["variants"]
    assert variant["precision"] == "fp32" and variant["path"] == str(fp32)
    assert variant["bytes"] == size
    # the measurement of this very file (same size), not of another build
    assert variant["accuracy"]["metric"] == "cosine" and variant["accuracy"]["mean"] == 1.0
    human = CliRunner().invoke(app, ["models", "show", "show-relu"])
    assert human.exit_code == 0 and str(fp32) in human.output  # not cut: output is not a tty
    assert "cosine 1.0000" in human.output


def test_models_prepare_builds_a_multi_graph_model_and_prints_each_part():
    result = CliRunner().invoke(app, ["models", "prepare", "whisper-tiny-en"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert any(" encoder: " in line and line.rstrip().endswith("MB)") or "encoder" in line
               for line in lines)
    assert any("decoder" in line for line in lines)
    assert "internal" not in result.output
    # built, so listed as prepared (it has no model.onnx, which was all `list` looked for)
    listed = CliRunner().invoke(app, ["models", "list", "--json"])
    assert {m["name"]: m["prepared"] for m in json.loads(listed.output)}["whisper-tiny-en"]


def test_prepare_accepts_transformers_js_dtypes_and_says_which_variant():
    bad = CliRunner().invoke(app, ["models", "prepare", "minilm", "--precision", "q2"])
    assert bad.exit_code == 2
    assert "q8 -> int8" in bad.output and "q4f16 -> int4" in bad.output
