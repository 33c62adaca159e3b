"""The tiered block store: memory LRU -> disk -> network peers.

Local methods are synchronous (``put``, ``put_trusted``, ``has``,
``get_local``, pins, ``gc``); anything that may go to the network is async
(``get``, ``iter_file``, ``walk``, ``fetch_dag``).

Trust: blocks from outside (peers, CAR uploads, ``put``) are verified against
their CID before they are stored or returned; a bad one is dropped and the
network tier marks its peer down and asks another.  Disk reads are verified
too (``verify_disk=True``): a block that rotted on disk is deleted and fetched
again.  ``put_trusted`` skips the hash for blocks we just built ourselves.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from webaccel.content import cid as cidmod
from webaccel.content import dag
from webaccel.content.blockstore import DiskBlockstore, MemoryLRU, mh_of
from webaccel.content.cid import CIDLike
from webaccel.content.errors import BlockNotFoundError

if TYPE_CHECKING:
    from webaccel.content.resolve import Resolved


class BlockSource(Protocol):
    """The network tier: anything that can fetch a verified block by CID."""

    async def get_block(self, c: bytes) -> bytes: ...


class FetchCounts(Protocol):
    blocks: int  # fetched from the network
    local_blocks: int  # already in the store


@runtime_checkable
class DagSource(BlockSource, Protocol):
    """A network tier that fetches a whole DAG into a store at once (the
    multi-source :class:`~webaccel.content.fetcher.Fetcher`: all peers in parallel)."""

    async def fetch(
        self, root: CIDLike, out: None = None, *, store: BlockStore | None = None
    ) -> FetchCounts: ...


@dataclass(frozen=True, slots=True)
class GcResult:
    removed_blocks: int
    removed_bytes: int
    kept_bytes: int
    pinned_blocks: int


class BlockStore:
    def __init__(
        self,
        root: str | Path | None = None,
        *,
        memory_bytes: int = 128 << 20,
        disk_budget: int | None = None,
        network: BlockSource | None = None,
        verify_disk: bool = True,
        fsync: bool = True,
    ) -> None:
        if root is None:
            from webaccel.paths import subdir

            root = subdir("blocks")
        self.disk = DiskBlockstore(root)
        self.memory = MemoryLRU(memory_bytes)
        self.network = network
        self.disk_budget = disk_budget
        self.verify_disk = verify_disk
        self.fsync = fsync
        self.stats = {"memory_hits": 0, "disk_hits": 0, "network_fetches": 0, "corrupt_dropped": 0}
        # Called for every block served by get() (cid, bytes, ms, tier: memory | disk |
        # peer), e.g. MetricsStore.record_fetch; cheap, as it runs once per block.
        self.on_fetch: Callable[[bytes, int, float, str | None], None] | None = None
        self._puts_since_gc = 0
        self._gc_paused = 0

    @classmethod
    def default(cls, **kw: object) -> BlockStore:
        """The store under ``$WEBACCEL_HOME/blocks``, with peers from the content config."""
        from webaccel.content.config import load_config

        cfg = load_config()
        store = cls(None, disk_budget=cfg.disk_budget, **kw)  # type: ignore[arg-type]
        if store.network is None:
            store.network = cfg.peer_network()
        return store

    # ----------------------------------------------------------- local, sync

    def put(self, c: CIDLike, data: bytes) -> None:
        """Store a block from outside: verified first (CorruptBlockError if it lies)."""
        raw = cidmod.parse(c)
        cidmod.verify(raw, data)
        self.put_trusted(raw, data)

    def put_trusted(self, c: bytes, data: bytes) -> None:
        """Store a block we built or already verified (no hashing)."""
        mh = mh_of(c)
        self.memory.put(mh, data)
        if self.disk.put(mh, data, fsync=self.fsync):
            self._puts_since_gc += 1
            if self._puts_since_gc >= 64 and not self._gc_paused:
                self._puts_since_gc = 0
                self.enforce_budget()

    def enforce_budget(self) -> GcResult | None:
        """Run GC (least recently used unpinned blocks first) if over ``disk_budget``."""
        if self.disk_budget is not None and self.disk.nbytes > self.disk_budget:
            return self.gc(self.disk_budget)
        return None

    @contextlib.contextmanager
    def gc_paused(self) -> Iterator[None]:
        """No automatic GC inside (like Kubo's GC lock during ``ipfs add``): the
        blocks of a DAG being added are unpinned until its root exists."""
        self._gc_paused += 1
        try:
            yield
        finally:
            self._gc_paused -= 1

    def has(self, c: CIDLike) -> bool:
        mh = mh_of(cidmod.parse(c))
        return mh in self.memory or self.disk.has(mh)

    def get_local(self, c: CIDLike) -> bytes | None:
        return self._local(cidmod.parse(c))[0]

    def _local(self, raw: bytes) -> tuple[bytes | None, str | None]:
        """The block from memory or disk, and which of the two had it."""
        mh = mh_of(raw)
        data = self.memory.get(mh)
        if data is not None:
            self.stats["memory_hits"] += 1
            return data, "memory"
        data = self.disk.get(mh)
        if data is None:
            return None, None
        if self.verify_disk and not cidmod.is_valid(raw, data):
            self.disk.delete(mh)
            self.stats["corrupt_dropped"] += 1
            return None, None
        self.stats["disk_hits"] += 1
        self.memory.put(mh, data)
        return data, "disk"

    def delete(self, c: CIDLike) -> None:
        mh = mh_of(cidmod.parse(c))
        self.memory.discard(mh)
        self.disk.delete(mh)

    # ----------------------------------------------------------- tiered, async

    async def get(self, c: CIDLike) -> bytes:
        """Memory, then disk, then the network tier; BlockNotFoundError if none has it."""
        raw = cidmod.parse(c)
        t0 = time.perf_counter()
        data, tier = self._local(raw)
        if data is not None:
            self._fetched(raw, data, t0, tier)
            return data
        if self.network is None:
            raise BlockNotFoundError(
                f"block {cidmod.to_str(raw)} is not in the local store and no peers are set; "
                "add peers (webaccel get --peer URL) or add the file first"
            )
        data = await self.network.get_block(raw)
        cidmod.verify(raw, data)  # the network tier verifies too; never trust a plug-in
        self.stats["network_fetches"] += 1
        self.put_trusted(raw, data)
        self._fetched(raw, data, t0, "peer")
        return data

    def _fetched(self, raw: bytes, data: bytes, t0: float, tier: str | None) -> None:
        if self.on_fetch is not None:
            self.on_fetch(raw, len(data), (time.perf_counter() - t0) * 1000, tier)

    async def node(self, c: bytes) -> dag.Node:
        return dag.decode(c, await self.get(c))

    async def iter_file(self, root: CIDLike, start: int = 0,
                        end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the UnixFS file at ``root``, streamed block by block."""
        raw = cidmod.parse(root)
        stack: list[tuple[bytes, int]] = [(raw, 0)]  # (cid, file offset of this node)
        while stack:
            c, base = stack.pop()
            node = await self.node(c)
            pieces = dag.file_pieces(node, max(0, start - base),
                                     None if end is None else end - base)
            for piece in reversed(pieces):
                if piece.child is not None:
                    stack.append((piece.child, base + piece.offset))
            # pieces with inline data come first in a node; emit them in order
            for piece in pieces:
                if piece.data is not None:
                    yield piece.data
                else:
                    break

    def read_file(self, root: CIDLike) -> Iterator[bytes]:
        """Local-only synchronous variant of :meth:`iter_file` (whole file)."""
        raw = cidmod.parse(root)
        stack = [raw]
        while stack:
            c = stack.pop()
            data = self.get_local(c)
            if data is None:
                raise BlockNotFoundError(f"block {cidmod.to_str(c)} is not in the local store")
            node = dag.decode(c, data)
            pieces = dag.file_pieces(node)
            for p in pieces:
                if p.data is not None:
                    yield p.data
            stack.extend(p.child for p in reversed(pieces) if p.child is not None)

    async def walk(self, root: CIDLike, scope: str = "all") -> AsyncIterator[tuple[bytes, bytes]]:
        """Blocks of the DAG at ``root`` in depth-first pre-order, each once.

        ``scope`` follows the trustless gateway's ``dag-scope``: ``block`` is the
        root only, ``entity`` stops at the root's own entity (a file's chunks; a
        directory's own node, or every shard of a HAMT-sharded one, not the
        entries), ``all`` is everything.
        """
        raw = cidmod.parse(root)
        seen: set[bytes] = set()
        stack = [raw]
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            data = await self.get(c)
            yield c, data
            if scope == "block":
                return
            node = dag.decode(c, data)
            if scope == "entity" and node.kind == "directory":
                continue
            if scope == "entity" and node.kind == "hamt":
                # a sharded folder's entity is all its shards, not the entries
                from webaccel.content.resolve import hamt_children

                stack.extend(reversed(hamt_children(node)[1]))
                continue
            stack.extend(reversed(node.links))

    async def resolve(self, root: CIDLike, path: str) -> Resolved:
        """``path`` (``a/b/c``) under ``root``, through plain and HAMT-sharded
        directories (:mod:`webaccel.content.resolve`); blocks come from any tier."""
        from webaccel.content.resolve import aresolve_with

        return await aresolve_with(self.get, cidmod.parse(root), path)

    def resolve_local(self, root: CIDLike, path: str) -> Resolved:
        """:meth:`resolve` from the local tiers only (BlockNotFoundError if a block is missing)."""
        from webaccel.content.resolve import resolve_with

        def get(c: bytes) -> bytes:
            data = self.get_local(c)
            if data is None:
                raise BlockNotFoundError(
                    f"block {cidmod.to_str(c)} is not in the local store; "
                    "fetch it first (webaccel get --peer URL) or add the content"
                )
            return data

        return resolve_with(get, cidmod.parse(root), path)

    async def resolve_path(self, root: CIDLike, path: str) -> list[bytes]:
        """CIDs from ``root`` down ``path`` (``a/b/c``), one per segment; the last is the target."""
        return (await self.resolve(root, path)).cids

    async def fetch_dag(self, root: CIDLike) -> int:
        """Make the whole DAG local (from peers if needed); returns its block count.

        With a :class:`DagSource` as the network tier (the multi-source
        fetcher), missing blocks come from all peers in parallel.
        """
        if isinstance(self.network, DagSource):
            stats = await self.network.fetch(root, None, store=self)
            return stats.blocks + stats.local_blocks
        n = 0
        async for _c, _d in self.walk(root):
            n += 1
        return n

    # ----------------------------------------------------------- pins and GC

    def _pin_path(self, raw: bytes) -> Path:
        return self.disk.pins_dir / cidmod.to_str(raw)

    def pin(self, c: CIDLike, *, name: str | None = None) -> None:
        """Pin recursively; the DAG must be local (use ``fetch_dag`` first)."""
        raw = cidmod.parse(c)
        missing = [x for x in self._local_dag(raw, strict=False) if x is None]
        if missing:
            raise BlockNotFoundError(
                f"cannot pin {cidmod.to_str(raw)}: blocks are missing; "
                "fetch it first (webaccel get)"
            )
        p = self._pin_path(raw)
        # A name of its own per writer: two threads pinning one CID must not share it.
        tmp = p.with_name(f"{p.name}.{secrets.token_hex(6)}.tmp")
        tmp.write_text(json.dumps({"cid": cidmod.to_str(raw), "name": name, "at": time.time()}))
        tmp.replace(p)

    def unpin(self, c: CIDLike) -> bool:
        p = self._pin_path(cidmod.parse(c))
        try:
            p.unlink()
        except FileNotFoundError:
            return False
        return True

    def is_pinned(self, c: CIDLike) -> bool:
        return self._pin_path(cidmod.parse(c)).exists()

    def pins(self) -> list[dict[str, object]]:
        out = []
        for f in sorted(self.disk.pins_dir.glob("*")):
            if f.suffix == ".tmp":
                continue
            with contextlib.suppress(OSError, ValueError):
                out.append(json.loads(f.read_text()))
        return out

    def _local_dag(self, root: bytes, *, strict: bool = True) -> Iterator[bytes | None]:
        stack, seen = [root], set()
        while stack:
            c = stack.pop()
            if c in seen:
                continue
            seen.add(c)
            data = self.get_local(c)
            if data is None:
                if strict:
                    raise BlockNotFoundError(f"pinned block {cidmod.to_str(c)} is missing")
                yield None
                continue
            yield c
            stack.extend(dag.children(c, data))

    def pinned_set(self) -> set[bytes]:
        keep: set[bytes] = set()
        for pin in self.pins():
            root = cidmod.parse(str(pin["cid"]))
            for c in self._local_dag(root, strict=False):
                if c is not None:
                    keep.add(mh_of(c))
        return keep

    def gc(self, target_bytes: int | None = None) -> GcResult:
        """Delete unpinned blocks, least recently used first, until disk use <= target.

        ``target_bytes=None`` deletes every unpinned block.
        """
        keep = self.pinned_set()
        total = self.disk.nbytes
        removed = removed_bytes = 0
        candidates = sorted((e for e in self.disk.entries() if e.mh not in keep),
                            key=lambda e: e.mtime)
        for e in candidates:
            if target_bytes is not None and total <= target_bytes:
                break
            size = self.disk.delete(e.mh)
            self.memory.discard(e.mh)
            total -= size
            removed += 1
            removed_bytes += size
        return GcResult(removed, removed_bytes, total, len(keep))
