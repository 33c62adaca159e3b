"""The pool measures its workers' memory and records recoveries (fake workers, an injected
probe); :mod:`webaccel.pool.memory` on real processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import numpy as np
import psutil

from webaccel.pool import FakeLauncher, ResolvedModel, ResourcePool, StaticResolver
from webaccel.pool.memory import process_tree_rss, worker_rss
from webaccel.pool.transport import ModelRef

from .test_pool import until

MB = 1_000_000
RESOLVER = StaticResolver(
    {
        "emb": ResolvedModel(
            "emb", "text_embedding", (ModelRef(key="emb:wasm", name="emb", url="/m/emb"),)
        )
    }
)


class Sink:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("record_"):
            raise AttributeError(name)
        return lambda *a, **k: self.calls.append((name, a, k))

    def of(self, name: str) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
        return [(a, k) for n, a, k in self.calls if n == name]


def grows_with_models(w: Any) -> int | None:
    """A browser of 200 MB that takes 90 MB more per model it holds."""
    return 200 * MB + 90 * MB * len(w.loaded)


def make_pool(launcher: FakeLauncher, sink: Sink, **kw: Any) -> ResourcePool:
    kw.setdefault("heartbeat_interval", 0.01)
    return ResourcePool(
        launcher=launcher,
        resolver=RESOLVER,
        metrics=sink,
        max_connections=1,
        adaptive_scaling=False,
        launchable=list(launcher.families),
        connection_timeout=2.0,
        **kw,
    )


def x(i: float) -> dict[str, np.ndarray]:
    return {"x": np.full((1, 3), i, dtype=np.float32)}


async def test_a_load_records_the_workers_rss_growth_and_a_memory_sample() -> None:
    sink = Sink()
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(
        launcher, sink, memory_probe=grows_with_models, memory_interval=0
    ) as pool:
        await pool.run_inference("emb", x(1))
        await pool.run_inference("emb", x(2))  # resident: no second load
        (w,) = launcher.workers
        assert pool.stats()["memory"][w.id]["peak_rss_bytes"] == 290 * MB
    ((args, load),) = sink.of("record_model_load")
    assert args == ("emb",) and load["rss_delta_bytes"] == 90 * MB
    ((margs, mem),) = sink.of("record_worker_memory")
    assert margs == (w.id, "chromium")
    assert mem == {"rss_bytes": 290 * MB, "resident": ["emb:wasm"], "trigger": "load"}


async def test_the_heartbeat_samples_memory_every_interval() -> None:
    sink = Sink()
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(
        launcher, sink, memory_probe=grows_with_models, memory_interval=0.03
    ) as pool:
        await until(lambda: len(sink.of("record_worker_memory")) >= 3)
        (w,) = launcher.workers
        m = pool.stats()["memory"][w.id]
        assert m["rss_bytes"] == m["peak_rss_bytes"] == 200 * MB and m["samples"] >= 3
    samples = sink.of("record_worker_memory")
    assert {k["trigger"] for _, k in samples} == {"interval"}
    assert {k["rss_bytes"] for _, k in samples} == {200 * MB}


async def test_a_worker_with_nothing_to_measure_is_recorded_once_as_not_measured() -> None:
    # FakeWorkers, like joined browsers, have no local process: the default probe says None.
    sink = Sink()
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, sink, memory_interval=0.02) as pool:
        await pool.run_inference("emb", x(1))
        await asyncio.sleep(0.15)  # several sampling intervals
        (w,) = launcher.workers
        assert pool.stats()["memory"][w.id] == {"rss_bytes": None, "why": "not measured"}
    ((args, mem),) = sink.of("record_worker_memory")
    assert args == (w.id, "chromium") and mem["rss_bytes"] is None
    ((_, load),) = sink.of("record_model_load")
    assert load["rss_delta_bytes"] is None


async def test_a_failing_probe_neither_fails_loads_nor_stops_the_heartbeat() -> None:
    def broken(w: Any) -> int | None:
        raise RuntimeError("no /proc here")

    sink = Sink()
    launcher = FakeLauncher({"chromium": {}})
    async with make_pool(launcher, sink, memory_probe=broken, memory_interval=0.02) as pool:
        r = await pool.run_inference("emb", x(3))
        assert r.outputs["y"][0, 0] == 6
        launcher.workers[0].kill()  # still noticed by the heartbeat
        await until(lambda: len(launcher.workers) == 2 and len(pool.workers) == 1)


async def test_a_recovery_is_recorded_with_the_lost_and_the_new_worker() -> None:
    sink = Sink()
    launcher = FakeLauncher({"chromium": {"manual": True}})
    async with make_pool(launcher, sink, memory_interval=0) as pool:
        task = asyncio.create_task(pool.run_inference("emb", x(1)))
        await until(lambda: bool(launcher.workers[0].pending))
        lost = launcher.workers[0]
        lost.kill()
        await until(lambda: len(launcher.workers) == 2 and bool(launcher.workers[1].pending))
        launcher.workers[1].release()
        await task
        seconds = pool.stats()["recovery_s"]
    ((args, rec),) = sink.of("record_recovery")
    assert args == (seconds[0],) and seconds[0] > 0
    assert rec["lost_worker_id"] == lost.id and rec["worker_id"] == launcher.workers[1].id
    assert rec["browser"] == "chromium" and "killed" in rec["reason"]


def test_process_tree_rss_sums_a_process_and_its_children() -> None:
    # The child says when its interpreter is up: right after exec its RSS can be < 1 MB
    # (CI saw 0.25 MB), which made this test flaky.
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
        stdout=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"up\n"
        own = psutil.Process().memory_info().rss
        assert process_tree_rss(os.getpid()) >= own + 1 * MB  # a started Python is > 1 MB
        worker = SimpleNamespace(process=SimpleNamespace(pid=child.pid, returncode=None))
        rss = worker_rss(worker)
        assert rss is not None and rss > 1 * MB
    finally:
        child.kill()
        child.wait()
    exited = SimpleNamespace(process=SimpleNamespace(pid=child.pid, returncode=-9))
    assert worker_rss(exited) is None
    assert worker_rss(SimpleNamespace(process=None)) is None  # a joined browser
    assert worker_rss(object()) is None
    assert process_tree_rss(child.pid) is None  # reaped: no such process
