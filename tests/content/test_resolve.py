"""The pure path resolver, and writing what it finds (fetcher) safely."""
from __future__ import annotations

import asyncio
import dataclasses
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webaccel.content import cid as cidmod
from webaccel.content.add import add_paths
from webaccel.content.errors import (
    AddInputError,
    DecodeError,
    InvalidCIDError,
    InvalidPathError,
    UnsupportedDagError,
)
from webaccel.content.fetcher import Fetcher
from webaccel.content.importer import (
    PROFILES,
    Entry,
    build_directory_blocks,
    build_symlink,
    import_bytes,
)
from webaccel.content.pb import DataType, PBLink, PBNode, UnixFSData, encode_node, encode_unixfs
from webaccel.content.resolve import hamt_children, parse_ipfs_path, resolve_with
from webaccel.content.store import BlockStore

TINY = dataclasses.replace(PROFILES["kubo-v1"], shard_threshold=1)  # every folder a HAMT


def _dir(entries: dict[str, Entry], blocks: dict[bytes, bytes], profile=TINY) -> Entry:  # noqa: ANN001
    root, bl = build_directory_blocks(entries.items(), profile)
    blocks.update(bl)
    return root


def _file(data: bytes, blocks: dict[bytes, bytes]) -> Entry:
    root, bl = import_bytes(data, "kubo-v1")
    blocks.update(bl)
    return root


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.sets(st.text(st.characters(blacklist_characters="/\x00",
                                           blacklist_categories=("Cs",)), min_size=1,
                             max_size=12), min_size=1, max_size=400))
def test_every_name_resolves_through_the_hamt(names: set[str]) -> None:
    blocks: dict[bytes, bytes] = {}
    entries = {n: _file(n.encode(), blocks) for n in names}
    root = _dir(entries, blocks)
    listed: dict[str, bytes] = {}
    stack = [root.cid]
    while stack:  # enumerate shard by shard, as the fetcher does
        from webaccel.content import dag

        es, shards = hamt_children(dag.decode(stack[-1], blocks[stack.pop()]))
        listed.update({n: c for n, c, _ in es})
        stack += shards
    assert listed == {n: e.cid for n, e in entries.items()}
    for n in list(names)[:40]:
        res = resolve_with(blocks.__getitem__, root.cid, n)
        assert res.target == entries[n].cid and res.proof[0] == root.cid
    with pytest.raises(InvalidPathError, match="no entry"):
        resolve_with(blocks.__getitem__, root.cid, "\x00not-there")


def test_nested_paths_files_and_errors() -> None:
    blocks: dict[bytes, bytes] = {}
    leaf = _file(b"deep", blocks)
    inner = _dir({"leaf": leaf}, blocks, "kubo-v1")  # plain
    outer = _dir({"inner": inner, "x": _file(b"x", blocks)}, blocks)  # HAMT
    res = resolve_with(blocks.__getitem__, outer.cid, "/inner//leaf/")
    assert res.cids == [outer.cid, inner.cid, leaf.cid]
    assert res.proof[0] == outer.cid and res.proof[-1] == inner.cid
    assert resolve_with(blocks.__getitem__, outer.cid, "").cids == [outer.cid]
    with pytest.raises(InvalidPathError, match="not a directory"):
        resolve_with(blocks.__getitem__, outer.cid, "x/y")
    assert parse_ipfs_path(f"/ipfs/{outer.cid_str}/inner/leaf") == (outer.cid, "inner/leaf")
    assert parse_ipfs_path(f"{outer.cid_str}/") == (outer.cid, "")
    with pytest.raises(InvalidCIDError):
        parse_ipfs_path("../..")


def test_malformed_hamt_is_refused() -> None:
    blocks: dict[bytes, bytes] = {}
    f = _file(b"a", blocks)

    def shard(fanout: int, hash_type: int, name: str) -> bytes:
        data = encode_unixfs(UnixFSData(DataType.HAMT_SHARD, b"\x01", hash_type=hash_type,
                                        fanout=fanout))
        block = encode_node(PBNode(data, (PBLink(f.cid, name, 1),)))
        c = cidmod.make(block, cidmod.DAG_PB, 1)
        blocks[c] = block
        return c

    with pytest.raises(UnsupportedDagError, match="murmur3"):
        resolve_with(blocks.__getitem__, shard(256, 0x12, "00a"), "a")
    with pytest.raises(DecodeError, match="fanout"):
        resolve_with(blocks.__getitem__, shard(100, 0x22, "00a"), "a")
    from webaccel.content import dag

    c = shard(256, 0x22, "0")
    with pytest.raises(DecodeError, match="prefix"):
        hamt_children(dag.decode(c, blocks[c]))


def _get_local(store: BlockStore, root: bytes, out: Path) -> None:
    async def run() -> None:
        f = Fetcher([], local_only=True)
        try:
            await f.fetch(root, out, store=store)
        finally:
            await f.aclose()

    asyncio.run(run())


def test_get_refuses_duplicate_names_and_escaping_links(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s", fsync=False)
    a = _file(b"one", {})
    store.put_trusted(a.cid, import_bytes(b"one", "kubo-v1")[1][0][1])
    link, (lc, lb) = build_symlink("/etc", "kubo-v1")
    store.put_trusted(lc, lb)
    out = tmp_path / "work"
    out.mkdir()
    # a hand-made folder naming "x" twice: a link to /etc and a folder with a file
    sub, sub_blocks = build_directory_blocks([("passwd", a)], "kubo-v1")
    sc, sb = sub_blocks[-1]
    store.put_trusted(sc, sb)
    for links, message in (
        ((PBLink(lc, "x", link.tsize), PBLink(sc, "x", sub.tsize)), "outside|two entries"),
        ((PBLink(sc, "x", sub.tsize), PBLink(a.cid, "x", a.tsize)), "two entries"),
        ((PBLink(a.cid, "../up", a.tsize),), "not a safe file name"),
    ):
        block = encode_node(PBNode(encode_unixfs(UnixFSData(DataType.DIRECTORY)), links))
        c = cidmod.make(block, cidmod.DAG_PB, 1)
        store.put_trusted(c, block)
        with pytest.raises(UnsupportedDagError, match=message):
            _get_local(store, c, out / "copy")
        assert os.listdir(out) == []
    # a symlink as the root is written as it is (nothing is written through it)
    _get_local(store, lc, out / "l")
    assert os.readlink(out / "l") == "/etc"


def test_special_files_inside_a_folder_are_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    os.mkfifo(d / "pipe")
    with pytest.raises(AddInputError, match="named pipe"):
        add_paths([d], "kubo-v0", None)
    with pytest.raises(AddInputError, match="does not exist"):
        add_paths([tmp_path / "nope"], "kubo-v0", None)


def test_entity_scope_of_a_hamt_is_all_its_shards(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s", fsync=False)
    blocks: dict[bytes, bytes] = {}
    root = _dir({f"f{i}": _file(f"{i}".encode(), blocks) for i in range(600)}, blocks)
    for c, b in blocks.items():
        store.put_trusted(c, b)
    from webaccel.content import dag

    shards = {c for c, b in blocks.items()
              if cidmod.codec_of(c) == cidmod.DAG_PB and dag.decode(c, b).kind == "hamt"}
    assert len(shards) > 1

    async def walk(scope: str) -> list[bytes]:
        return [c async for c, _ in store.walk(root.cid, scope)]

    entity = asyncio.run(walk("entity"))
    assert entity[0] == root.cid and set(entity) == shards
    assert len(asyncio.run(walk("all"))) == len(shards) + 600
