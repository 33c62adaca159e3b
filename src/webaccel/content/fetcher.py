"""Multi-source block fetching from trustless gateways (HTTP, ``?format=raw``).

Any server that speaks the IPFS trustless gateway spec
(https://specs.ipfs.tech/http-gateways/trustless-gateway/) can be a peer:
another webaccel server, a Kubo node's gateway, a public gateway.  Every block
is verified against its CID before it is used; a peer that sends a bad block
is banned for the rest of the run and the block is asked of another peer.

Scheduling (``fetch``): a shared queue of blocks still to get, at most
``window`` requests in flight in all and ``per_peer`` per peer.  Each new
request goes to the peer with the earliest expected finish::

    eta(peer) = latency + (in_flight + 1) * block_size * seconds_per_byte

where ``seconds_per_byte`` is an EWMA of ``duration / (bytes * concurrency)``
measured on that peer's past requests (unmeasured peers look free, so each is
tried early).  A slow peer thus gets few blocks and a fast one many.  When the
queue is empty and a request has run much longer than usual, it is hedged: the
same block is asked of an idle peer and the first valid answer wins.
Timeouts, 429/5xx answers and connection errors back the peer off briefly and
put the block back in the queue; 404 means "ask someone else".
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from webaccel.content import cid as cidmod
from webaccel.content import dag
from webaccel.content.errors import (
    BlockNotFoundError,
    FetchTimeoutError,
    UnsupportedDagError,
)

if TYPE_CHECKING:
    from webaccel.content.store import BlockStore

MAX_BLOCK = (4 << 20) + 1024
RAW_TYPE = "application/vnd.ipld.raw"


@dataclass
class Peer:
    url: str
    spb: float | None = None  # EWMA seconds per byte, per unit of concurrency
    latency: float | None = None
    inflight: int = 0
    blocks: int = 0
    bytes: int = 0
    corrupt: int = 0
    timeouts: int = 0
    errors: int = 0
    not_found: int = 0
    banned: bool = False
    down_until: float = 0.0

    def eta(self, size: int) -> float:
        spb = self.spb or 0.0
        return (self.latency or 0.0) + (self.inflight + 1) * size * spb

    def usable(self, now: float) -> bool:
        return not self.banned and self.down_until <= now

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url, "blocks": self.blocks, "bytes": self.bytes, "corrupt": self.corrupt,
            "timeouts": self.timeouts, "errors": self.errors, "not_found": self.not_found,
            "banned": self.banned,
            "mb_per_s": (1 / self.spb / 1e6) if self.spb else None,
        }


@dataclass
class FetchStats:
    blocks: int = 0
    bytes: int = 0
    corrupt_rejected: int = 0
    retries: int = 0
    hedged: int = 0
    local_blocks: int = 0  # found in the store, not fetched
    seconds: float = 0.0
    peers: list[dict[str, Any]] = field(default_factory=list)


class _BadBlock(Exception):
    pass


class _NotHere(Exception):
    pass


@dataclass
class _Job:
    cid: bytes
    path: Path | None  # where the content goes (None: only into the store)
    offset: int  # file offset for file content
    kind: str = "?"  # "root" | "child" | "entry"
    attempts: int = 0
    tried: set[str] = field(default_factory=set)
    started: float = 0.0


class Fetcher:
    """Fetch blocks from many trustless-gateway peers; also a store's network tier."""

    def __init__(self, peers: list[str], *, window: int = 32, per_peer: int = 8,
                 timeout: float = 15.0, max_attempts: int = 8,
                 client: httpx.AsyncClient | None = None,
                 headers: dict[str, str] | None = None, local_only: bool = False) -> None:
        # local_only: no peers, every block must be in the store given to fetch()
        # (``webaccel get`` without peers writes files and folders the same way)
        if not peers and not local_only:
            raise ValueError("a Fetcher needs at least one peer URL")
        self.peers = [Peer(u.rstrip("/")) for u in dict.fromkeys(peers)]
        self.window = window
        self.per_peer = per_peer
        self.timeout = timeout
        self.max_attempts = max_attempts
        self._client = client
        self._own_client = client is None
        self._headers = headers or {}
        self.typical_block = 262_144

    async def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(5.0, self.timeout)),
                limits=httpx.Limits(max_connections=self.window * 2 + len(self.peers) * 2,
                                    max_keepalive_connections=self.window * 2),
                headers=self._headers,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None and self._own_client:
            await self._client.aclose()
            self._client = None

    # ------------------------------------------------------------ one request

    async def _request(self, peer: Peer, c: bytes) -> bytes:
        client = await self._http()
        url = f"{peer.url}/ipfs/{cidmod.to_str(c)}?format=raw"
        t0 = time.perf_counter()
        concurrency = max(1, peer.inflight)
        try:
            async with client.stream("GET", url, headers={"Accept": RAW_TYPE}) as r:
                if r.status_code == 404:
                    raise _NotHere()
                if r.status_code == 429:
                    retry = r.headers.get("Retry-After", "1")
                    wait = float(retry) if retry.isdigit() else 1.0
                    peer.down_until = time.monotonic() + min(30.0, wait)
                    raise httpx.HTTPStatusError("429", request=r.request, response=r)
                r.raise_for_status()
                buf = bytearray()
                async for piece in r.aiter_raw():
                    buf += piece
                    if len(buf) > MAX_BLOCK:
                        raise _BadBlock()
        except httpx.TimeoutException:
            peer.timeouts += 1
            peer.down_until = time.monotonic() + 2.0
            raise
        data = bytes(buf)
        if not cidmod.is_valid(c, data):
            raise _BadBlock()
        dt = time.perf_counter() - t0
        if data:
            spb = dt / (len(data) * concurrency)
            peer.spb = spb if peer.spb is None else 0.7 * peer.spb + 0.3 * spb
        peer.latency = dt if peer.latency is None else 0.8 * peer.latency + 0.2 * min(dt, 0.05)
        peer.blocks += 1
        peer.bytes += len(data)
        return data

    def _pick(self, exclude: set[str], size: int) -> Peer | None:
        now = time.monotonic()
        best: Peer | None = None
        for p in self.peers:
            if not p.usable(now) or p.url in exclude or p.inflight >= self.per_peer:
                continue
            if best is None or p.eta(size) < best.eta(size):
                best = p
        return best

    def _alive(self, exclude: set[str]) -> list[Peer]:
        return [p for p in self.peers if not p.banned and p.url not in exclude]

    async def get_block(self, c: bytes) -> bytes:
        """One verified block, trying peers (best first) until one delivers it."""
        tried: set[str] = set()
        last: Exception | None = None
        for _ in range(self.max_attempts):
            peer = self._pick(tried, self.typical_block)
            if peer is None:
                if not self._alive(tried):
                    break
                await asyncio.sleep(0.05)
                continue
            peer.inflight += 1
            try:
                return await self._request(peer, c)
            except _BadBlock:
                peer.corrupt += 1
                peer.banned = True
                tried.add(peer.url)
            except _NotHere:
                peer.not_found += 1
                tried.add(peer.url)
            except (httpx.HTTPError, OSError) as exc:
                peer.errors += 1
                peer.down_until = max(peer.down_until, time.monotonic() + 1.0)
                last = exc
            finally:
                peer.inflight -= 1
        if last is not None and isinstance(last, httpx.TimeoutException):
            raise FetchTimeoutError(f"peers timed out on block {cidmod.to_str(c)}") from last
        raise BlockNotFoundError(f"no peer returned a valid block {cidmod.to_str(c)}")

    # ------------------------------------------------------------ a whole DAG

    async def fetch(self, root: cidmod.CIDLike, out: str | os.PathLike[str] | None = None, *,
                    store: BlockStore | None = None,
                    progress: Callable[[int, int | None], None] | None = None) -> FetchStats:
        """Fetch the DAG at ``root`` from all peers in parallel.

        With ``out`` the UnixFS content is written there (a file, or a folder
        tree), via ``out.partial`` renamed at the end; with ``store`` every
        verified block is also stored (blocks already there are not fetched).
        ``progress(done_bytes, total_bytes)``.
        """
        raw = cidmod.parse(root)
        stats = FetchStats()
        t0 = time.perf_counter()
        final = Path(out) if out is not None else None
        # a fresh name beside the output, renamed over it only once complete;
        # on any failure it is removed, so nothing half-written is left
        target = temp_beside(final) if final is not None else None
        queue: deque[_Job] = deque([_Job(raw, target, 0, "root")])
        running: dict[asyncio.Task[bytes], tuple[_Job, Peer]] = {}
        hedges: dict[bytes, int] = {}
        done_cids: set[bytes] = set()
        total: int | None = None
        done_bytes = 0
        durations: deque[float] = deque(maxlen=64)

        def complete(job: _Job, data: bytes) -> None:
            nonlocal total, done_bytes
            try:
                content, new_jobs, size = self._handle(job, data, target)
            except FileExistsError as exc:
                raise UnsupportedDagError(
                    f"directory has two entries named {Path(exc.filename).name!r}; "
                    "refusing to write either") from exc
            if job.kind == "root":
                total = size
            done_bytes += content
            queue.extend(new_jobs)
            if progress is not None:
                progress(done_bytes, total)

        def launch(job: _Job, peer: Peer) -> None:
            peer.inflight += 1
            job.started = time.monotonic()
            task = asyncio.ensure_future(self._request(peer, job.cid))
            running[task] = (job, peer)

        try:
            while queue or running:
                # fill the window
                while queue and len(running) < self.window:
                    job = queue[0]
                    local = store.get_local(job.cid) if store is not None else None
                    if local is not None:  # already here (verified on the way in)
                        queue.popleft()
                        stats.local_blocks += 1
                        complete(job, local)
                        continue
                    peer = self._pick(job.tried, self.typical_block)
                    if peer is None:
                        if not self.peers:
                            raise BlockNotFoundError(
                                f"block {cidmod.to_str(job.cid)} is not in the local store "
                                "and no peers are set; add peers (--peer URL) or add the "
                                "content first")
                        if not self._alive(job.tried):
                            raise BlockNotFoundError(
                                f"no peer has a valid block {cidmod.to_str(job.cid)} "
                                f"(tried {len(job.tried)} of {len(self.peers)})")
                        break
                    queue.popleft()
                    launch(job, peer)
                # hedge a straggler when there is nothing else to do
                if not queue and running and len(running) < self.window:
                    self._hedge(running, hedges, durations, launch, stats)
                if not running:
                    await asyncio.sleep(0.05)  # every usable peer is backing off
                    continue
                finished, _ = await asyncio.wait(list(running), timeout=0.25,
                                                 return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    job, peer = running.pop(task)
                    peer.inflight -= 1
                    try:
                        data = task.result()
                    except asyncio.CancelledError:
                        continue
                    except _BadBlock:
                        peer.corrupt += 1
                        peer.banned = True
                        stats.corrupt_rejected += 1
                        self._retry(job, peer, queue, running, done_cids, stats, exclude=True)
                        continue
                    except _NotHere:
                        peer.not_found += 1
                        self._retry(job, peer, queue, running, done_cids, stats, exclude=True)
                        continue
                    except (httpx.HTTPError, OSError):
                        peer.errors += 1
                        peer.down_until = max(peer.down_until, time.monotonic() + 1.0)
                        self._retry(job, peer, queue, running, done_cids, stats, exclude=False)
                        continue
                    if job.cid in done_cids:
                        continue  # the other copy of a hedged request won
                    done_cids.add(job.cid)
                    durations.append(time.monotonic() - job.started)
                    self._cancel_twins(job.cid, running)
                    stats.blocks += 1
                    stats.bytes += len(data)
                    if store is not None:
                        store.put_trusted(job.cid, data)
                    complete(job, data)
        except BaseException:
            if target is not None and os.path.lexists(target):
                _remove(target)
            raise
        finally:
            for task in running:
                task.cancel()
            for task in running:
                with contextlib.suppress(BaseException):
                    await task
        if target is not None and final is not None:
            if os.path.lexists(final):
                _remove(final)
            target.rename(final)
        stats.seconds = time.perf_counter() - t0
        stats.peers = [p.as_dict() for p in self.peers]
        return stats

    def _retry(self, job: _Job, peer: Peer, queue: deque[_Job],
               running: dict[asyncio.Task[bytes], tuple[_Job, Peer]], done: set[bytes],
               stats: FetchStats, *, exclude: bool) -> None:
        if job.cid in done or any(j.cid == job.cid for j, _ in running.values()):
            return  # a hedged twin is still running or already won
        if exclude:
            job.tried.add(peer.url)
        job.attempts += 1
        stats.retries += 1
        if job.attempts >= self.max_attempts:
            raise FetchTimeoutError(
                f"block {cidmod.to_str(job.cid)} failed {job.attempts} times on every peer")
        queue.appendleft(job)

    def _hedge(self, running: dict[asyncio.Task[bytes], tuple[_Job, Peer]],
               hedges: dict[bytes, int], durations: deque[float],
               launch: Callable[[_Job, Peer], None], stats: FetchStats) -> None:
        if len(durations) < 4:
            return
        typical = sorted(durations)[len(durations) // 2]
        now = time.monotonic()
        for job, peer in list(running.values()):
            if hedges.get(job.cid, 0) >= 1 or now - job.started < max(0.2, 3 * typical):
                continue
            other = self._pick(job.tried | {peer.url}, self.typical_block)
            if other is None:
                return
            hedges[job.cid] = 1
            stats.hedged += 1
            twin = _Job(job.cid, job.path, job.offset, job.kind, job.attempts, set(job.tried))
            launch(twin, other)

    @staticmethod
    def _cancel_twins(c: bytes, running: dict[asyncio.Task[bytes], tuple[_Job, Peer]]) -> None:
        for task, (job, _peer) in running.items():
            if job.cid == c:
                task.cancel()

    def _handle(self, job: _Job, data: bytes,
                target_root: Path | None = None) -> tuple[int, list[_Job], int]:
        """Write what this block holds; return (content bytes, child jobs, node size)."""
        node = dag.decode(job.cid, data)
        kind = node.kind
        path = job.path
        if kind == "file":
            if path is not None and job.kind in ("root", "entry"):
                # a new name in a folder this run made: never follow or reuse a link
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
                try:
                    os.ftruncate(fd, node.size)
                finally:
                    os.close(fd)
            pieces = dag.file_pieces(node)
            written = 0
            jobs = []
            for piece in pieces:
                if piece.data is not None:
                    if path is not None:
                        _pwrite(path, job.offset + piece.offset, piece.data)
                    written += len(piece.data)
                else:
                    assert piece.child is not None
                    jobs.append(_Job(piece.child, path, job.offset + piece.offset, "child"))
            return written, jobs, node.size
        if kind in ("directory", "hamt"):
            if kind == "hamt":
                from webaccel.content.resolve import hamt_children

                entries, shards = hamt_children(node)
            else:
                entries, shards = dag.dir_entries(node), []
            if path is not None and job.kind != "shard":
                path.mkdir()  # not exist_ok: a second entry of the same name is refused
            jobs = [_Job(c, path, 0, "shard") for c in shards]  # more of this same folder
            for name, c, _tsize in entries:
                if not name or "/" in name or "\0" in name or name in (".", ".."):
                    raise UnsupportedDagError(
                        f"directory entry name {name!r} is not a safe file name; "
                        "refusing to write it (the DAG was not made by a UnixFS importer)")
                jobs.append(_Job(c, path / name if path is not None else None, 0, "entry"))
            return 0, jobs, 0
        if kind == "symlink":
            if path is not None:
                assert node.fs is not None
                target = (node.fs.data or b"").decode("utf-8", "replace")
                if target_root is not None and path != target_root:
                    check_symlink(path, target, target_root)
                os.symlink(target, path)
            return 0, [], 0
        raise UnsupportedDagError(f"cannot fetch a UnixFS {kind} node")


def check_symlink(path: Path, target: str, root: Path) -> None:
    """Refuse a symlink at ``path`` whose target leaves the folder ``root`` being
    written (absolute, or climbing out with ``..``): what ``get`` writes stays
    inside the output folder.  Entries are never written through a symlink
    either: every file and folder is created new (O_EXCL, mkdir without
    exist_ok), so a link can only be a leaf."""
    rel = path.parent.relative_to(root)
    where = os.path.normpath(os.path.join(str(rel), target))
    if not target or "\0" in target or os.path.isabs(target) or where == ".." or \
            where.startswith(".." + os.sep):
        raise UnsupportedDagError(
            f"refusing symlink {path.name!r} -> {target!r}: it points outside the output folder")


def _pwrite(path: Path, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    try:
        os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


def temp_beside(final: Path) -> Path:
    import secrets

    while True:
        p = final.with_name(f".{final.name}.{secrets.token_hex(4)}.partial")
        if not os.path.lexists(p):
            return p


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        import shutil

        shutil.rmtree(p)
    else:
        p.unlink()
