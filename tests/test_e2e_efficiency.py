"""Resource efficiency from real records: MiniLM through one real browser worker, then
``get_metrics()["efficiency"]``, the DuckDB rows and ``webaccel report`` say what that
browser took in memory, what the model added, and how the one connection was reused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.browser

CALLS: list[str | list[str]] = [["a", "b"], "c", ["d", "e", "f"], "g", "h"]


def test_minilm_efficiency_figures_from_a_real_worker(tmp_path: Path) -> None:
    from webaccel.api import WebAccelerator
    from webaccel.metrics.report import build_report
    from webaccel.metrics.store import read_query

    db = tmp_path / "metrics.duckdb"
    with WebAccelerator(max_connections=1, metrics=db) as acc:
        for texts in CALLS:
            out = acc.accelerate("minilm", texts, platform="wasm")
            assert out["embeddings"].shape[0] == (len(texts) if isinstance(texts, list) else 1)
        # The trustless gateway's reads are counted by tier too (the page read none:
        # its browser cache had the model). Block stores read their own blocks locally.
        model = acc._loop.run(acc._engine.pool.resolve("minilm"))
        cid = next(v.cid for v in model.variants if v.cid)  # registry models travel by CID
        r = httpx.get(f"{acc.server_url}/ipfs/{cid}?format=raw", timeout=30)
        assert r.status_code == 200 and r.content
        m = acc.get_metrics()
    e = m["efficiency"]
    assert e["cache"]["fetches"]["reads"] >= 1, e["cache"]
    print("efficiency:", e)  # the figures this run saw (pytest -s)
    (wid,) = m["pool"]["memory"] or [None]  # the one worker, still alive at the end
    workers = e["memory"]["workers"]
    assert list(workers) == [wid]
    w = workers[wid]
    assert w["measured"] and w["browser"] == "chromium"
    assert w["peak_rss_bytes"] > 50_000_000  # a headless Chromium with a model is >> 50 MB
    minilm = e["memory"]["models"]["minilm"]
    assert minilm["loads_measured"] >= 1 and minilm["max_rss_growth_bytes"] > 0
    assert e["connections"]["opened"] == 1
    assert e["connections"]["requests_served"] == len(CALLS)
    assert e["connections"]["requests_per_connection"] >= len(CALLS)
    assert e["errors"] == {"requests": len(CALLS), "errors": 0, "error_rate": 0.0}
    rows = sum(len(t) if isinstance(t, list) else 1 for t in CALLS)
    assert (m["aggregate"]["inferences"], m["aggregate"]["items"]) == (len(CALLS), rows)
    # The same figures are rows in the file.
    mem = read_query(db, "SELECT rss_bytes, trigger FROM worker_memory WHERE worker_id = ?",
                     [wid])
    assert any(x["trigger"] == "load" and x["rss_bytes"] > 0 for x in mem), mem
    assert max(x["rss_bytes"] for x in mem) == w["peak_rss_bytes"]
    loads = read_query(db, "SELECT rss_delta_bytes FROM model_loads WHERE model = 'minilm'")
    assert max(x["rss_delta_bytes"] for x in loads) == minilm["max_rss_growth_bytes"]
    rep = build_report(db, tmp_path / "report")
    md = rep.markdown.read_text()
    section = md.split("## Resource efficiency\n", 1)[1].split("\n## ", 1)[0]
    assert f"| {wid} | chromium | " in section
    assert "| minilm | " in section and "| browser connections opened | 1 |" in section
    assert "efficiency" in rep.plots
