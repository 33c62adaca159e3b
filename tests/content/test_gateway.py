"""The trustless gateway, over real HTTP where it matters (uvicorn on loopback)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest

from webaccel.content import cid as cidmod
from webaccel.content.add import add_path
from webaccel.content.car import CarBlock, CarHeader, read_car, write_car
from webaccel.content.gateway import IMMUTABLE, UPLOAD_PATH, create_gateway_app
from webaccel.content.importer import import_bytes
from webaccel.content.store import BlockStore
from webaccel.content.testing import Faults, serve_in_thread, spawn_peer

from .conftest import write_random


@pytest.fixture
def served(tmp_path: Path):
    store = BlockStore(tmp_path / "store")
    f = write_random(tmp_path / "model.onnx", 3 * 262_144 + 1234, seed=11)
    d = tmp_path / "site"
    (d / "models").mkdir(parents=True)
    (d / "models" / "m.onnx").write_bytes(f.read_bytes())
    (d / "readme.txt").write_bytes(b"hello")
    file_root = add_path(f, "kubo-v1", store=store)
    dir_root = add_path(d, "kubo-v1", store=store)
    v0_root = add_path(f, "kubo-v0", store=store)
    app = create_gateway_app(store, upload_token="s3cret")
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    return store, client, str(file_root), str(dir_root), str(v0_root), f.read_bytes()


async def test_file_bytes_headers_and_range(served) -> None:
    _store, client, root, _d, v0, data = served
    for cid in (root, v0):
        r = await client.get(f"/ipfs/{cid}")
        assert r.status_code == 200 and r.content == data
        assert r.headers["cache-control"] == IMMUTABLE
        assert r.headers["etag"] == f'"{cid}"'
        assert r.headers["x-ipfs-path"] == f"/ipfs/{cid}"
        assert r.headers["x-ipfs-roots"] == cid
        assert r.headers["access-control-allow-origin"] == "*"
        assert r.headers["content-length"] == str(len(data))
    r = await client.get(f"/ipfs/{root}", headers={"Range": "bytes=262140-262150"})
    assert r.status_code == 206 and r.content == data[262140:262151]
    assert r.headers["content-range"] == f"bytes 262140-262150/{len(data)}"
    r = await client.get(f"/ipfs/{root}", headers={"Range": "bytes=-10"})
    assert r.content == data[-10:]
    r = await client.get(f"/ipfs/{root}", headers={"Range": "bytes=5-"})
    assert r.content == data[5:]
    r = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = await client.head(f"/ipfs/{root}")
    assert r.status_code == 200 and r.content == b""
    assert r.headers["content-length"] == str(len(data))
    r = await client.get(f"/ipfs/{root}", headers={"If-None-Match": f'"{root}"'})
    assert r.status_code == 304


async def test_raw_block(served) -> None:
    store, client, root, _d, _v0, _data = served
    for kw in ({"params": {"format": "raw"}}, {"headers": {"Accept": "application/vnd.ipld.raw"}}):
        r = await client.get(f"/ipfs/{root}", **kw)
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.ipld.raw"
        assert r.headers["etag"] == f'"{root}.raw"'
        cidmod.verify(cidmod.parse(root), r.content)
    r = await client.head(f"/ipfs/{root}?format=raw")
    assert r.status_code == 200 and int(r.headers["content-length"]) > 0


async def test_car_with_scopes_and_paths(served) -> None:
    store, client, root, droot, _v0, data = served
    r = await client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.car"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/vnd.ipld.car; version=1")
    events = list(read_car([r.content]))
    assert events[0] == CarHeader([cidmod.parse(root)])
    blocks = [e for e in events[1:] if isinstance(e, CarBlock)]
    assert len(blocks) == 5
    for b in blocks:
        cidmod.verify(b.cid, b.data)
    r = await client.get(f"/ipfs/{root}?format=car&dag-scope=block")
    assert len(list(read_car([r.content]))) == 2
    # a path: the directory blocks that prove it, then the file
    r = await client.get(f"/ipfs/{droot}/models/m.onnx?format=car&dag-scope=entity")
    events = list(read_car([r.content]))
    assert events[0] == CarHeader([cidmod.parse(droot)])
    assert len(events) == 1 + 2 + 5
    assert r.headers["x-ipfs-roots"].split(",")[0] == droot
    assert len(r.headers["x-ipfs-roots"].split(",")) == 3
    r = await client.get(f"/ipfs/{droot}/models/m.onnx")
    assert r.content == data
    assert r.headers["x-ipfs-path"] == f"/ipfs/{droot}/models/m.onnx"
    r = await client.get(f"/ipfs/{droot}/")
    assert r.status_code == 200 and "readme.txt" in r.text


async def test_errors(served) -> None:
    _store, client, root, droot, _v0, _data = served
    r = await client.get("/ipfs/not-a-cid")
    assert r.status_code == 400 and "not-a-cid" not in r.text
    missing = cidmod.to_str(cidmod.make(b"missing", cidmod.RAW, 1))
    assert (await client.get(f"/ipfs/{missing}")).status_code == 404
    assert (await client.get(f"/ipfs/{droot}/nope")).status_code == 404
    assert (await client.get(f"/ipfs/{root}?format=tar")).status_code == 406
    r = await client.get(f"/ipfs/{root}", headers={"Accept": "application/vnd.ipld.dag-json"})
    assert r.status_code == 406
    r = await client.options(f"/ipfs/{root}")
    assert r.status_code == 204 and "GET" in r.headers["access-control-allow-methods"]


async def test_upload_requires_token_and_verifies(served, tmp_path: Path) -> None:
    store, client, _root, _d, _v0, _data = served
    entry, blocks = import_bytes(os.urandom(700_000), "kubo-v1")
    car = b"".join(write_car([entry.cid], blocks))
    assert (await client.post(UPLOAD_PATH, content=car)).status_code == 401
    r = await client.post(UPLOAD_PATH, content=car, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    bad = bytearray(car)
    bad[-5] ^= 0xFF
    r = await client.post(UPLOAD_PATH, content=bytes(bad),
                          headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 400
    r = await client.post(UPLOAD_PATH + "?pin=1", content=car,
                          headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json()["roots"] == [entry.cid_str] and r.json()["pinned"]
    assert store.is_pinned(entry.cid)


async def test_concurrency_limit_answers_429(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "s")
    root = add_path(write_random(tmp_path / "f", 100_000, 1), "kubo-v1", store=store)
    app = create_gateway_app(store, max_concurrency=4)
    srv = serve_in_thread(Faults(app, delay=0.3))
    try:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=srv.url, limits=limits) as c:
            rs = await asyncio.gather(*[c.get(f"/ipfs/{root}") for _ in range(20)])
        codes = sorted(r.status_code for r in rs)
        assert codes.count(200) >= 4 and codes.count(429) >= 10
        assert all(r.headers.get("retry-after") == "1" for r in rs if r.status_code == 429)
    finally:
        srv.stop()


@pytest.mark.slow
async def test_thousands_of_concurrent_requests(tmp_path: Path) -> None:
    """1500 concurrent connections to one gateway process: all answered, none refused."""
    store = BlockStore(tmp_path / "s")
    root = add_path(write_random(tmp_path / "f", 50_000, 2), "kubo-v1", store=store)
    peer = spawn_peer(tmp_path / "s")
    try:
        limits = httpx.Limits(max_connections=1500, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=peer.url, limits=limits, timeout=60) as c:
            rs = await asyncio.gather(*[c.get(f"/ipfs/{root}?format=raw") for _ in range(1500)])
        assert all(r.status_code == 200 for r in rs)
    finally:
        peer.stop()


async def test_a_range_with_thousands_of_digits_is_never_500(served) -> None:
    _store, client, root, _d, _v0, data = served
    huge = "9" * 5000  # past Python's int-conversion limit (4300 digits)
    r = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes={huge}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(data)}"
    r = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes=0-{huge}"})
    assert r.status_code == 206 and r.content == data
    r = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes=-{huge}"})
    assert r.status_code == 206 and r.content == data
    r = await client.get(f"/ipfs/{root}", headers={"Range": f"bytes={'0' * 5000}5-9"})
    assert r.status_code == 206 and r.content == data[5:10]


def _headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k != "date"}


async def test_head_gives_exactly_gets_headers(served) -> None:
    _store, client, root, droot, _v0, _data = served
    for url, headers in [
        (f"/ipfs/{root}", {}),
        (f"/ipfs/{root}", {"Range": "bytes=10-99"}),
        (f"/ipfs/{root}?format=raw", {}),
        (f"/ipfs/{root}?format=car", {}),
        (f"/ipfs/{droot}/models/m.onnx?format=car&dag-scope=entity", {}),
        (f"/ipfs/{droot}/", {}),
        (f"/ipfs/{droot}/readme.txt", {}),
    ]:
        get = await client.get(url, headers=headers)
        head = await client.head(url, headers=headers)
        assert head.status_code == get.status_code and head.content == b""
        assert _headers(head) == _headers(get), url
    car = await client.head(f"/ipfs/{root}?format=car")
    assert "content-length" not in car.headers  # streamed: its length is not known up front


async def test_stored_html_is_sandboxed_and_never_sniffed(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "store")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_bytes(b"<script>fetch('/admin/tokens')</script>")
    root = add_path(site, "kubo-v1", store=store)
    app = create_gateway_app(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        for url in (f"/ipfs/{root}/", f"/ipfs/{root}/index.html", f"/ipfs/{root}/missing",
                    "/ipfs/not-a-cid"):
            r = await client.get(url)
            csp = [d.strip() for d in r.headers["content-security-policy"].split(";")]
            assert "sandbox" in csp and not any("allow-scripts" in d for d in csp), url
            assert r.headers["x-content-type-options"] == "nosniff", url


async def test_upload_body_limit_is_enforced_while_reading(tmp_path: Path) -> None:
    store = BlockStore(tmp_path / "store")
    app = create_gateway_app(store, upload_token="s3cret", max_upload_bytes=1 << 20)
    entry, blocks = import_bytes(os.urandom(3 << 20), "kubo-v1")
    car = b"".join(write_car([entry.cid], blocks))
    pieces_read = 0

    async def chunked():
        nonlocal pieces_read
        for i in range(0, len(car), 64 * 1024):
            pieces_read += 1
            yield car[i:i + 64 * 1024]

    auth = {"Authorization": "Bearer s3cret"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        r = await client.post(UPLOAD_PATH, content=chunked(), headers=auth)
        assert r.status_code == 413 and r.text.startswith("413: ")
        assert pieces_read <= (1 << 20) // (64 * 1024) + 2  # stopped at the limit, not at 3 MiB
        assert not store.is_pinned(entry.cid)
        r = await client.post(UPLOAD_PATH, content=car, headers=auth)  # declared length
        assert r.status_code == 413
        r = await client.post(UPLOAD_PATH, content=car)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"


async def test_paths_through_a_hamt_folder(tmp_path: Path) -> None:
    """/ipfs/CID/path in a HAMT-sharded folder (Kubo's t0260 data: 2000 files,
    sharded at a 1-byte threshold): the bytes, and a CAR whose path blocks
    (root shard, sub-shards) let a client verify the path itself."""
    import dataclasses

    from webaccel.content.add import add_paths
    from webaccel.content.importer import PROFILES
    from webaccel.content.resolve import resolve_with

    d = tmp_path / "testdata"
    d.mkdir()
    for i in range(1, 2001):
        (d / f"file{i}").write_bytes(f"{i}\n".encode())
    store = BlockStore(tmp_path / "store", fsync=False)
    prof = dataclasses.replace(PROFILES["kubo-v0"], shard_threshold=1)
    [root] = add_paths([d], prof, store.put_trusted)
    app = create_gateway_app(store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://gw") as client:
        r = await client.get(f"/ipfs/{root.cid_str}/file100")
        assert r.status_code == 200 and r.content == b"100\n"
        assert len(r.headers["x-ipfs-roots"].split(",")) == 2  # root, file100
        r = await client.get(f"/ipfs/{root.cid_str}/file100?format=car")
        events = list(read_car([r.content]))
        got = {e.cid: e.data for e in events[1:] if isinstance(e, CarBlock)}
        for c, data in got.items():
            cidmod.verify(c, data)
        # only the CAR's blocks are needed to walk the path: HAMT shards included
        res = resolve_with(lambda c: got[c], root.cid, "file100")
        assert b"".join(store.read_file(res.target)) == b"100\n"
        assert len(res.proof) >= 2 and set(res.proof) <= set(got)
        r = await client.get(f"/ipfs/{root.cid_str}/file2001")
        assert r.status_code == 404
