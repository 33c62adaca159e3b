"""A pipeline stage on a browser that joined from another network namespace (remote join):
the split model's outputs equal the unsplit model's."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from tests.browsers.test_remote import chromium_in, netns  # noqa: F401 - the fixture

pytestmark = pytest.mark.browser


async def test_a_stage_runs_on_a_browser_of_another_namespace(netns):  # noqa: F811
    from webaccel.browsers.remote import JoinedWorkers, TokenStore, advertise, join_routes, join_url
    from webaccel.engine import Engine
    from webaccel.models.text import TextEmbeddingProcessor
    from webaccel.server import WebAccelServer
    from webaccel.sharding.run import Pipeline
    from webaccel.sharding.stages import split_model

    server = WebAccelServer(netns.host_ip)
    store = TokenStore().attach(server)
    server.add_routes(join_routes(store))
    joined = JoinedWorkers(server)
    # One local browser; the second worker is the one that joins from the namespace.
    # Plain http to a veth address is no secure context (no WebCrypto to verify CIDs
    # with; remote browsers get that behind TLS): model bytes by plain URL here.
    eng = Engine(server=server, max_connections=1, adaptive_scaling=False,
                 default_platform="wasm", launch_timeout=90, content_addressed=False)
    await eng.start()
    proc = None
    try:
        advertise(server, server.url)
        tok = store.issue("pipeline")
        proc = chromium_in(netns, join_url(server.url, tok), netns.host_ip)
        remote = await joined.next(90)
        assert server.hub.connections[remote.id].ws.client.host == netns.ns_ip
        eng.pool.adopt(remote)
        texts = ["A man plays guitar.", "Someone makes music on a stage.", "The cat sat."]
        want = (await eng.accelerate("minilm", texts, platform="wasm"))["embeddings"]
        split = await asyncio.to_thread(split_model, "minilm", 2)
        prepared = TextEmbeddingProcessor().preprocess(texts, {})
        async with Pipeline(eng.pool, split, platform="wasm", timeout=300) as pipe:
            (out,) = await pipe.run([prepared.tensors])
            report = pipe.report()
        print("stages:", report)
        workers = [s["worker_id"] for s in report]
        assert remote.id in workers and len(set(workers)) == 2
        diff = float(np.abs(out["sentence_embedding"] - want).max())
        assert diff <= 1e-6, diff
    finally:
        if proc is not None:
            await proc.terminate_async()  # type: ignore[attr-defined]
        await eng.close()
