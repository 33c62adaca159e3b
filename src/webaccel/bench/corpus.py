"""``corpus``: embed 2,000 real sentences -- webaccel against what users would pick instead.

Three systems on the same sentences (:mod:`webaccel.bench.sentences`), MiniLM
fp32, this machine's cores, measured back to back in one run:

* **webaccel**: its default pool through the public API,
  ``WebAccelerator().accelerate("minilm", sentences)`` (one call, the whole list).
* **transformers.js** (npm ``@huggingface/transformers``) in the same Chromium,
  served from a loopback server of this benchmark (COOP/COEP, so wasm threads
  work) with nothing remote: its ``feature-extraction`` pipeline on wasm, mean
  pooling and normalisation, batches of 32 in corpus order (its API takes a
  list and pads it to the longest; it does not sort).  Its model is webaccel's
  own MiniLM file with the in-graph pooling cut off (transformers.js pools
  ``last_hidden_state`` itself), and the package's tokenizer, with
  ``model_max_length`` = the model's 256 (sentence-transformers' limit).  Every
  thread count from 1 to the core count is tried; the best is the baseline.
* **sentence-transformers** on PyTorch CPU, ``torch.set_num_threads(cores)``,
  ``encode(sentences, batch_size=32)`` (its defaults: sorts by length).

Each system is warmed up (V8 tiers wasm up over the first runs: docs/FACTS.md)
before ``rounds`` timed passes over the whole corpus; the figures are the
median embeddings/s with the spread.  Outputs are compared with
sentence-transformers' (worst cosine over the 2,000 sentences).

Ratio: webaccel embeddings/s / transformers.js embeddings/s (best threads).
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)

N_SENTENCES = 2000
TJS_BATCH = 32
ST_BATCH = 32
VENDOR = Path(__file__).resolve().parent.parent / "web" / "vendor" / "transformers"

EMBED = "([t, b]) => tjsEmbed(t, b)"
CALIBRATION = 256  # sentences each thread count is tried on

PAGE = """<!doctype html><meta charset="utf-8"><title>transformers.js corpus</title>
<link rel="icon" href="data:,">
<script type="module">
import { pipeline, env } from '/tjs/transformers.min.js';
const threads = Number(new URLSearchParams(location.search).get('threads') || 1);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false;
env.backends.onnx.wasm.wasmPaths = '/tjs/';
env.backends.onnx.wasm.numThreads = threads;
let extractor = null;
const opts = { device: 'wasm', dtype: 'fp32' };
const load = async () => extractor
  || (extractor = await pipeline('feature-extraction', 'minilm', opts));
