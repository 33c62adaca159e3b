"""Multi-source fetching end to end: real gateway processes on loopback, one lying, one slow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from webaccel.content import cid as cidmod
from webaccel.content.add import add_path
from webaccel.content.errors import BlockNotFoundError
from webaccel.content.fetcher import Fetcher
from webaccel.content.store import BlockStore
from webaccel.content.testing import peers

from .conftest import REPO, write_random


def _seed(tmp_path: Path, src: Path, profile: str, names: list[str]) -> str:
    root = ""
    for n in names:
        root = str(add_path(src, profile, store=BlockStore(tmp_path / n, fsync=False)))
    return root


def test_webaccel_get_from_three_peers_one_corrupt_one_slow(tmp_path: Path) -> None:
    src = write_random(tmp_path / "model.onnx", 8 * 1024 * 1024 + 4321, seed=77)
    root = _seed(tmp_path, src, "kubo-v0", ["good", "bad", "slow"])
    specs = [
        {"root": tmp_path / "good"},
        {"root": tmp_path / "bad", "corrupt": 1.0},  # every body it sends is altered
        {"root": tmp_path / "slow", "delay": 0.4},
    ]
    with peers(specs) as (good, bad, slow):
        out = tmp_path / "out.onnx"
        env = {**os.environ, "WEBACCEL_HOME": str(tmp_path / "home")}
        cmd = [sys.executable, "-m", "webaccel.content.cli", "get", root, "-o", str(out),
               "--peer", bad.url, "--peer", slow.url, "--peer", good.url, "--json"]
        r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert out.read_bytes() == src.read_bytes()
    assert not out.with_name("out.onnx.partial").exists()
    by_url = {p["url"]: p for p in stats["peers"]}
    assert by_url[bad.url]["banned"] and by_url[bad.url]["blocks"] == 0
    assert by_url[bad.url]["corrupt"] >= 1
    assert stats["corrupt_rejected"] == by_url[bad.url]["corrupt"]
    assert stats["blocks"] == 34  # 33 leaves (32 full, 1 short) + root
    assert by_url[good.url]["blocks"] > by_url[slow.url]["blocks"]  # spread by measured speed
    # the blocks landed in the local store too: cat works with no peers
    env = {**os.environ, "WEBACCEL_HOME": str(tmp_path / "home")}
    r = subprocess.run([sys.executable, "-m", "webaccel.content.cli", "cat", root], cwd=REPO,
                       env=env, capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout == src.read_bytes()


async def test_fetch_folder_tree_and_timeouts(tmp_path: Path) -> None:
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    write_random(d / "sub" / "w.bin", 2_000_000, seed=1)
    (d / "a.txt").write_bytes(b"alpha")
    (d / "empty").mkdir()
    os.symlink("a.txt", d / "link")
    root = _seed(tmp_path, d, "unixfs-v1-2025", ["p1", "p2"])
    specs = [{"root": tmp_path / "p1", "delay": 3.0}, {"root": tmp_path / "p2"}]
    with peers(specs) as (hanging, ok):
        f = Fetcher([hanging.url, ok.url], timeout=1.0)
        f.peers[1].spb = 1.0  # make the hanging peer look best so it is tried first
        out = tmp_path / "out"
        store = BlockStore(tmp_path / "local")
        stats = await f.fetch(root, out, store=store)
        await f.aclose()
    assert (out / "a.txt").read_bytes() == b"alpha"
    assert (out / "sub" / "w.bin").read_bytes() == (d / "sub" / "w.bin").read_bytes()
    assert (out / "empty").is_dir() and os.readlink(out / "link") == "a.txt"
    assert stats.peers[0]["timeouts"] >= 1 and stats.retries >= 1
    assert str(add_path(out, "unixfs-v1-2025", only_hash=True)) == root
    assert store.has(root)


async def test_missing_everywhere_is_not_found(tmp_path: Path) -> None:
    src = write_random(tmp_path / "f", 1000, seed=3)
    _seed(tmp_path, src, "kubo-v1", ["p1"])
    missing = cidmod.to_str(cidmod.make(b"nobody has this", cidmod.RAW, 1))
    with peers([{"root": tmp_path / "p1"}]) as (p,):
        f = Fetcher([p.url])
        with pytest.raises(BlockNotFoundError):
            await f.fetch(missing, tmp_path / "o")
        with pytest.raises(BlockNotFoundError):
            await f.get_block(cidmod.parse(missing))
        await f.aclose()


async def test_blocks_already_local_are_not_fetched(tmp_path: Path) -> None:
    src = write_random(tmp_path / "f", 2 * 262_144 + 10, seed=4)
    root = _seed(tmp_path, src, "kubo-v1", ["p1"])
    local = BlockStore(tmp_path / "local")
    add_path(src, "kubo-v1", store=local)
    with peers([{"root": tmp_path / "p1"}]) as (p,):
        f = Fetcher([p.url])
        stats = await f.fetch(root, tmp_path / "out", store=local)
        await f.aclose()
    assert stats.local_blocks == 4 and stats.blocks == 0
    assert (tmp_path / "out").read_bytes() == src.read_bytes()


async def test_store_fetch_dag_uses_all_peers(tmp_path: Path) -> None:
    src = write_random(tmp_path / "f", 6 * 262_144, seed=5)
    root = _seed(tmp_path, src, "kubo-v1", ["p1"])
    with peers([{"root": tmp_path / "p1"}, {"root": tmp_path / "p1"}]) as (a, b):
        local = BlockStore(tmp_path / "local", network=Fetcher([a.url, b.url], per_peer=2))
        assert await local.fetch_dag(root) == 7
        local.pin(root)
        used = [p.blocks for p in local.network.peers]  # type: ignore[union-attr]
        await local.network.aclose()  # type: ignore[union-attr]
    assert all(n > 0 for n in used) and sum(used) == 7
    assert b"".join(local.read_file(root)) == src.read_bytes()
