"""The importer's CIDs must be the ones Kubo and the JS importer make for the same bytes."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webaccel.content import cid as cidmod
from webaccel.content.add import add_path
from webaccel.content.errors import UnsupportedDagError
from webaccel.content.importer import (
    PROFILES,
    Entry,
    FileBuilder,
    Profile,
    build_directory,
    build_directory_blocks,
    fixed_chunks,
    import_bytes,
    import_file,
)
from webaccel.content.pb import DataType, decode_node, decode_unixfs

from .conftest import write_random

KiB256 = 262_144
SIZES = [0, 1, KiB256 - 1, KiB256, KiB256 + 1, 174 * KiB256 + 1]


def _file(tmp_path: Path, size: int, seed: int = 7) -> Path:
    return write_random(tmp_path / f"f{size}", size, seed)


@pytest.mark.parametrize("size", SIZES)
def test_kubo_v0_matches_kubo(kubo, tmp_path: Path, size: int) -> None:
    f = _file(tmp_path, size)
    assert str(add_path(f, "kubo-v0", only_hash=True)) == kubo.add(f)


def test_kubo_v0_matches_kubo_50mib(kubo, tmp_path: Path) -> None:
    f = write_random(tmp_path / "big", 50 * 1024 * 1024 + 12345, seed=2026)
    ours = add_path(f, "kubo-v0", only_hash=True)
    assert str(ours) == kubo.add(f)
    assert str(ours).startswith("Qm")


@pytest.mark.parametrize("profile", ["kubo-v1", "unixfs-v1-2025"])
@pytest.mark.parametrize(
    "size", [0, 1, KiB256 - 1, KiB256, KiB256 + 1, 1 << 20, (1 << 20) + 1, 174 * KiB256 + 1]
)
def test_cidv1_profiles_match_js_importer(js_cid, tmp_path: Path, profile: str, size: int) -> None:
    f = _file(tmp_path, size, seed=size % 997)
    ours = str(add_path(f, profile, only_hash=True))
    assert ours == js_cid(profile, f)
    assert ours.startswith("bafk" if size <= PROFILES[profile].chunk_size else "bafy")


@pytest.mark.parametrize("profile", ["kubo-v1", "unixfs-v1-2025"])
def test_cidv1_profiles_match_js_importer_50mib(js_cid, tmp_path: Path, profile: str) -> None:
    f = write_random(tmp_path / "big", 50 * 1024 * 1024 + 999, seed=5)
    assert str(add_path(f, profile, only_hash=True)) == js_cid(profile, f)


@pytest.mark.parametrize(
    "shape", ["custom:10:3:0:0", "custom:10:3:1:1", "custom:7:2:1:1", "custom:16:4:0:1"]
)
@pytest.mark.parametrize("size", [0, 9, 10, 11, 30, 31, 90, 91, 271, 1000])
def test_deep_trees_match_js_importer(js_cid, tmp_path: Path, shape: str, size: int) -> None:
    """Tiny chunks and fan-out build 4-6 level trees, checking the balanced layout's edges."""
    _, chunk, links, raw, version = shape.split(":")
    prof = Profile(shape, int(version), raw == "1", int(chunk), int(links))
    f = _file(tmp_path, size, seed=size)
    entry, _ = import_bytes(f.read_bytes(), prof)
    assert entry.cid_str == js_cid(shape, f)


def _tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    write_random(root / "sub" / "model.bin", 3 * KiB256 + 17, seed=1)
    write_random(root / "sub" / "deeper" / "w.bin", 1000, seed=2)
    (root / "\u00e9t\u00e9.txt").write_bytes(b"unicode name")
    (root / ".hidden").write_bytes(b"dot file")
    os.symlink("a.txt", root / "link")
    return root


def test_directory_matches_kubo(kubo, tmp_path: Path) -> None:
    d = _tree(tmp_path / "tree")
    # the embedded Kubo adds dot files (like `ipfs add -r --hidden`)
    assert str(add_path(d, "kubo-v0", only_hash=True, hidden=True)) == kubo.add(d)
    assert add_path(d, "kubo-v0", only_hash=True) != add_path(d, "kubo-v0", only_hash=True,
                                                              hidden=True)


