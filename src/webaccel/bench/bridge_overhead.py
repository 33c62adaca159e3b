"""``bridge-overhead``: what the SDK adds on top of the page's own inference time.

MiniLM, batch 1, wasm.  After a warm-up long enough for V8 to tier the WASM up
(docs/FACTS.md: latency falls ~9x over the first ~15 runs), each repeat times one
``WebAccelerator.accelerate`` call from the caller's thread (tokenize, encode
the frame, WebSocket both ways, decode, pool) and reads the page's own
``session.run`` time from the same result.
"""

from __future__ import annotations

import time

from webaccel.bench.core import BenchContext, Measurement, benchmark, summarize

SENTENCE = "The quick brown fox jumps over the lazy dog."


@benchmark(
    "bridge-overhead",
    ratio_is="SDK round trip / in-page inference time, MiniLM batch 1",
    better="lower",
)
def bridge_overhead(ctx: BenchContext) -> Measurement:
    from webaccel.api import WebAccelerator

    with WebAccelerator(max_connections=1, default_platform="wasm") as acc:
        for _ in range(max(ctx.warmup, 20)):
            acc.accelerate("minilm", SENTENCE)
        sdk_ms: list[float] = []
        page_ms: list[float] = []
        bridge_ms: list[float] = []
        parts: dict[str, list[float]] = {"page_outside_run": [], "wire": [], "python": [],
                                         "sdk_thread": []}
        for _ in range(ctx.repeat):
            start = time.perf_counter()
            result = acc.accelerate("minilm", SENTENCE)
            took = (time.perf_counter() - start) * 1000
            sdk_ms.append(took)
            page_ms.append(result["page_ms"])
            bridge_ms.append(result["round_trip_ms"])
            handle = result.get("page_handle_ms")
            if handle is not None:  # where the time outside session.run goes
                parts["page_outside_run"].append(handle - result["page_ms"])
                parts["wire"].append(result["round_trip_ms"] - handle)
                parts["python"].append(result["latency_ms"] - result["round_trip_ms"])
                parts["sdk_thread"].append(took - result["latency_ms"])
        browser = result["user_agent"]
    sdk, page = summarize(sdk_ms), summarize(page_ms)
    return Measurement(
        ratio=sdk["median"] / page["median"],
        figures={
            "sdk_round_trip_ms": sdk,
            "in_page_ms": page,
            "bridge_round_trip_ms": summarize(bridge_ms),
            "overhead_ms_median": sdk["median"] - page["median"],
            # medians: the page outside session.run (decode, queue, encode); the wire
            # (WebSocket both ways, framing, browser IPC); the engine and pool in
            # Python; the SDK's hop to its event-loop thread and back
            "overhead_parts_ms": {k: summarize(v)["median"] for k, v in parts.items() if v},
            "backend": "wasm",
            "batch": 1,
            "warmup_runs": max(ctx.warmup, 20),
            "browser": browser,
        },
    )
