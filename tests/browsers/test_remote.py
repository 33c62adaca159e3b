"""Remote browsers that join: tokens (issue, check, revoke), isolation between
workers, and a Chromium in another network namespace joining a server bound to
a veth address (docs/FACTS.md: network namespaces)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import numpy as np
import pytest
import websockets

from webaccel.browsers.remote import (
    JoinedWorkers,
    TokenStore,
    advertise,
    join_routes,
    join_url,
    terminal_qr,
)
from webaccel.server import WebAccelServer


async def started(host: str = "127.0.0.1") -> tuple[WebAccelServer, TokenStore]:
    server = WebAccelServer(host)
    store = TokenStore().attach(server)
    server.add_routes(join_routes(store))
    await server.start()
    return server, store


def ws_url(server: WebAccelServer, token: str, worker: str) -> str:
    return f"ws://{server.host}:{server.port}/ws?token={token}&worker={worker}"


async def refused(url: str) -> bool:
    try:
        async with websockets.connect(url, open_timeout=5) as ws:
            await asyncio.wait_for(ws.recv(), 2)
    except websockets.InvalidStatus:
        return True  # closed before accept: HTTP 403
    except websockets.ConnectionClosed as exc:
        return exc.rcvd is not None and exc.rcvd.code == 1008
    except TimeoutError:
        return False
    return False


async def join(server: WebAccelServer, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return await client.get("/join", params={"token": token})


def hello(worker_id: str) -> str:
    return json.dumps(
        {
            "id": f"hello-{worker_id}",
            "type": "hello",
            "data": {"worker_id": worker_id, "capabilities": {}, "loaded": []},
        }
    )


def test_qr_code_is_drawn_for_the_join_url() -> None:
    qr = terminal_qr("http://10.0.0.1:8700/join?token=abc")
    assert qr.count("\n") > 15 and ("█" in qr or "▀" in qr)


async def test_tokens_issue_check_and_revoke() -> None:
    server, store = await started()
    try:
        tok = store.issue("laptop")
        assert tok.value not in repr(tok)
        # A wrong token: no join page, no bridge.
        assert (await join(server, "not-a-token")).status_code == 403
        assert await refused(ws_url(server, "not-a-token", "remote-x"))
        # A valid token gets a fresh worker id bound to it, and the worker page.
        resp = await join(server, tok.value)
        assert resp.status_code == 303
        query = parse_qs(urlsplit(resp.headers["location"]).query)
        worker_id = query["worker"][0]
        assert worker_id.startswith(f"remote-{tok.id}-") and query["token"] == [tok.value]
        assert worker_id in tok.worker_ids
        assert store.check(tok.value, worker_id) and store.check(tok.value, None)
        # The join token opens the bridge only under its own worker ids.
        assert await refused(ws_url(server, tok.value, f"remote-{tok.id}-guessed"))
        assert await refused(ws_url(server, tok.value, "chromium-12345678"))
        async with websockets.connect(ws_url(server, tok.value, worker_id)) as ws:
            await ws.send(hello(worker_id))
            await server.hub.wait_for(worker_id, 5)
            # Revoked: the live socket is closed with 1008, nothing new gets in.
            assert await store.revoke(tok.id) == [worker_id]
            with pytest.raises(websockets.ConnectionClosed) as info:
                await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
        assert await refused(ws_url(server, tok.value, worker_id))
        assert (await join(server, tok.value)).status_code == 403
        assert not store.check(tok.value, None)
        # Model bytes need a valid token too.
        async with httpx.AsyncClient(base_url=server.url) as client:
            r = await client.get("/models/x", headers={"authorization": f"Bearer {tok.value}"})
            assert r.status_code == 401
        # Expiry and a cap on workers per token.
        short = store.issue(ttl_s=0.05, max_workers=1)
        assert store.new_worker_id(short) is not None and store.new_worker_id(short) is None
        await asyncio.sleep(0.1)
        assert (await join(server, short.value)).status_code == 403
    finally:
        await server.stop()


@pytest.mark.browser
async def test_a_joined_page_cannot_take_over_or_see_another_worker() -> None:
    from webaccel.browsers import launch_worker

    from .helpers import smoke_test

    server, store = await started()
    try:
        local = await launch_worker(server, "chromium")
        tok = store.issue("stranger")
        resp = await join(server, tok.value)
        own_id = parse_qs(urlsplit(resp.headers["location"]).query)["worker"][0]
        # Claiming the launched worker's id is refused; the launched worker keeps its socket.
        assert await refused(ws_url(server, tok.value, local.id))
        assert server.hub.connections[local.id] is local.connection and local.alive
        # Connected under its own id, the stranger receives nothing meant for the other worker.
        async with websockets.connect(ws_url(server, tok.value, own_id)) as ws:
            await ws.send(hello(own_id))
            await server.hub.wait_for(own_id, 5)
            await smoke_test(local, server, runs=5)
            frames = []
            with pytest.raises(TimeoutError):
                while True:
                    frames.append(await asyncio.wait_for(ws.recv(), 0.5))
            assert frames == []
        await local.close()
    finally:
        await server.stop()


# ---------------------------------------------------------------- another network namespace
class Netns:
    """A namespace joined to this host by a veth pair on a /30 of its own."""

    def __init__(self) -> None:
        n = os.getpid() % 250 + 1
        self.name = f"wa-test-{os.getpid()}"
        self.host_if, self.ns_if = f"wa{os.getpid()}h"[:15], f"wa{os.getpid()}n"[:15]
        self.host_ip, self.ns_ip = f"10.{200 + n % 50}.{n}.1", f"10.{200 + n % 50}.{n}.2"

    def sh(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True)

    def up(self) -> Netns:
        self.sh("ip", "netns", "add", self.name)
        self.sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        self.sh("ip", "link", "set", self.ns_if, "netns", self.name)
        self.sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        self.sh("ip", "link", "set", self.host_if, "up")
        self.sh(
            "ip",
            "netns",
            "exec",
            self.name,
            "ip",
            "addr",
            "add",
            f"{self.ns_ip}/30",
            "dev",
            self.ns_if,
        )
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", self.ns_if, "up")
        self.sh("ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up")
        return self

    def down(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 for a network namespace")
    ns = Netns()
    try:
        ns.up()
    except subprocess.CalledProcessError as exc:
        ns.down()
        pytest.skip(f"cannot make a network namespace here: {exc.stderr.decode().strip()}")
    try:
        yield ns
    finally:
        ns.down()
    assert (
        ns.name.encode() not in subprocess.run(["ip", "netns", "list"], capture_output=True).stdout
    )


def chromium_in(ns: Netns, url: str, server_host: str) -> object:
    from webaccel.browsers.chromium import chromium_flags, find_chromium
    from webaccel.browsers.process import BrowserProcess

    profile = Path(tempfile.mkdtemp(prefix="webaccel-remote-"))
    log = Path(tempfile.mkstemp(prefix="webaccel-remote-", suffix=".log")[1])
    argv = [
        "ip",
        "netns",
        "exec",
        ns.name,
        str(find_chromium()),
        *chromium_flags(profile, server_host=server_host),
        url,
    ]
    return BrowserProcess(argv, profile_dir=profile, log_path=log)


@pytest.mark.browser
async def test_browser_in_another_namespace_joins_serves_and_is_revoked(
    netns: Netns, tmp_path: Path
) -> None:
    from webaccel.pool import ResolvedModel, ResourcePool, StaticResolver
    from webaccel.pool.transport import ModelRef

    server, store = await started(netns.host_ip)
    proc = None
    try:
        # Nothing on loopback: the namespace has only its veth to us.
        assert server.url == f"http://{netns.host_ip}:{server.port}"
        advertise(server, server.url)
        tok = store.issue("netns")
        url = join_url(server.url, tok)
        w = (np.random.default_rng(5).standard_normal((8, 8))).astype(np.float32)
        _save_matmul(tmp_path / "m.onnx", w)
        rel = server.model_files.add("m", tmp_path / "m.onnx")
        resolver = StaticResolver()
        resolver.register(
            ResolvedModel("m", "text_embedding", (ModelRef(key="m:wasm", name="m", url=rel),))
        )
        joined = JoinedWorkers(server)
        proc = chromium_in(netns, url, netns.host_ip)
        pool = ResourcePool(
            max_connections=1,
            adaptive_scaling=False,
            launcher=joined,
            resolver=resolver,
            launchable=["chromium"],
            connection_timeout=60,
            heartbeat_interval=0.1,
            max_retries=1,
        )
        async with pool:
            (worker,) = pool.workers.values()
            assert worker.id.startswith(f"remote-{tok.id}-")
            caps = worker.capabilities
            # Plain http to a non-loopback address is not a secure context: no
            # crossOriginIsolated (WASM threads) -- why remote browsers want TLS.
            assert caps["wasm"]["crossOriginIsolated"] is False
            conn = server.hub.connections[worker.id]
            peer = conn.ws.client
            assert peer is not None and peer.host == netns.ns_ip  # it really came from outside
            xs = [
                np.random.default_rng(i).standard_normal((2, 8)).astype(np.float32)
                for i in range(10)
            ]
            results = await pool.execute_concurrent(
                [("m", {"x": x}) for x in xs], return_exceptions=False
            )
            for x, r in zip(xs, results, strict=True):
                np.testing.assert_allclose(r.outputs["y"], x @ w, atol=1e-4)
                assert r.worker_id == worker.id
            # Revoked: the worker is dropped at once and the page does not come back.
            assert await store.revoke(tok.id) == [worker.id]
            deadline = time.monotonic() + 5
            while worker.id in pool.workers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert worker.id not in pool.workers
            await asyncio.sleep(3)  # longer than the page's first reconnect delays
            assert worker.id not in server.hub.connections
            await pool.close(drain=False)
    finally:
        if proc is not None:
            await proc.terminate_async()  # type: ignore[attr-defined]
        await server.stop()


def _save_matmul(path: Path, w: np.ndarray) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = w.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


@pytest.mark.browser
@pytest.mark.slow
async def test_grid_node_in_another_namespace_serves(netns: Netns) -> None:
    """A hub on the veth address, a node inside the namespace: its Chromium opens
    the worker page at the server's veth address and serves from there."""
    pytest.importorskip("selenium")
    from webaccel.browsers import launch_worker

    from .helpers import smoke_test
    from .local_grid import LocalGrid

    grid = LocalGrid(host=netns.host_ip, nodes=0, session_request_timeout=30)
    await asyncio.to_thread(grid.start)
    server = WebAccelServer(netns.host_ip)
    await server.start()
    try:
        node = await asyncio.to_thread(grid.add_node, host=netns.ns_ip, netns=netns.name)
        assert node.uri == f"http://{netns.ns_ip}:{node.port}"
        worker = await launch_worker(server, "chromium", grid_url=grid.url, timeout=90)
        try:
            peer = server.hub.connections[worker.id].ws.client
            assert peer is not None and peer.host == netns.ns_ip
            result = await smoke_test(worker, server)
            assert result["backend"] == "wasm"
        finally:
            await worker.close()
    finally:
        await server.stop()
        await asyncio.to_thread(grid.stop)