window.tjsInfo = async () => {
  await load();
  return { version: env.version, ort: env.backends.onnx.versions?.web || null,
           threads: env.backends.onnx.wasm.numThreads, isolated: crossOriginIsolated };
};
window.tjsEmbed = async (texts, batch) => {
  await load();
  const parts = [];
  const t0 = performance.now();
  for (let i = 0; i < texts.length; i += batch) {
    const out = await extractor(texts.slice(i, i + batch), { pooling: 'mean', normalize: true });
    parts.push(out.data);
  }
  const ms = performance.now() - t0;
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Float32Array(total);
  let off = 0;
  for (const p of parts) { all.set(p, off); off += p.length; }
  const bytes = new Uint8Array(all.buffer);
  let bin = '';
  for (let i = 0; i < bytes.length; i += 0x8000) {
    bin += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return { ms, b64: btoa(bin) };
};
window.tjsReady = true;
</script>
"""


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _tjs_model_dir(root: Path) -> Path:
    """transformers.js's layout of webaccel's MiniLM: config, tokenizer, onnx/model.onnx
    (the same graph, pooling cut off and its hidden states named ``last_hidden_state``)."""
    import onnx
    from onnx import helper

    from webaccel.models import registry
    from webaccel.models.fusion import strip_mean_pooling
    from webaccel.models.text import max_seq_length, package_dir

    src = registry.get("minilm").ensure_onnx("fp32")
    dest = root / "minilm"
    (dest / "onnx").mkdir(parents=True, exist_ok=True)
    model = onnx.load(str(src))
    split = strip_mean_pooling(model)
    if split is None:
        raise BenchmarkUnavailable(f"{src} has no in-graph pooling to cut off for transformers.js")
    body, hidden = split
    if hidden != "last_hidden_state":
        body.graph.node.append(helper.make_node("Identity", [hidden], ["last_hidden_state"]))
        body.graph.output[0].name = "last_hidden_state"
    onnx.save(body, str(dest / "onnx" / "model.onnx"))
    pkg = package_dir()
    for name in ("config.json", "tokenizer.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copy(pkg / name, dest / name)
    cfg = json.loads((pkg / "tokenizer_config.json").read_text())
    cfg["model_max_length"] = max_seq_length()
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg))
    return dest


class _Handler(http.server.SimpleHTTPRequestHandler):
    routes: dict[str, Path] = {}
    seen: list[str] = []

    def log_message(self, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        self.seen.append(path)
        for prefix, root in self.routes.items():
            if path.startswith(prefix):
                return str(root / path[len(prefix) :])
        return str(Path(self.directory) / "__missing__")

    def guess_type(self, path: Any) -> str:
        p = str(path)
        if p.endswith((".mjs", ".js")):
            return "text/javascript"
        if p.endswith(".wasm"):
            return "application/wasm"
        return super().guess_type(path)


@contextlib.contextmanager
def _server(root: Path, models: Path) -> Iterator[tuple[str, list[str]]]:
    (root / "index.html").write_text(PAGE)
    routes = {"/tjs/": VENDOR, "/models/": models, "/page/": root}
    handler = type("H", (_Handler,), {"routes": routes, "seen": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler.seen  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def _chromium() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise BenchmarkUnavailable(
            "transformers.js is driven through Playwright: pip install 'webaccel[playwright]'"
        ) from exc
    from webaccel.browsers.chromium import chromium_flags, find_chromium

    with tempfile.TemporaryDirectory(prefix="webaccel-tjs-") as prof:
        flags = [
            f
            for f in chromium_flags(Path(prof), webnn=False)
            if not f.startswith("--user-data-dir") and f != "--headless"
        ]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(find_chromium()), args=flags, headless=True
            )
            try:
                yield browser
            finally:
                browser.close()


def _decode(b64: str, n: int) -> np.ndarray:
    return np.frombuffer(base64.b64decode(b64), dtype=np.float32).reshape(n, -1)


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def _timed_passes(run: Callable[[], tuple[float, np.ndarray]], rounds: int, n: int) -> tuple[
    list[float], np.ndarray
]:
    rates: list[float] = []
    emb = np.empty(0)
    for _ in range(rounds):
        seconds, emb = run()
        rates.append(n / seconds)
    return rates, emb


def _transformers_js(
    sentences: list[str], rounds: int, warm: list[str], calibrate: list[str], cores: int
) -> dict[str, Any]:
    if not (VENDOR / "transformers.min.js").is_file():
        raise BenchmarkUnavailable(
            f"transformers.js is not vendored ({VENDOR}); run `make setup` (npm "
            "@huggingface/transformers, copied like onnxruntime-web)"
        )
    version = json.loads((VENDOR / "package.json").read_text())["version"]
    with tempfile.TemporaryDirectory(prefix="webaccel-tjs-site-") as site:
        models = Path(site) / "models"
        _tjs_model_dir(models)
        with _server(Path(site), models) as (url, seen), _chromium() as browser:
            # Each thread count on a calibration slice; the full passes at the best.
            by_threads: dict[int, dict[str, Any]] = {}
            pages: dict[int, Any] = {}
            try:
                for threads in range(1, cores + 1):
                    page = pages[threads] = browser.new_page()
                    page.goto(f"{url}/page/index.html?threads={threads}")
                    page.wait_for_function("window.tjsReady === true", timeout=60_000)
                    info = page.evaluate("tjsInfo()")
                    for _ in range(3):  # load + V8 tier-up
                        page.evaluate(EMBED, [warm, TJS_BATCH])
                    out = page.evaluate(EMBED, [calibrate, TJS_BATCH])
                    rate = len(calibrate) / (out["ms"] / 1000)
                    by_threads[threads] = {"calibration_per_s": rate, "info": info}
                best = max(by_threads, key=lambda t: by_threads[t]["calibration_per_s"])
                for threads, page in list(pages.items()):
                    if threads != best:
                        page.close()
                        del pages[threads]
                page = pages[best]

                def one() -> tuple[float, np.ndarray]:
                    out = page.evaluate(EMBED, [sentences, TJS_BATCH])
                    return out["ms"] / 1000, _decode(out["b64"], len(sentences))

                rates, emb = _timed_passes(one, rounds, len(sentences))
            finally:
                for page in pages.values():
                    page.close()
            user_agent = browser.version
    remote = [p for p in seen if not p.startswith(("/tjs/", "/models/", "/page/"))]
    return {
        "best_threads": best,
        "by_threads": by_threads,
        "rates": rates,
        "emb": emb,
        "info": by_threads[best]["info"],
        "version": version,
        "browser": user_agent,
        "requests_elsewhere": remote,
        "files": sorted({p for p in seen if p.startswith("/tjs/")}),
    }


def _sentence_transformers(
    sentences: list[str], rounds: int, warm: list[str], cores: int
) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import sentence_transformers
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise BenchmarkUnavailable(
            "sentence-transformers is not installed: pip install 'webaccel[export]'"
        ) from exc
    from webaccel.models.text import package_dir

    before = torch.get_num_threads()
    torch.set_num_threads(cores)
    try:
        model = SentenceTransformer(str(package_dir()), device="cpu", local_files_only=True)
        model.encode(warm, batch_size=ST_BATCH)

        def one() -> tuple[float, np.ndarray]:
            t0 = time.perf_counter()
            emb = model.encode(sentences, batch_size=ST_BATCH, convert_to_numpy=True)
            return time.perf_counter() - t0, np.asarray(emb, dtype=np.float32)

        rates, emb = _timed_passes(one, rounds, len(sentences))
    finally:
        torch.set_num_threads(before)
    return {
        "rates": rates,
        "emb": emb,
        "threads": cores,
        "versions": {
            "sentence-transformers": sentence_transformers.__version__,
            "torch": torch.__version__,
        },
    }


def _webaccel(sentences: list[str], rounds: int, warm: list[str]) -> dict[str, Any]:
    from webaccel.api import WebAccelerator

    with WebAccelerator() as acc:
        for _ in range(3):
            acc.accelerate("minilm", warm)
        last: dict[str, Any] = {}

        def one() -> tuple[float, np.ndarray]:
            nonlocal last
            t0 = time.perf_counter()
            last = acc.accelerate("minilm", sentences)
            return time.perf_counter() - t0, np.asarray(last["embeddings"], dtype=np.float32)

        rates, emb = _timed_passes(one, rounds, len(sentences))
        stats = acc.get_metrics()["pool"]
        workers = stats.get("workers", {})
        chosen = stats["settings"]  # what its defaults chose on this machine
        slots, threads = chosen["slots_per_worker"], chosen["threads_per_worker"]
        max_workers = chosen["max_workers"]
    return {
        "rates": rates,
        "emb": emb,
        "backend": last.get("backend"),
        "browser": last.get("user_agent") or last.get("browser"),
        "workers": len(workers),
        "workers_used": len(last.get("workers") or ()),
        "max_workers": max_workers,
        "micro_batches": last.get("micro_batches"),
        "slots_per_worker": slots,
        "threads_per_worker": threads,
    }


@benchmark(
    "corpus",
    ratio_is="embeddings/s on 2,000 real sentences, webaccel / transformers.js (same Chromium)",
    better="higher",
)
def corpus(ctx: BenchContext) -> Measurement:
    from webaccel.bench.sentences import sentences as corpus_sentences

    n = int(ctx.options.get("corpus_sentences", N_SENTENCES))
    rounds = int(ctx.options.get("corpus_rounds", max(1, min(ctx.repeat, 2))))
    sentences, sources = corpus_sentences(n)
    warm = sentences[:: max(1, n // 64)][:64]
    cores = _cores()
    st = _sentence_transformers(sentences, rounds, warm, cores)
    wa = _webaccel(sentences, rounds, warm)
    calibrate = sentences[1 :: max(1, n // CALIBRATION)][:CALIBRATION]
    tjs = _transformers_js(sentences, rounds, warm, calibrate, cores)
    rate = {
        "webaccel": float(np.median(wa["rates"])),
        "transformers.js": float(np.median(tjs["rates"])),
        "sentence-transformers": float(np.median(st["rates"])),
    }
    from webaccel.models.text import _tokenizer

    tokens = [int(sum(e.attention_mask)) for e in _tokenizer().encode_batch(sentences)]
    figures: dict[str, Any] = {
        "embeddings_per_s": rate,
        "webaccel_vs_sentence_transformers": rate["webaccel"] / rate["sentence-transformers"],
        "webaccel": {
            "embeddings_per_s": summarize(wa["rates"]),
            "api": 'WebAccelerator().accelerate("minilm", sentences)',
            "backend": wa["backend"],
            "workers": wa["workers"],
            "workers_used": wa["workers_used"],
            "max_workers": wa["max_workers"],
            "threads_per_worker": wa["threads_per_worker"],
            "slots_per_worker": wa["slots_per_worker"],
            "micro_batches": wa["micro_batches"],
            "worst_cosine_vs_sentence_transformers": _worst_cosine(wa["emb"], st["emb"]),
        },
        "transformers.js": {
            "embeddings_per_s": summarize(tjs["rates"]),
            "threads": tjs["best_threads"],
            "calibration_embeddings_per_s_by_threads": {
                str(t): v["calibration_per_s"] for t, v in tjs["by_threads"].items()
            },
            "calibration_sentences": len(calibrate),
            "batch": TJS_BATCH,
            "device": "wasm",
            "crossOriginIsolated": tjs["info"].get("isolated"),
            "onnxruntime-web": tjs["info"].get("ort"),
            "files_served": tjs["files"],
            "requests_outside_its_files": tjs["requests_elsewhere"],
            "worst_cosine_vs_sentence_transformers": _worst_cosine(tjs["emb"], st["emb"]),
        },
        "sentence-transformers": {
            "embeddings_per_s": summarize(st["rates"]),
            "threads": st["threads"],
            "batch": ST_BATCH,
            "device": "cpu",
        },
        "sentences": n,
        "tokens": {"mean": float(np.mean(tokens)), "p50": float(np.median(tokens)),
                   "max": int(max(tokens)), "total": int(sum(tokens))},
        "sources": sources,
        "rounds": rounds,
        "cores": cores,
        "load_average": list(os.getloadavg()),
        "versions": {
            "transformers.js": tjs["version"],
            "transformers.js-onnxruntime-web": tjs["info"].get("ort"),
            **st["versions"],
        },
    }
    return Measurement(ratio=rate["webaccel"] / rate["transformers.js"], figures=figures)
