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