async def test_remote_join_helper_prints_urls_and_qr_for_serve() -> None:
    from webaccel.browsers.remote import RemoteJoin

    server = WebAccelServer()
    remote = RemoteJoin(server, public_url="https://gpu.example.org/")
    await server.start()
    try:
        tok, urls = remote.issue("serve")
        assert urls == [f"https://gpu.example.org/join?token={tok.value}"]
        assert "https://gpu.example.org" in server.origins()  # pages behind the proxy pass
        text = remote.banner(tok, urls)
        assert urls[0] in text and tok.id in text and text.count("\n") > 15
        assert remote.joined.try_next() is None
        # The join route works through the helper too.
        assert (await join(server, tok.value)).status_code == 303
    finally:
        await server.stop()


async def test_token_admin_routes_need_the_master_token() -> None:
    from webaccel.browsers.remote import RemoteJoin

    server = WebAccelServer()
    RemoteJoin(server)  # adds /join and /admin/tokens
    await server.start()
    try:
        master = {"authorization": f"Bearer {server.token}"}
        async with httpx.AsyncClient(base_url=server.url) as client:
            assert (await client.get("/admin/tokens")).status_code == 401
            made = await client.post("/admin/tokens", headers=master, json={"label": "phone"})
            assert made.status_code == 201
            body = made.json()
            assert body["label"] == "phone" and body["join_path"].startswith("/join?token=")
            # A join token is no master key: it cannot list, issue or revoke.
            joiner = {"authorization": f"Bearer {body['token']}"}
            assert (await client.get("/admin/tokens", headers=joiner)).status_code == 401
            assert (await client.post("/admin/tokens", headers=joiner)).status_code == 401
            listed = (await client.get("/admin/tokens", headers=master)).json()["tokens"]
            assert [t["id"] for t in listed] == [body["id"]]
            assert body["token"] not in json.dumps(listed)  # secrets are never listed
            assert (await client.get(body["join_path"])).status_code == 303
            gone = await client.delete(f"/admin/tokens/{body['id']}", headers=master)
            assert gone.json()["revoked"] is True
            assert (await client.get(body["join_path"])).status_code == 403
            assert (await client.delete("/admin/tokens/nope", headers=master)).status_code == 404
    finally:
        await server.stop()


