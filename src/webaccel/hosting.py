"""The local browser stack a pool runs on: one loopback server, its block store,
the launchers, and the model registry as the pool's resolver.

:class:`BrowserHost` is what a :class:`~webaccel.pool.ResourcePool` built
without a launcher owns (``ResourcePool(max_connections=4)``, as the seed
documents write it), and what the :class:`~webaccel.engine.Engine` composes.
Model bytes travel by CID: the server's trustless gateway serves the blocks,
and the page verifies each one and caches the file by CID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

from webaccel.errors import InvalidInputError
from webaccel.models import registry
from webaccel.native import NativeRunner
from webaccel.pool.resolver import ResolvedModel
from webaccel.pool.transport import BACKENDS, ModelRef, WorkerTransport
from webaccel.server import WebAccelServer

# CIDv1, raw leaves, 1 MiB chunks: fewer, larger blocks for the page to verify.
CID_PROFILE = "unixfs-v1-2025"


def content_id(path: Path, blocks: Any) -> str:
    """The CID of a model file, adding its blocks to ``blocks`` once.

    A model file that is a symbolic link is added as the file it points to.
    A sidecar ``<file>.cid.json`` remembers the CID for this size and mtime, so
    a second engine does not re-hash hundreds of MB; the root block must still
    be in the store, or the file is added again.
    """
    from webaccel.content.add import add_path

    stat = path.stat()
    sidecar = path.with_name(path.name + ".cid.json")
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "profile": CID_PROFILE}
    with contextlib.suppress(OSError, ValueError):
        known = json.loads(sidecar.read_text())
        if {k: known.get(k) for k in key} == key and blocks.has(known["cid"]):
            return str(known["cid"])
    # the file's bytes, not a UnixFS symlink node when the model file is a link
    cid = str(add_path(path.resolve(), CID_PROFILE, store=blocks, pin=True))
    tmp = sidecar.with_name(f"{sidecar.name}.{secrets.token_hex(6)}.tmp")  # one per writer
    tmp.write_text(json.dumps({**key, "cid": cid}))
    os.replace(tmp, sidecar)
    return cid


class BrowserHost:
    """A loopback server, local browser launchers and registry-resolved models."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        server: WebAccelServer | None = None,
        content_addressed: bool = True,
        launcher: str | None = None,
        grid_url: str | None = None,
        public_url: str | None = None,
        connection_timeout: float = 30.0,
        threads: int = 1,
        allow_software: bool = False,
    ) -> None:
        """``launcher``: subprocess (default) | selenium | playwright | grid (with
        ``grid_url``); ``public_url``: the server address remote browsers reach;
        ``allow_software``: pages load the WebGPU build even where the only adapter is
        software (else they pick the wasm-only build there, see web/page.mjs)."""
        self.server = server or WebAccelServer(host, port)
        self.launcher = launcher
        self.grid_url = grid_url
        self.public_url = public_url
        self.threads = threads
        self.allow_software = allow_software
        # A Grid session on a cold JVM takes longer than a local browser.
        self.launch_timeout = max(connection_timeout, 60.0) if grid_url else connection_timeout
        self.native = NativeRunner()  # the trusted reference that checks workers' answers
        self.blocks: Any = None
        if content_addressed:
            from webaccel.content.gateway import gateway_routes
            from webaccel.content.store import BlockStore

            self.blocks = BlockStore.default()
            self.server.add_routes(gateway_routes(self.blocks, upload_token=self.server.token))
        self._started = False

    async def start(self) -> None:
        if not self._started:
            await self.server.start()
            self._started = True

    async def close(self) -> None:
        if self._started:
            self._started = False
            await self.server.stop()

    async def launch(self, family: str) -> WorkerTransport:
        from webaccel.browsers import launch_worker

        await self.start()
        # Pages choose their onnxruntime build ("auto"); a software adapter needs "all".
        build = {"ort_build": "all"} if self.allow_software and family != "node-webgpu" else {}
        return await launch_worker(
            self.server,
            family,
            launcher=self.launcher,
            grid_url=self.grid_url,
            public_url=self.public_url,
            timeout=self.launch_timeout,
            threads=self.threads,
            **build,
        )

    async def model_url(self, name: str, path: Path, build: Any = None) -> tuple[str, str | None]:
        """Where a page fetches ``path``: ``/ipfs/<cid>`` once built (and its CID), else
        a lazy route that builds it on the first request (quantizing here would stall)."""
        if self.blocks is not None and path.is_file():
            cid = await asyncio.to_thread(content_id, path, self.blocks)
            return f"/ipfs/{cid}", cid
        if build is not None:
            return self.server.model_files.add_lazy(name, build), None
        return self.server.model_files.add(name, path), None

    async def resolve(self, name: str, model_type: str | None = None) -> ResolvedModel:
        """A registry name as the pool's :class:`ResolvedModel`: one :class:`ModelRef`
        per (precision, backend)."""
        spec = registry.get(name)
        if model_type is not None and model_type not in (spec.model_type, spec.task):
            raise InvalidInputError(f"{name} is a {spec.model_type} model, not {model_type}")
        variants = []
        for precision in registry.PRECISIONS:
            path = spec.onnx_path(precision)
            url, cid = await self.model_url(
                f"{spec.name}/{precision}/model.onnx",
                path,
                lambda p=precision: spec.ensure_onnx(p),
            )
            size = path.stat().st_size if cid is not None else None
            for backend in BACKENDS:
                variants.append(
                    ModelRef(
                        key=f"{spec.name}/{precision}/{backend}",
                        name=spec.name,
                        url=url,
                        backend=backend,
                        precision=precision,
                        cid=cid,
                        size_bytes=size,
                        session_options=_session_options(spec, backend),
                    )
                )
        return ResolvedModel(
            name=spec.name,
            model_type=spec.model_type,
            variants=tuple(variants),
            # Requests of equal padded shape share a run (the pool checks shapes).
            batchable=True,
            output_names=spec.output_names,
            # Without an explicit precision: fp32 everywhere (the accuracy
            # reference); lower precisions only when asked for.
            auto_precisions=("fp32",),
            shape_buckets=spec.shape_buckets,
            load_on_session=spec.build_parts is None,
            reference=None if spec.build_parts is not None else self._reference(spec),
            warmup_inputs=_warmup_inputs(spec),
        )

    def _reference(self, spec: Any) -> Any:
        def reference(tensors: dict[str, Any], precision: str) -> dict[str, Any]:
            return self.native.run(spec, tensors, precision)[0]

        return reference


# Token models are warmed on load with these [batch, sequence] shapes: one short
# text (the latency case) and a micro-batch of a long list (the throughput case).
WARMUP_TOKEN_SHAPES = ((1, 16), (8, 32))


def _warmup_inputs(spec: Any) -> tuple[dict[str, Any], ...]:
    import numpy as np

    buckets = spec.shape_buckets
    if buckets is None or "input_ids" not in buckets.inputs:
        return ()
    out = []
    for rows, seq in WARMUP_TOKEN_SHAPES:
        ids = np.full((rows, seq), 1996, dtype=np.int64)  # "the"
        ids[:, 0], ids[:, -1] = 101, 102  # [CLS] ... [SEP]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        if "token_type_ids" in buckets.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        out.append(feeds)
    return tuple(out)


def _session_options(spec: Any, backend: str) -> dict[str, Any]:
    if spec.task != "text_generation" or spec.source.startswith("split:"):
        return {}  # a pipeline stage (webaccel.sharding) hands its KV cache back to Python
    from webaccel.generation.runner import generation_session_options

    return generation_session_options(spec, backend)
