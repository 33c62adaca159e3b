"""Replication: push pins to peers, check availability, replicate hot CIDs.

* ``replicate(root)``: stream the DAG as a CAR to each ``replicate_to`` peer's
  authenticated upload endpoint (``POST /webaccel/v1/car?pin=1``, another
  webaccel server) until ``replication_max`` peers hold it, and pin it in IPFS
  Cluster (:mod:`webaccel.content.cluster`) when ``cluster.url`` is set.
* ``monitor()``: for every local pin, ask each known peer (trustless gateway
  HEAD of the root block, or with ``deep`` the whole DAG as a CAR, every block
  verified) and record whether at least ``replication_min`` peers can serve
  it; ``webaccel pin status`` prints the record.
* ``note_fetch(root)``: count requests per root (the gateway calls it); the
  ``hot_fetches``-th request of an unpinned root pins it locally (if complete)
  and replicates it in the background.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from webaccel.content import cid as cidmod
from webaccel.content.car import CarBlock, CarReader, encode_header, encode_section
from webaccel.content.cluster import ClusterClient
from webaccel.content.config import ContentConfig
from webaccel.content.errors import BlockNotFoundError, DecodeError, ReplicationError
from webaccel.content.gateway import UPLOAD_PATH
from webaccel.content.store import BlockStore


@dataclass
class Availability:
    cid: str
    available_on: list[str] = field(default_factory=list)
    missing_on: list[str] = field(default_factory=list)
    replication_min: int = 1
    checked_at: float = 0.0

    @property
    def ok(self) -> bool:
        return len(self.available_on) >= self.replication_min


class Replicator:
    def __init__(self, store: BlockStore, cfg: ContentConfig, *,
                 status_path: str | os.PathLike[str] | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.store = store
        self.cfg = cfg
        if status_path is None:
            from webaccel.paths import home

            status_path = home() / "replication.json"
        self.status_path = Path(status_path)
        self._client = client or httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=5.0))
        self.cluster = (ClusterClient(cfg.cluster["url"], token=cfg.cluster.get("token"),
                                      user=cfg.cluster.get("user"),
                                      password=cfg.cluster.get("password"))
                        if cfg.cluster and cfg.cluster.get("url") else None)
        self.fetch_counts: dict[bytes, int] = {}
        self.tasks: set[asyncio.Task[Any]] = set()

    async def aclose(self) -> None:
        for t in list(self.tasks):
            await asyncio.gather(t, return_exceptions=True)
        await self._client.aclose()
        if self.cluster is not None:
            await self.cluster.aclose()

    def _check_urls(self) -> list[str]:
        urls = [p["url"].rstrip("/") for p in self.cfg.replicate_to] + [
            u.rstrip("/") for u in self.cfg.peers]
        return list(dict.fromkeys(urls))

    # -------------------------------------------------------------- push

    async def _car_stream(self, root: bytes) -> AsyncIterator[bytes]:
        yield encode_header([root])
        async for c, data in self.store.walk(root):
            yield encode_section(c, data)

    async def push(self, root: cidmod.CIDLike, url: str, token: str | None) -> dict[str, Any]:
        raw = cidmod.parse(root)
        headers = {"Content-Type": "application/vnd.ipld.car"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            r = await self._client.post(f"{url.rstrip('/')}{UPLOAD_PATH}?pin=1",
                                        content=self._car_stream(raw), headers=headers)
        except httpx.HTTPError as exc:
            raise ReplicationError(f"peer {url} did not take the upload") from exc
        if r.status_code != 200:
            raise ReplicationError(f"peer {url} refused the upload ({r.status_code})",
                                   details={"status": r.status_code})
        return dict(r.json())

    async def replicate(self, root: cidmod.CIDLike, *, name: str | None = None) -> dict[str, Any]:
        """Push ``root`` to peers until ``replication_max`` hold it; pin in the cluster."""
        raw = cidmod.parse(root)
        report: dict[str, Any] = {"cid": cidmod.to_str(raw), "pushed": [], "already": [],
                                  "failed": {}, "cluster": None}
        have = 0
        for peer in self.cfg.replicate_to:
            if have >= self.cfg.replication_max:
                break
            url = peer["url"].rstrip("/")
            if await self.available(raw, url):
                report["already"].append(url)
                have += 1
                continue
            try:
                await self.push(raw, url, peer.get("token"))
                report["pushed"].append(url)
                have += 1
            except ReplicationError as exc:
                report["failed"][url] = exc.message
        if self.cluster is not None:
            report["cluster"] = await self.cluster.pin(
                raw, replication_min=self.cfg.replication_min,
                replication_max=self.cfg.replication_max, name=name)
        return report

    # -------------------------------------------------------------- availability

    async def available(self, root: bytes, url: str, *, deep: bool = False) -> bool:
        text = cidmod.to_str(root)
        try:
            if not deep:
                r = await self._client.head(f"{url}/ipfs/{text}",
                                            headers={"Accept": "application/vnd.ipld.raw"})
                return r.status_code == 200
            reader = CarReader()
            seen = 0
            async with self._client.stream(
                    "GET", f"{url}/ipfs/{text}?format=car&dag-scope=all",
                    headers={"Accept": "application/vnd.ipld.car"}) as r:
                if r.status_code != 200:
                    return False
                async for piece in r.aiter_raw():
                    for ev in reader.feed(piece):
                        if isinstance(ev, CarBlock):
                            if not cidmod.is_valid(ev.cid, ev.data):
                                return False
                            seen += 1
            reader.close()
            local = sum(1 for _ in self.store._local_dag(root, strict=False))
            return seen >= local
        except (httpx.HTTPError, DecodeError):
            return False

    async def check(self, root: cidmod.CIDLike, *, deep: bool = False) -> Availability:
        raw = cidmod.parse(root)
        urls = self._check_urls()
        results = await asyncio.gather(*[self.available(raw, u, deep=deep) for u in urls])
        return Availability(cidmod.to_str(raw),
                            [u for u, ok in zip(urls, results, strict=False) if ok],
                            [u for u, ok in zip(urls, results, strict=False) if not ok],
                            self.cfg.replication_min, time.time())

    async def monitor(self, *, deep: bool = False) -> list[Availability]:
        out = [await self.check(str(p["cid"]), deep=deep) for p in self.store.pins()]
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps([{**asdict(a), "ok": a.ok} for a in out], indent=1))
        os.replace(tmp, self.status_path)
        return out

    async def monitor_forever(self, interval_s: float = 300.0, *, deep: bool = False) -> None:
        """Re-check every pin every ``interval_s`` (a server starts this as a task)."""
        while True:
            with contextlib.suppress(Exception):  # a failed round must not end monitoring
                await self.monitor(deep=deep)
            await asyncio.sleep(interval_s)

    def last_status(self) -> list[dict[str, Any]]:
        if not self.status_path.exists():
            return []
        return list(json.loads(self.status_path.read_text()))

    # -------------------------------------------------------------- on demand

    def note_fetch(self, root: bytes) -> None:
        n = self.fetch_counts.get(root, 0) + 1
        self.fetch_counts[root] = n
        if n == self.cfg.hot_fetches:
            task = asyncio.ensure_future(self._replicate_hot(root))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _replicate_hot(self, root: bytes) -> dict[str, Any] | None:
        try:
            await self.store.fetch_dag(root)
            if not self.store.is_pinned(root):
                self.store.pin(root)
        except BlockNotFoundError:
            return None
        return await self.replicate(root)