def admin_client(store: TokenStore, master: str = "master") -> httpx.AsyncClient:
    from starlette.applications import Starlette

    from webaccel.browsers.remote import token_admin_routes

    app = Starlette(routes=[*join_routes(store), *token_admin_routes(store, master)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


@pytest.mark.parametrize(
    "body",
    [
        b'{"max_workers": "x"}',
        b'{"max_workers": 0}',
        b'{"max_workers": 1.5}',
        b'{"max_workers": true}',
        b'{"ttl_s": NaN}',
        b'{"ttl_s": Infinity}',
        b'{"ttl_s": 1e400}',
        b'{"ttl_s": -1}',
        b'{"ttl_s": "soon"}',
        b'{"label": 5}',
        b'{"label": "\\ud800"}',
        b'{"lable": "typo"}',
        b"[1, 2]",
        b"not json",
        b'{"label": ' + b"[" * 5000 + b"]" * 5000 + b"}",  # past json's recursion limit
    ],
)
async def test_admin_refuses_bad_token_requests_at_the_door(body: bytes) -> None:
    store = TokenStore()
    master = {"authorization": "Bearer master"}
    async with admin_client(store) as client:
        r = await client.post("/admin/tokens", content=body, headers=master)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "BAD_REQUEST" and r.json()["error"]["message"]
        listed = await client.get("/admin/tokens", headers=master)
        assert listed.status_code == 200 and listed.json() == {"tokens": []}
    assert store.tokens() == []


async def test_admin_tokens_that_are_accepted_work_and_401_is_typed() -> None:
    store = TokenStore()
    master = {"authorization": "Bearer master"}
    async with admin_client(store) as client:
        r = await client.post("/admin/tokens", headers=master)  # no body: the defaults
        assert r.status_code == 201
        r = await client.post("/admin/tokens", headers=master,
                              json={"label": "phone", "ttl_s": 60, "max_workers": 1})
        assert r.status_code == 201 and r.json()["expires"] > time.time()
        assert (await client.get(r.json()["join_path"])).status_code == 303
        assert (await client.get(r.json()["join_path"])).status_code == 403  # used up
        assert (await client.get("/admin/tokens", headers=master)).status_code == 200
        denied = await client.get("/admin/tokens", headers={"authorization": "Bearer no"})
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "UNAUTHORIZED"
        assert denied.headers["www-authenticate"] == "Bearer"
        big = await client.post("/admin/tokens", headers=master,
                                json={"label": "x" * 100_000})
        assert big.status_code == 413 and big.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
        gone = await client.delete("/admin/tokens/nope", headers=master)
        assert gone.status_code == 404 and gone.json()["error"]["code"] == "NOT_FOUND"


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{}}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    server {{
        listen {host}:{port} ssl;
        ssl_certificate     {tmp}/cert.pem;
        ssl_certificate_key {tmp}/key.pem;
        client_max_body_size 0;
        location / {{
            proxy_pass http://127.0.0.1:{upstream};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "upgrade";
            proxy_set_header Host $host;
            proxy_read_timeout 3600s;
            proxy_buffering off;
        }}
    }}
}}
"""


def _self_signed(tmp: Path, ip: str) -> str:
    """A certificate for ``ip``; returns its SPKI SHA-256 (base64) for Chromium to trust."""
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(tmp / "key.pem"),
            "-out",
            str(tmp / "cert.pem"),
            "-subj",
            "/CN=webaccel-test",
            "-addext",
            f"subjectAltName=IP:{ip}",
        ],
        check=True,
        capture_output=True,
    )
    spki = subprocess.run(
        f"openssl x509 -in {tmp}/cert.pem -pubkey -noout | openssl pkey -pubin -outform der"
        " | openssl dgst -sha256 -binary | base64",
        shell=True,
        check=True,
        capture_output=True,
        text=True,
    )
    return spki.stdout.strip()


@pytest.mark.browser
@pytest.mark.slow
async def test_remote_browser_through_a_tls_reverse_proxy(netns: Netns, tmp_path: Path) -> None:
    """The README's nginx recipe, for real: a browser in the namespace opens the
    https join link, its page connects back over wss through nginx, and in that
    secure context it gets crossOriginIsolated (WASM threads) and WebGPU."""
    # make test installs both (the Makefile's system step): this test never skips there.
    assert shutil.which("nginx") and shutil.which("openssl"), "apt-get install nginx-light openssl"
    from webaccel.browsers.chromium import chromium_flags, find_chromium
    from webaccel.browsers.launching import free_port, wait_port
    from webaccel.browsers.process import BrowserProcess
    from webaccel.browsers.remote import RemoteJoin

    from .helpers import smoke_test

    spki = _self_signed(tmp_path, netns.host_ip)
    tls_port = free_port(netns.host_ip)
    public = f"https://{netns.host_ip}:{tls_port}"
    server = WebAccelServer()  # loopback only: the proxy is the only way in
    remote = RemoteJoin(server, public_url=public)
    await server.start()
    (tmp_path / "nginx.conf").write_text(
        NGINX_CONF.format(tmp=tmp_path, host=netns.host_ip, port=tls_port, upstream=server.port)
    )
    nginx = BrowserProcess(
        ["nginx", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        profile_dir=tmp_path / "nginx-scratch",
        log_path=tmp_path / "ng.log",
    )
    browser = None
    try:
        assert await asyncio.to_thread(wait_port, netns.host_ip, tls_port, 10), nginx.log_tail()
        tok, urls = remote.issue("tls")
        assert urls[0].startswith(public + "/join?token=")
        profile = Path(tempfile.mkdtemp(prefix="webaccel-remote-"))
        browser = BrowserProcess(
            [
                "ip",
                "netns",
                "exec",
                netns.name,
                str(find_chromium()),
                *chromium_flags(profile, server_host=netns.host_ip),
                f"--ignore-certificate-errors-spki-list={spki}",
                urls[0],
            ],
            profile_dir=profile,
            log_path=tmp_path / "chromium.log",
        )
        worker = await remote.joined.next(timeout=60)
        caps = worker.capabilities
        assert caps["wasm"]["crossOriginIsolated"] is True  # COOP/COEP survived the proxy
        # secure context: navigator.gpu exists and gave an adapter (a software one here,
        # which the page then leaves unused: it loads the wasm-only build, see page.mjs)
        gpu = caps["webgpu"]
        assert gpu["available"] is True or gpu["software"] is True, gpu
        result = await smoke_test(worker, server)
        assert result["backend"] == "wasm"
        # Revocation works through the proxy too.
        assert await remote.tokens.revoke(tok.id) == [worker.id]
    finally:
        if browser is not None:
            await browser.terminate_async()
        await nginx.terminate_async()
        await server.stop()


async def test_a_silent_joined_page_counts_as_lost() -> None:
    """A remote page can vanish without closing its socket (a laptop lid): no
    heartbeats for ``silence_s`` and the worker is no longer alive."""
    from webaccel.browsers.remote import RemoteJoin

    server = WebAccelServer()
    remote = RemoteJoin(server)
    await server.start()
    try:
        tok, _ = remote.issue()
        resp = await join(server, tok.value)
        worker_id = parse_qs(urlsplit(resp.headers["location"]).query)["worker"][0]
        async with websockets.connect(ws_url(server, tok.value, worker_id)) as ws:
            await ws.send(hello(worker_id))
            worker = await remote.joined.next(timeout=5)
            assert worker.id == worker_id and worker.launcher == "join"
            worker.silence_s = 0.5
            assert worker.alive
            await asyncio.sleep(0.7)
            assert not worker.alive  # the socket is still open, but the page is silent
            await ws.send(json.dumps({"id": "hb1", "type": "heartbeat", "data": {}}))
            await asyncio.sleep(0.1)
            assert worker.alive  # it spoke again
    finally:
        await server.stop()