@pytest.mark.parametrize("profile", ["kubo-v1", "unixfs-v1-2025"])
def test_directory_matches_js(js_cid, tmp_path: Path, profile: str) -> None:
    d = tmp_path / "tree"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "empty").mkdir()
    (d / "a.txt").write_bytes(b"hello\n")
    write_random(d / "sub" / "model.bin", 5 * KiB256 + 17, seed=1)
    write_random(d / "sub" / "deeper" / "w.bin", 1000, seed=2)
    assert str(add_path(d, profile, only_hash=True)) == js_cid(profile, d)


def test_directory_past_shard_threshold_is_a_hamt() -> None:
    """build_directory makes plain nodes only; build_directory_blocks shards past
    the threshold (CIDs against Kubo: tests/content/test_kubo_cli.py)."""
    e = Entry(cidmod.make(b"x", cidmod.RAW, 1), 1, 1)
    entries = [(f"file-with-a-longish-name-{i:06d}.bin", e) for i in range(8000)]
    with pytest.raises(UnsupportedDagError, match="HAMT"):
        build_directory(entries, "kubo-v1")
    root, blocks = build_directory_blocks(entries, "kubo-v1")
    assert blocks[-1][0] == root.cid and len(blocks) > 1
    for c, block in blocks:
        cidmod.verify(c, block)
        fs = decode_unixfs(decode_node(block).data or b"")
        assert (fs.type, fs.fanout, fs.hash_type) == (DataType.HAMT_SHARD, 256, 0x22)
    names = [ln.name for _c, b in blocks for ln in decode_node(b).links if len(ln.name or "") > 2]
    assert sorted(n[2:] for n in names) == sorted(n for n, _ in entries)
    assert root.tsize == sum(len(b) for _c, b in blocks) + 8000


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=20),
    raw=st.booleans(),
)
def test_chunking_does_not_depend_on_how_input_is_cut(data: bytes, cuts: list[int],
                                                      raw: bool) -> None:
    prof = Profile("t", 1 if raw else 0, raw, 64, 3)
    bounds = sorted({0, len(data), *[c for c in cuts if c <= len(data)]})
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    whole, blocks = import_bytes(data, prof)
    streamed = list(import_file(iter(pieces), prof))
    assert streamed == blocks
    assert streamed[-1][0] == whole.cid
    assert b"".join(fixed_chunks(pieces, 64)) == data


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=2000), raw=st.booleans(), links=st.integers(2, 5))
def test_dag_invariants(data: bytes, raw: bool, links: int) -> None:
    """Every block hashes to its CID; filesize = sum(blocksizes); leaves spell the input."""
    prof = Profile("t", 1 if raw else 0, raw, 32, links)
    root, blocks = import_bytes(data, prof)
    by_cid = dict(blocks)
    for c, b in blocks:
        cidmod.verify(c, b)

    def content(c: bytes) -> bytes:
        block = by_cid[c]
        if cidmod.codec_of(c) == cidmod.RAW:
            return block
        node = decode_node(block)
        fs = decode_unixfs(node.data or b"")
        assert fs.type == DataType.FILE
        if not node.links:
            return fs.data or b""
        assert len(node.links) <= links
        parts = [content(link.hash) for link in node.links]
        assert list(fs.blocksizes) == [len(p) for p in parts]
        assert fs.filesize == sum(fs.blocksizes)
        return b"".join(parts)

    assert content(root.cid) == data
    assert root.size == len(data)
    assert root.tsize == sum(len(b) for _, b in blocks)


def test_streaming_memory_is_flat() -> None:
    """Pending state is at most depth x max_links links, whatever the input length."""
    b = FileBuilder(Profile("t", 1, True, 16, 4))
    peak = 0
    for i in range(20_000):
        b.push(i.to_bytes(16, "big"))
        peak = max(peak, sum(len(lvl) for lvl in b._levels))
    b.finish()
    assert peak <= 4 * len(b._levels)
    assert b.root is not None and b.root.size == 20_000 * 16


@pytest.mark.parametrize("profile", ["kubo-v1", "unixfs-v1-2025"])
def test_hamt_directory_matches_js(js_cid, tmp_path: Path, profile: str) -> None:
    """A folder past 256 KiB of links (6000 entries and a sub-folder) is a HAMT in
    the JS importer too (CIDv1 and IPIP-499's block-bytes estimate)."""
    d = tmp_path / "big"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "x").write_bytes(b"x")
    for i in range(6000):
        (d / f"entry-{i:05d}.bin").write_bytes(str(i).encode() * (i % 7 + 1))
    assert str(add_path(d, profile, only_hash=True)) == js_cid(profile, d)
