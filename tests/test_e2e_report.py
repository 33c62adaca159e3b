"""Every kind of request is pool work, so every kind is in the record: after a
transcription and a generation through the Python API, the DuckDB store, the
live figures and ``webaccel report`` show them per model and backend."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_transcription_and_generation_reach_the_report(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from webaccel.api import WebAccelerator
    from webaccel.generation.testing import tiny_llama_spec
    from webaccel.metrics.report import build_report
    from webaccel.models import whisper

    tiny_llama_spec("tiny-llama")
    db = tmp_path / "metrics.duckdb"
    with WebAccelerator(max_connections=1, metrics=db) as acc:
        said = acc.accelerate("whisper-tiny-en", str(whisper.beckett_wav()), {"timeout": 600})
        made = acc.generate("tiny-llama", "Once upon a time", max_tokens=12, return_result=True)
        live = acc.get_metrics()["generations"]["models"]
    assert said["text"].startswith("Ever tried")
    assert live["whisper-tiny-en"]["generations"] == 1
    assert live["whisper-tiny-en"]["completion_tokens"] == len(said["tokens"])
    assert live["tiny-llama"]["completion_tokens"] == len(made.token_ids)
    assert live["tiny-llama"]["avg_ttft_ms"] > 0
    rep = build_report(db, tmp_path / "report")
    md = rep.markdown.read_text()
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert any(r.startswith(f"| whisper-tiny-en | {said['backend']} |") for r in rows), md
    assert any(r.startswith(f"| tiny-llama | {made.backend} |") for r in rows), md
    assert "generation" in rep.plots
