"""Block tiers: memory LRU, atomic disk store, verification, pins and GC, network tier."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from webaccel.content import cid as cidmod
from webaccel.content.add import add_path
from webaccel.content.blockstore import DiskBlockstore, MemoryLRU, mh_of
from webaccel.content.errors import BlockNotFoundError, CorruptBlockError
from webaccel.content.fetcher import Fetcher
from webaccel.content.gateway import create_gateway_app
from webaccel.content.importer import import_bytes
from webaccel.content.store import BlockStore
from webaccel.content.testing import Faults, serve_in_thread

from .conftest import write_random


def test_memory_lru_is_bounded_by_bytes() -> None:
    m = MemoryLRU(100)
    for i in range(10):
        m.put(bytes([i]), b"x" * 30)
    assert m.nbytes <= 100 and len(m) == 3
    assert m.get(bytes([9])) is not None and m.get(bytes([0])) is None
    m.get(bytes([7]))
    m.put(b"new", b"y" * 30)  # evicts 8, the least recently used
    assert m.get(bytes([8])) is None and m.get(bytes([7])) is not None
    m.put(b"huge", b"z" * 101)  # larger than the cache: not kept
    assert m.get(b"huge") is None


def test_raw_and_dag_pb_share_a_disk_entry(tmp_path: Path) -> None:
    data = b"same bytes"
    a, b = cidmod.make(data, cidmod.RAW, 1), cidmod.make(data, cidmod.DAG_PB, 1)
    assert mh_of(a) == mh_of(b) == cidmod.make(data, cidmod.DAG_PB, 0)
    s = BlockStore(tmp_path)
    s.put(a, data)
    assert s.has(b)


def test_put_verifies(tmp_path: Path) -> None:
    s = BlockStore(tmp_path)
    c = cidmod.make(b"good", cidmod.RAW, 1)
    with pytest.raises(CorruptBlockError):
        s.put(c, b"evil")
    assert not s.has(c)
    s.put(cidmod.to_str(c), b"good")
    assert s.get_local(c) == b"good"


def test_crash_mid_write_leaves_no_corrupt_block(tmp_path: Path, monkeypatch) -> None:
    d = DiskBlockstore(tmp_path)
    data = os.urandom(300_000)
    c = cidmod.make(data, cidmod.RAW, 1)

    real_fsync = os.fsync

    def crash(fd: int) -> None:  # the process "dies" after writing, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(KeyboardInterrupt):
        d.put(mh_of(c), data)
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert not d.has(mh_of(c))
    # a stray temp file from a real crash (killed process) is removed on open
    (tmp_path / "tmp" / "leftover.123").write_bytes(data[:1000])
    d2 = DiskBlockstore(tmp_path)
    assert list((tmp_path / "tmp").iterdir()) == []
    assert d2.get(mh_of(c)) is None
    assert d2.put(mh_of(c), data) and d2.get(mh_of(c)) == data


def test_bit_rot_on_disk_is_dropped(tmp_path: Path) -> None:
    s = BlockStore(tmp_path, memory_bytes=0)
    data = b"model weights" * 100
    c = cidmod.make(data, cidmod.RAW, 1)
    s.put(c, data)
    p = s.disk.path_of(mh_of(c))
    p.write_bytes(b"X" + data[1:])
    assert s.get_local(c) is None
    assert not p.exists() and s.stats["corrupt_dropped"] == 1


async def test_read_file_and_ranges(tmp_path: Path) -> None:
    f = write_random(tmp_path / "m.bin", 5 * 262_144 + 333, seed=3)
    s = BlockStore(tmp_path / "store", memory_bytes=1 << 20)
    for profile in ("kubo-v0", "kubo-v1", "unixfs-v1-2025"):
        root = add_path(f, profile, store=s)
        whole = f.read_bytes()
        assert b"".join(s.read_file(root)) == whole
        for start, end in [(0, 1), (262_143, 262_145), (100, 5 * 262_144 + 333), (7, 7)]:
            got = b"".join([x async for x in s.iter_file(root, start, end)])
            assert got == whole[start:end]


async def test_walk_scopes(tmp_path: Path) -> None:
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    write_random(d / "sub" / "w.bin", 600_000, seed=4)
    (d / "a.txt").write_bytes(b"a")
    s = BlockStore(tmp_path / "store")
    root = add_path(d, "kubo-v1", store=s)
    all_blocks = [c async for c, _ in s.walk(root)]
    # 2 directories, a.txt, the file's root and its 3 leaves
    assert len(all_blocks) == len(set(all_blocks)) == 2 + 1 + 1 + 3
    assert [c async for c, _ in s.walk(root, "block")] == [cidmod.parse(root)]
    assert [c async for c, _ in s.walk(root, "entity")] == [cidmod.parse(root)]
    chain = await s.resolve_path(root, "sub/w.bin")
    file_blocks = [c async for c, _ in s.walk(chain[-1], "entity")]
    assert len(file_blocks) == 4


def test_pin_gc_and_budget(tmp_path: Path) -> None:
    s = BlockStore(tmp_path / "store", memory_bytes=0)
    keep = add_path(write_random(tmp_path / "keep", 700_000, 1), "kubo-v1", store=s, pin=True)
    drop = add_path(write_random(tmp_path / "drop", 700_000, 2), "kubo-v1", store=s)
    assert s.is_pinned(keep) and not s.is_pinned(drop)
    assert [p["cid"] for p in s.pins()] == [str(keep)]
    before = s.disk.nbytes
    r = s.gc(target_bytes=before)  # already under budget: nothing to do
    assert r.removed_blocks == 0
    r = s.gc()  # every unpinned block goes
    assert r.removed_blocks == 4 and r.pinned_blocks == 4
    assert b"".join(s.read_file(keep)) == (tmp_path / "keep").read_bytes()
    with pytest.raises(BlockNotFoundError):
        b"".join(s.read_file(drop))
    assert s.unpin(keep) and not s.unpin(keep)
    assert s.gc().removed_blocks == 4 and s.disk.nbytes == 0


def test_disk_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    s = BlockStore(tmp_path / "store", memory_bytes=0, disk_budget=3 << 20, fsync=False)
    roots = []
    for _i in range(6):  # 6 x 1 MiB, budget 3 MiB
        root, blocks = import_bytes(os.urandom(1 << 20), "unixfs-v1-2025")
        for c, b in blocks:
            s.put_trusted(c, b)
        roots.append(root.cid)
    s.gc(s.disk_budget)
    assert s.disk.nbytes <= 3 << 20
    assert s.has(roots[-1]) and not s.has(roots[0])


def test_pin_requires_the_whole_dag(tmp_path: Path) -> None:
    s = BlockStore(tmp_path / "store")
    root, blocks = import_bytes(os.urandom(600_000), "kubo-v1")
    for c, b in blocks[1:]:
        s.put_trusted(c, b)
    with pytest.raises(BlockNotFoundError, match="fetch it first"):
        s.pin(root.cid)


async def test_network_tier_verifies_and_skips_a_lying_peer(tmp_path: Path) -> None:
    src = BlockStore(tmp_path / "peer")
    f = write_random(tmp_path / "m.bin", 3 * 262_144 + 5, seed=9)
    root = add_path(f, "kubo-v1", store=src)
    liar = serve_in_thread(Faults(create_gateway_app(src), corrupt=1.0))
    honest = serve_in_thread(create_gateway_app(src))
    try:
        fetcher = Fetcher([liar.url, honest.url], per_peer=1)
        fetcher.peers[1].spb = 1.0  # make the liar look faster so it is asked first
        local = BlockStore(tmp_path / "local", network=fetcher)
        got = b"".join([x async for x in local.iter_file(root)])
        assert got == f.read_bytes()
        liar_state = fetcher.peers[0]
        assert liar_state.banned and liar_state.corrupt == 1 and liar_state.blocks == 0
        assert local.stats["network_fetches"] == 5
        assert local.has(root)  # fetched blocks are kept
        await fetcher.aclose()
    finally:
        liar.stop()
        honest.stop()


async def test_every_block_served_says_which_tier_had_it(tmp_path: Path) -> None:
    """The cache hit rate per tier (webaccel.metrics.efficiency) comes from these calls."""
    src = BlockStore(tmp_path / "peer")
    f = write_random(tmp_path / "m.bin", 2 * 262_144 + 5, seed=3)
    root = add_path(f, "kubo-v1", store=src)
    peer = serve_in_thread(create_gateway_app(src))
    try:
        fetcher = Fetcher([peer.url])
        local = BlockStore(tmp_path / "local", network=fetcher, memory_bytes=1 << 20)
        seen: list[tuple[str | None, int]] = []
        local.on_fetch = lambda c, nbytes, ms, tier: seen.append((tier, nbytes))
        first = b"".join([x async for x in local.iter_file(root)])
        assert first == f.read_bytes() and {t for t, _ in seen} == {"peer"}
        n = len(seen)  # root + leaves
        seen.clear()
        assert b"".join([x async for x in local.iter_file(root)]) == first
        assert [t for t, _ in seen] == ["memory"] * n
        seen.clear()
        local.memory = MemoryLRU(1 << 20)  # as after a restart: the disk has them
        assert b"".join([x async for x in local.iter_file(root)]) == first
        assert [t for t, _ in seen] == ["disk"] * n and sum(b for _, b in seen) > len(first)
        await fetcher.aclose()
    finally:
        peer.stop()


async def test_get_without_peers_is_a_typed_404(tmp_path: Path) -> None:
    s = BlockStore(tmp_path)
    with pytest.raises(BlockNotFoundError) as ei:
        await s.get(cidmod.make(b"nope", cidmod.RAW, 1))
    assert ei.value.code == "NOT_FOUND"


def test_add_larger_than_budget_keeps_its_own_blocks_when_pinned(tmp_path: Path) -> None:
    s = BlockStore(tmp_path / "store", memory_bytes=0, disk_budget=1 << 20, fsync=False)
    old = add_path(write_random(tmp_path / "old", 1 << 20, 1), "kubo-v1", store=s)
    big = write_random(tmp_path / "big", 80 * 262_144, 2)  # 81 blocks: auto-GC would run
    root = add_path(big, "kubo-v1", store=s, pin=True)
    assert b"".join(s.read_file(root)) == big.read_bytes()  # no GC during the add
    assert not s.has(old)  # the budget was enforced afterwards, on unpinned blocks


def test_a_model_file_behind_a_symlink_gets_its_bytes_cid(tmp_path):
    # A linked model file (scripts/gpu/run.sh links the registry's path to a
    # staged graph) must be served as its bytes, not as a UnixFS symlink node.
    from webaccel.content.dag import decode
    from webaccel.content.store import BlockStore
    from webaccel.hosting import content_id

    real = tmp_path / "real.onnx"
    real.write_bytes(bytes(range(256)) * 4096)
    link = tmp_path / "model.onnx"
    link.symlink_to(real)
    store = BlockStore(tmp_path / "blocks")
    cid = content_id(link, store)
    assert cid == content_id(real, BlockStore(tmp_path / "other"))
    root = cidmod.parse(cid)
    assert decode(root, store.get_local(root)).kind == "file"
