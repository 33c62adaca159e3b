from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from webaccel.bench.runner import run_benchmarks
from webaccel.metrics import plots
from webaccel.metrics.report import NO_DATA, _fmt, build_report
from webaccel.metrics.store import MetricsStore

from . import toybench
from .conftest import scientific


def _seed(db_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """A real DuckDB file with every kind of record (test data, written through the store)."""
    rng = np.random.default_rng(7)
    lat: dict[tuple[str, str], list[float]] = {}
    with MetricsStore(db_path) as store:
        for workers in (1, 2, 4):
            store.record_run_start("server", info={"workers": workers})
            for w in range(workers):
                store.record_worker(f"w{w}", "chromium", version="156.0.8078.108",
                                    backends=["wasm", "webgpu"],
                                    adapter={"vendor": "google", "architecture": "swiftshader"},
                                    is_fallback=True)
            for i in range(40):
                for backend, precision, base in (("wasm", "fp32", 17.0), ("wasm", "int8", 11.0),
                                                 ("webgpu", "fp16", 45.0)):
                    ms = float(base * rng.uniform(0.8, 1.3))
                    lat.setdefault((backend, precision), []).append(ms)
                    store.record_inference("minilm", round_trip_ms=ms, worker_id=f"w{i % workers}",
                                           browser="chromium", backend=backend,
                                           precision=precision, batch=4, page_ms=ms * 0.8,
                                           queue_wait_ms=0.2)
            store.record_inference("minilm", round_trip_ms=30000.0, backend="wasm",
                                   error_code="TIMEOUT")
        for i in range(6):
            store.record_generation("smollm2", task="text_generation", worker_id="w0",
                                    backend="webgpu", prompt_tokens=14, completion_tokens=33,
                                    ttft_ms=120.0 + 10 * i, total_ms=920.0 + 10 * i,
                                    finish_reason="stop")
        loads: dict[str, list[float]] = {}
        for _ in range(6):
            for tier, base in (("network", 900.0), ("browser-cache", 40.0), ("disk", 120.0)):
                ms = float(base * rng.uniform(0.9, 1.2))
                loads.setdefault(tier, []).append(ms)
                store.record_model_load("minilm", ms=ms, tier=tier, nbytes=90_000_000,
                                        variant="fp32", backend="wasm", cid="bafyminilm")
        for i in range(20):
            store.record_fetch(f"bafyblock{i}", nbytes=262_144, ms=2.0,
                               tier="memory" if i % 4 else "peer", peer="http://peer")
        for variant, size, acc in (("fp32", 90_900_000, 1.0), ("fp16", 45_700_000, 0.99999),
                                   ("int8", 23_000_000, 0.988), ("int4", 14_700_000, 0.948)):
            store.record_variant("minilm", variant, nbytes=size, metric="cosine", accuracy=acc)
        toybench.install(monkeypatch)
        toybench.install(monkeypatch, "toy-unavailable", toybench.unavailable)
        bench = list(run_benchmarks([toybench.NAME, "toy-unavailable"], repeat=5, warmup=1,
                                    store=store))
    return {"lat": lat, "loads": loads, "bench": bench}


def test_report_from_a_seeded_store(db_path: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    seeded = _seed(db_path, monkeypatch)
    out = tmp_path / "report"
    rep = build_report(db_path, out)
    assert set(rep.plots) == {"benchmarks", "latency", "generation", "throughput", "loads",
                              "variants"}
    for p in rep.plots.values():
        with Image.open(p) as img:
            assert img.format == "PNG" and img.width >= 500 and img.height >= 200
    keep = os.environ.get("WEBACCEL_TEST_SHOT_DIR")
    if keep:
        shutil.copytree(out, Path(keep) / "report", dirs_exist_ok=True)
    md = rep.markdown.read_text()
    page = rep.html.read_text()
    for p in rep.plots.values():
        rel = p.relative_to(out).as_posix()
        assert f"]({rel})" in md and f"src='{rel}'" in page
    # The numbers in the report are the store's: medians computed independently here.
    lat = seeded["lat"]
    for (backend, precision), values in lat.items():  # type: ignore[attr-defined]
        expected = _fmt(float(np.median(values)))
        row = next(line for line in md.splitlines()
                   if line.startswith(f"| minilm | {backend} | {precision} |"))
        assert f"| {expected} |" in row, (row, expected)
    for tier, values in seeded["loads"].items():  # type: ignore[attr-defined]
        row = next(line for line in md.splitlines() if line.startswith(f"| {tier} | 6 |"))
        assert f"| {_fmt(float(np.median(values)))} |" in row
    toy = seeded["bench"][0]  # type: ignore[index]
    assert f"| toy-sum | {_fmt(toy['ratio'])} |" in md
    assert "unavailable: needs a GPU adapter" in md
    assert "failed inferences: TIMEOUT × 3" in md
    assert "| int4 | 14.7 | cosine | 0.948000 |" in md
    # Efficiency: 18 loads of 90 MB, 6 of them over the network; 5 of 20 fetches from a peer.
    assert "minilm: 18 loads moved 540.0 MB over the network with caching, vs 1,620.0 MB" in md
    assert "(66.7 % saved)" in md
    assert "| block fetches | peer | no | 5 | 25.0 % |" in md
    assert "| model loads | network | no | 6 | 33.3 % | 540.0 |" in md
    assert "| model loads served by a cache | 66.7 % | 12 of 18 |" in md
    # The 4-worker run: 120 of 121 inferences and all 6 generations served, 4 connections.
    assert "| 4 | 126 | 31.5 |" in md
    assert "google swiftshader" in md
    # 6 streams of 14 + 33 tokens, TTFT 120..170 ms, 32 tokens in 0.8 s each: 40 tokens/s.
    assert "| smollm2 | webgpu | text_generation | 6 | 84 | 198 | 145.0 | 167.5 | 40.0 | 0 | 0 |" \
        in md
    assert NO_DATA not in md and NO_DATA not in page
    assert rep.data["throughput"] and {t["workers"] for t in rep.data["throughput"]} == {1, 2, 4}


def test_report_on_an_empty_store_says_no_data(db_path: Path, tmp_path: Path) -> None:
    MetricsStore(db_path).close()
    rep = build_report(db_path, tmp_path / "r")
    assert rep.plots == {}
    md = rep.markdown.read_text()
    assert md.count(f"_{NO_DATA}_") == len(rep.sections) == 8
    assert rep.html.read_text().count(NO_DATA) == 8
    assert not list((tmp_path / "r" / "plots").iterdir())


def test_report_on_a_missing_file_creates_nothing_surprising(home: Path, tmp_path: Path) -> None:
    rep = build_report(None, tmp_path / "r")  # default path under $WEBACCEL_HOME
    assert rep.plots == {} and NO_DATA in rep.markdown.read_text()


def test_every_plot_writes_plain_numbers(tmp_path: Path, plot_texts: list[list[str]]) -> None:
    """Wide or tight ranges never produce 1.08e+03, 10^3 or offset (+9.99e-1) labels."""
    lat = [{"model": "m", "backend": b, "precision": "fp32", "n": 5, "p10": p50 * 0.9,
            "p50": p50, "p90": p50 * 1.1} for b, p50 in (("wasm", 2.0), ("webgpu", 45_000.0))]
    plots.latency_by_backend(lat, tmp_path / "lat.png")
    loads = [{"tier": t, "n": 6, "p10": p * 0.9, "p50": p, "p90": p * 1.1}
             for t, p in (("memory", 12.0), ("network", 1080.0))]
    plots.load_time_by_tier(loads, tmp_path / "loads.png")
    plots.benchmark_ratios([{"benchmark": "a", "ratio": 0.004, "better": "lower"},
                            {"benchmark": "b", "ratio": 1500.0, "better": "higher"}],
                           tmp_path / "bench.png")
    plots.accuracy_vs_size([{"model": "m", "variant": v, "bytes": n, "accuracy": a,
                             "metric": "cosine"}
                            for v, n, a in (("fp32", 90_900_000, 1.0),
                                            ("fp16", 45_700_000, 0.99999))],
                           tmp_path / "acc.png")
    plots.throughput_vs_workers([{"workers": 1, "throughput": 125_000.0},
                                 {"workers": 4, "throughput": 480_000.0}], {},
                                tmp_path / "tput.png")
    lat_t, load_t, bench_t, acc_t, tput_t = plot_texts
    assert "45,000" in lat_t and "1,080 ms\nn=6" in load_t
    assert "1,500× (higher is better)" in bench_t and "0.004× (lower is better)" in bench_t
    assert "0.999950" in acc_t and "400,000" in tput_t
    for texts in plot_texts:
        assert scientific(texts) == [], texts


def test_report_shows_the_corpus_systems_side_by_side(db_path: Path, tmp_path: Path,
                                                      plot_texts: list[list[str]]) -> None:
    rate = {"median": 61.5, "p10": 60.0, "p90": 63.0, "min": 60.0, "max": 63.0, "n": 2}
    figures = {
        "webaccel": {"embeddings_per_s": rate, "workers": 2, "threads_per_worker": 1,
                     "slots_per_worker": 2, "backend": "wasm",
                     "worst_cosine_vs_sentence_transformers": 0.99999},
        "transformers.js": {"embeddings_per_s": dict(rate, median=30.5, p10=29.0, p90=31.0),
                            "threads": 2, "device": "wasm",
                            "worst_cosine_vs_sentence_transformers": 0.9912},
        "sentence-transformers": {"embeddings_per_s": dict(rate, median=1234.5, p10=1200.0,
                                                           p90=1300.0),
                                  "threads": 2},
    }
    with MetricsStore(db_path) as store:
        store.record_benchmark({"benchmark": "corpus", "ratio": 61.5 / 30.5,
                                "ratio_is": "webaccel / transformers.js", "figures": figures,
                                "versions": {"transformers.js": "4.3.2", "torch": "2.13.0",
                                             "sentence-transformers": "6.3.0"}},
                               better="higher")
    rep = build_report(db_path, tmp_path / "r")
    assert "corpus" in rep.plots
    md = rep.markdown.read_text()
    assert "| webaccel | 61.5 | 60.0 | 63.0 | 2 workers x 1 thread, 2 in flight, wasm" in md
    assert "| transformers.js | 30.5 | 29.0 | 31.0 | 2 threads, wasm, 4.3.2 | 0.9912 |" in md
    st_row = ("| sentence-transformers | 1,234.5 | 1,200.0 | 1,300.0 "
              "| 2 threads, torch 2.13.0, 6.3.0 |")
    assert st_row in md
    corpus_texts = next(t for t in plot_texts if any("Embedding a corpus" in x for x in t))
    assert any("1,234" in x for x in corpus_texts) and not scientific(corpus_texts)


def test_report_shows_the_latest_soak_with_memory_over_time(db_path: Path, tmp_path: Path,
                                                            plot_texts: list[list[str]]) -> None:
    figures = {"minutes": 10.0, "sent": 4356, "correct": 4356, "lost": 0, "wrong": 0,
               "kills_at_s": [60.9, 120.9], "recovery_s": [2.99, 8.35],
               "by_kind": {"embedding": {"latency_ms": {"p99": 2000.9}},
                           "chat": {"latency_ms": {"p99": 2093.4}}},
               "peak_rss_mb": 3154.9, "memory_mb": [[0.9, 2289.3], [60.0, 3154.9], [61.5, 1900.0]]}
    with MetricsStore(db_path) as store:
        store.record_benchmark({"benchmark": "soak", "ratio": 1.0,
                                "ratio_is": "correct / sent", "figures": figures},
                               better="higher")
    rep = build_report(db_path, tmp_path / "r")
    assert "soak" in rep.plots
    md = rep.markdown.read_text()
    assert "| 10.0 | 4,356 | 4,356 | 0 | 0 | 2 | 8.35 | 2,000.9 | 2,093.4 | 3,154.9 |" in md
    soak_texts = next(t for t in plot_texts if any("Soak" in x for x in t))
    assert any("4,356 sent, 0 lost, 0 wrong" in x for x in soak_texts)
    assert not scientific(soak_texts)
