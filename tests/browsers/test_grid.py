"""Selenium Grid 4 for real: a hub and two nodes on loopback, the pool serving
through them, and a node SIGKILLed mid-run (docs/FACTS.md: Grid section).

The hub's health check is set long (60 s) on purpose: the pool must notice
the dead node itself, at once, and kill the node's orphaned browsers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

from webaccel.errors import BackendUnavailableError

pytestmark = [pytest.mark.browser, pytest.mark.slow]
pytest.importorskip("selenium")

WIDTH = 24


def _mlp(path: Path) -> np.ndarray:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = (np.random.default_rng(3).standard_normal((WIDTH, WIDTH)) / 4).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "grid",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", WIDTH])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


@pytest.fixture(scope="module")
def grid() -> Iterator[Any]:
    from .local_grid import LocalGrid

    try:
        g = LocalGrid(nodes=2, max_sessions=2, healthcheck_interval=60, session_request_timeout=20)
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))
    g.start()
    try:
        yield g
    finally:
        g.stop()
    for node in g.nodes:  # no JVM, chromedriver or Chromium left behind
        assert (
            not psutil.pid_exists(node.process.pid)
            or psutil.Process(node.process.pid).status() == psutil.STATUS_ZOMBIE
        )


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Any, Any, np.ndarray]]:
    from webaccel.pool import ResolvedModel, StaticResolver
    from webaccel.pool.transport import ModelRef
    from webaccel.server import WebAccelServer

    w = _mlp(tmp_path / "grid.onnx")
    async with WebAccelServer() as server:
        rel = server.model_files.add("grid", tmp_path / "grid.onnx")
        resolver = StaticResolver()
        resolver.register(
            ResolvedModel(
                "grid", "text_embedding", (ModelRef(key="grid:wasm", name="grid", url=rel),)
            )
        )
        yield server, resolver, w


def node_of(grid: Any) -> dict[str, str]:
    """session id -> node uri, from the hub's status."""
    out = {}
    for node in grid.status()["nodes"]:
        for slot in node.get("slots", []):
            if slot.get("session"):
                out[slot["session"]["sessionId"]] = node["uri"]
    return out


async def test_grid_worker_reports_capabilities_and_closes(grid: Any, served: Any) -> None:
    from webaccel.browsers import launch_worker
    from webaccel.browsers.launching import processes_marked

    from .helpers import smoke_test

    server, _, _ = served
    worker = await launch_worker(server, "chromium", grid_url=grid.url)
    try:
        assert worker.launcher == "grid"
        assert worker.capabilities["wasm"]["crossOriginIsolated"]
        assert worker.session_id in node_of(grid)
        await smoke_test(worker, server)
        assert processes_marked(worker.id)  # the node's Chromium carries our marker
    finally:
        await worker.close()
    assert not processes_marked(worker.id)
    # The hub forgets the session once the node has ended it (slower on a loaded machine).
    deadline = time.monotonic() + 15
    while worker.session_id in node_of(grid) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert worker.session_id not in node_of(grid)


async def test_pool_through_grid_survives_a_killed_node(grid: Any, served: Any) -> None:
    from webaccel.browsers.grid import GridLauncher
    from webaccel.browsers.launching import processes_marked
    from webaccel.pool import ResourcePool

    server, resolver, w = served
    rng = np.random.default_rng(0)
    pool = ResourcePool(
        max_connections=4,
        adaptive_scaling=False,
        launcher=GridLauncher(server, grid.url),
        resolver=resolver,
        launchable=["chromium"],
        connection_timeout=90,
        heartbeat_interval=0.1,
        max_retries=5,
        request_timeout=30,
    )
    answered: list[tuple[np.ndarray, Any]] = []
    errors: list[BaseException] = []
    async with pool:
        deadline = time.monotonic() + 120
        while len(pool.workers) < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(pool.workers) == 4
        sessions = node_of(grid)
        on_node = {wid: sessions[wk.session_id] for wid, wk in pool.workers.items()}
        assert len(set(on_node.values())) == 2, on_node  # both nodes serve
        # Warm: every worker loads the model (first load compiles the WASM).
        await pool.execute_concurrent(
            [
                ("grid", {"x": rng.standard_normal((1, WIDTH)).astype(np.float32)})
                for _ in range(16)
            ],
            return_exceptions=False,
        )

        victim_uri = next(iter(on_node.values()))
        victim = next(i for i, n in enumerate(grid.nodes) if n.uri == victim_uri)
        doomed = {wid: pool.workers[wid] for wid, uri in on_node.items() if uri == victim_uri}
        doomed_pids = {p for wk in doomed.values() for p in wk.pids()}
        node_children = {
            c.pid for c in psutil.Process(grid.nodes[victim].process.pid).children(recursive=True)
        }
        assert doomed_pids and node_children
        end = time.monotonic() + 8
        killed_at: list[float] = []

        async def client() -> None:
            while time.monotonic() < end:
                x = rng.standard_normal((1, WIDTH)).astype(np.float32)
                try:
                    answered.append((x, await pool.run_inference("grid", {"x": x})))
                except Exception as exc:  # noqa: BLE001 - the test asserts there are none
                    errors.append(exc)

        async def killer() -> None:
            await asyncio.sleep(2)
            grid.kill_node(victim)  # the JVM only: chromedriver + Chromium are orphaned
            killed_at.append(time.monotonic())

        await asyncio.gather(killer(), *(client() for _ in range(8)))
        detect = {
            wid: wk.lost_at - killed_at[0] for wid, wk in doomed.items() if wk.lost_at is not None
        }
        hub_still_up = victim_uri in (grid.up_nodes() or [])
        events = list(pool.events)
    assert not errors, errors[:3]
    assert len(answered) > 50
    for x, r in answered:
        np.testing.assert_allclose(r.outputs["y"], np.maximum(x @ w, 0), atol=1e-4)
    # Detected by us, at once, while the hub still counted the node as UP.
    assert set(detect) == set(doomed), detect
    assert max(detect.values()) < 5, detect
    assert hub_still_up
    lost = {e[2].split(":")[0] for e in events if e[1] == "lost"}
    assert set(doomed) <= lost
    # The dead node's browsers and chromedrivers do not linger.
    for wid in doomed:
        assert not processes_marked(wid)
    left = [
        p
        for p in doomed_pids | node_children
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert left == [], left
    print(
        f"grid: {len(answered)} answered after a node kill; detection s: "
        f"{ {k: round(v, 2) for k, v in detect.items()} }"
    )
