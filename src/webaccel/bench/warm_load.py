"""``warm-load``: cold model load over the network / warm load from the browser cache by CID.

Headless Chromium (Debian's, flags from docs/FACTS.md) opens a page from a local
webaccel gateway that loads a model file by CID with
``webaccel/content/web/cidfetch.mjs`` (bundled by esbuild):

* cold: the page evicts the CID from its store, fetches every raw block from
  the gateway, verifies each against its CID in the page (WebCrypto sha2-256)
  and keeps the assembled, verified bytes in OPFS (or the Cache API);
* warm: the browser is restarted on the same profile (a page restart and a
  browser restart) and the page loads the same CID from that store; the
  gateway must see no ``/ipfs`` request at all, or the run fails.

Both times are measured in the page (``performance.now()``), from the call to
bytes in hand; the page then hashes the bytes and Python checks them against
the file.  Each page opens its store first, as the worker page does at boot
(``prepareStore``: start the OPFS reader worker, open the folder), before a
load is asked for; that time is reported apart as ``store_open_ms``.  Each page
also loads the CID a second time (reported as ``warm_same_page_ms``); the ratio
uses the first load after the browser restart.  Session creation in
onnxruntime-web is the same either way and not included.
Ratio: median(cold) / median(warm).

Options: ``path`` (a model file; default a seeded random 32 MiB
``model.onnx``), ``size_mib`` (32), ``profile`` (unixfs-v1-2025), ``store``
(``auto`` = OPFS if present, ``opfs``, ``cache-api``), ``repeat`` (default 3,
capped by ``ctx.repeat``), ``concurrency`` (16 block requests in flight).
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from webaccel.bench.core import (
    BenchContext,
    BenchmarkUnavailable,
    Measurement,
    benchmark,
    summarize,
)

CHROMIUM = "/usr/lib/chromium/chromium"
FLAGS = ["--headless", "--no-sandbox", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]


def _app(store: Any, bundle: Path, results: queue.Queue[dict[str, Any]],
         counter: dict[str, int]) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    from webaccel.content.gateway import gateway_routes
    from webaccel.content.webassets import WEB_DIR

    async def page(request: Request) -> Response:
        return FileResponse(WEB_DIR / "loadbench.html", media_type="text/html")

    async def js(request: Request) -> Response:
        return FileResponse(bundle, media_type="text/javascript")

    async def result(request: Request) -> Response:
        results.put(json.loads(await request.body()))
        return Response(status_code=204)

    inner = Starlette(routes=[*gateway_routes(store), Route("/bench/page.html", page),
                              Route("/bench/cidfetch.bundle.mjs", js),
                              Route("/bench/result", result, methods=["POST"])])

    async def counting(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/ipfs/"):
            counter["ipfs"] += 1
        await inner(scope, receive, send)

    return counting


def _visit(url: str, profile_dir: Path, results: queue.Queue[dict[str, Any]],
           timeout: float = 180) -> dict[str, Any]:
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile_dir}", url],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        return results.get(timeout=timeout)
    except queue.Empty as exc:
        raise RuntimeError(f"the page did not report within {timeout:.0f} s") from exc
    finally:
        proc.send_signal(signal.SIGTERM)  # a clean exit keeps the Cache API on disk
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@benchmark("warm-load", ratio_is="cold load over the network / warm load from the browser "
           "cache by CID (in-page, verified)", better="higher")
def run(ctx: BenchContext) -> Measurement:
    from webaccel import paths
    from webaccel.bench.import_speed import _write
    from webaccel.content.add import add_path
    from webaccel.content.store import BlockStore
    from webaccel.content.testing import serve_in_thread
    from webaccel.content.webassets import build_bundle

    if not Path(CHROMIUM).exists():
        raise BenchmarkUnavailable(f"{CHROMIUM} missing: apt-get install chromium")
    repeat = int(ctx.options.get("repeat", min(ctx.repeat, 3)))
    profile = str(ctx.options.get("profile", "unixfs-v1-2025"))
    concurrency = int(ctx.options.get("concurrency", 16))
    store_kind = str(ctx.options.get("store", "auto"))
    with tempfile.TemporaryDirectory(dir=paths.subdir("tmp")) as tmp:
        t = Path(tmp)
        try:
            bundle = build_bundle(t / "web")
        except Exception as exc:
            raise BenchmarkUnavailable(f"cannot bundle the page loader: {exc}") from exc
        model = Path(ctx.options["path"]) if "path" in ctx.options else t / "model.onnx"
        if "path" not in ctx.options:
            _write(model, int(ctx.options.get("size_mib", 32)) << 20, seed=32)
        want = hashlib.sha256(model.read_bytes()).hexdigest()
        store = BlockStore(t / "store", fsync=False)
        cid = str(add_path(model, profile, store=store))
        results: queue.Queue[dict[str, Any]] = queue.Queue()
        counter = {"ipfs": 0}
        srv = serve_in_thread(_app(store, bundle, results, counter))
        cold_ms: list[float] = []
        warm_ms: list[float] = []
        same_page_ms: list[float] = []
        open_ms: list[float] = []
        last: dict[str, Any] = {}
        try:
            for i in range(repeat):
                prof_dir = t / f"chromium-{i}"
                for phase in ("cold", "warm"):
                    before = counter["ipfs"]
                    url = (f"{srv.url}/bench/page.html?cid={cid}&phase={phase}"
                           f"&concurrency={concurrency}&store={store_kind}")
                    r = _visit(url, prof_dir, results)
                    if "error" in r:
                        raise RuntimeError(f"{phase} load failed in the page: {r['error']}")
                    if r["sha256"] != want:
                        raise RuntimeError(f"{phase} load returned different bytes")
                    requests = counter["ipfs"] - before
                    if phase == "warm" and (r["source"] != "cache" or requests):
                        raise RuntimeError(f"warm load went to the network ({requests} requests)")
                    if phase == "cold" and r["source"] != "network":
                        raise RuntimeError("cold load did not use the network")
                    (cold_ms if phase == "cold" else warm_ms).append(float(r["ms"]))
                    if phase == "warm" and r.get("store_open_ms") is not None:
                        open_ms.append(float(r["store_open_ms"]))
                    if r.get("again_source") == "cache":
                        same_page_ms.append(float(r["again_ms"]))
                    last[phase] = {**r, "gateway_requests": requests}
                shutil.rmtree(prof_dir, ignore_errors=True)
        finally:
            srv.stop()
    cold, warm = summarize(cold_ms), summarize(warm_ms)
    size = last["cold"]["bytes"]
    return Measurement(
        ratio=cold["median"] / warm["median"],
        figures={
            "bytes": size, "cid": cid, "profile": profile, "blocks": last["cold"]["blocks"],
            "cold_ms": cold, "warm_ms": warm,
            # a second load in the same page, storage already open: steady state
            "warm_same_page_ms": summarize(same_page_ms) if same_page_ms else None,
            "cold_verified_mb_per_s": size / 1e3 / cold["median"],
            "warm_mb_per_s": size / 1e3 / warm["median"],
            "warm_gateway_requests": last["warm"]["gateway_requests"],
            # the last warm load's steps in the store (open the folder, read the file)
            "warm_timing": last["warm"].get("timing"),
            "warm_same_page_timing": last["warm"].get("again_timing"),
            # the page's boot-time store open, not in warm_ms (see above)
            "warm_store_open_ms": summarize(open_ms) if open_ms else None,
            "cold_gateway_requests": last["cold"]["gateway_requests"],
            "browser": "chromium headless (restarted between cold and warm, same profile)",
            "cache": last["warm"].get("store"),
        },
    )
