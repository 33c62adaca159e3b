"""The one table from error code to HTTP status: every code, every route family.

The renderers are checked directly, then real routes of each family raise every
code and must answer with the table's status: the gateway (a block store whose
read fails), ``/v1`` (an engine whose ``accelerate`` fails) and the bridge's
model-bytes endpoint (a model file whose lazy build fails).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette

from webaccel.content.gateway import Gateway, error_response, gateway_routes
from webaccel.content.importer import import_bytes
from webaccel.content.store import BlockStore
from webaccel.errors import (
    HTTP_ERRORS,
    ErrorCode,
    InternalError,
    ModelNotFoundError,
    OverloadedError,
    TimeoutError_,
    UnauthorizedError,
    error_from_code,
    json_error_response,
    openai_error_body,
    openai_error_response,
    plain_error_response,
)

ALL_CODES = list(ErrorCode)


def test_every_code_has_a_row_and_a_class() -> None:
    assert set(HTTP_ERRORS) == set(ErrorCode)
    for code in ErrorCode:
        exc = error_from_code(str(code), "m")
        assert exc.code == code, f"{code} rebuilds as {type(exc).__name__}"
        assert 400 <= HTTP_ERRORS[code].status < 600
    # Client mistakes are 4xx and ours 5xx: a retrying client must be able to tell.
    assert HTTP_ERRORS[ErrorCode.BAD_REQUEST].status == 400
    assert HTTP_ERRORS[ErrorCode.UNAUTHORIZED].status == 401
    assert HTTP_ERRORS[ErrorCode.TIMEOUT].status == 504
    assert HTTP_ERRORS[ErrorCode.OVERLOADED].status == 429


@pytest.mark.parametrize("code", ALL_CODES)
def test_each_response_shape_reads_the_table(code: ErrorCode) -> None:
    exc = error_from_code(str(code), "what to do next")
    want = HTTP_ERRORS[code].status
    shapes = {
        "openai": openai_error_response(exc),
        "bridge": json_error_response(exc),
        "plain": plain_error_response(exc),
        "gateway": error_response(exc),
    }
    assert {name: r.status_code for name, r in shapes.items()} == dict.fromkeys(shapes, want)
    openai = json.loads(shapes["openai"].body)["error"]
    assert openai["type"] == HTTP_ERRORS[code].openai_type and openai["message"]
    assert json.loads(shapes["bridge"].body)["error"] == {
        "code": str(code),
        "message": "what to do next",
    }
    assert shapes["plain"].body == f"{want}: what to do next\n".encode()
    for r in shapes.values():
        assert r.headers["cache-control"] == "no-store"
        assert ("retry-after" in r.headers) == (HTTP_ERRORS[code].retry_after_s is not None)
        assert ("www-authenticate" in r.headers) == (want == 401)


def test_401_carries_an_auth_code_in_every_shape() -> None:
    exc = UnauthorizedError("send 'Authorization: Bearer <key>'")
    assert openai_error_body(exc)["error"]["code"] == "invalid_api_key"
    assert json.loads(json_error_response(exc).body)["error"]["code"] == "UNAUTHORIZED"
    assert json_error_response(exc).headers["www-authenticate"] == "Bearer"


def test_foreign_errors_render_as_internal_without_their_text() -> None:
    secret = RuntimeError("/home/alice/.ssh/id_rsa could not be read")
    for render in (openai_error_response, json_error_response, plain_error_response):
        r = render(secret)
        assert r.status_code == 500 and b"id_rsa" not in r.body


def test_a_message_quoting_a_lone_surrogate_still_renders() -> None:
    exc = ModelNotFoundError("the model '\ud800' does not exist")
    for render in (openai_error_response, json_error_response, plain_error_response):
        assert render(exc).status_code == 404  # the table's status, not a crash


def test_retry_after_follows_the_error_details() -> None:
    r = openai_error_response(OverloadedError("full", details={"retry_after_s": 2.2}))
    assert r.status_code == 429 and r.headers["retry-after"] == "3"


# ------------------------------------------------------------------ real routes


class FailingStore(BlockStore):
    """A real block store whose next read fails with ``exc`` (a peer timing out, ...)."""

    exc: BaseException = InternalError("unset")

    async def node(self, c: bytes):  # type: ignore[no-untyped-def]
        raise self.exc


class FailingEngine:
    """Stands in for the engine behind ``/v1`` (HTTP layer only): every run fails."""

    exc: BaseException = InternalError("unset")

    async def accelerate(self, *args: object, **kwargs: object) -> dict[str, object]:
        raise self.exc


KEY = "sk-table-test"


def _apps(tmp_path: Path) -> tuple[FailingStore, FailingEngine, dict[str, httpx.AsyncClient]]:
    from webaccel.bridge.endpoint import WorkerHub
    from webaccel.openai_api import openai_routes
    from webaccel.server import ModelFiles, create_app

    store = FailingStore(tmp_path / "blocks")
    engine = FailingEngine()
    files = ModelFiles()

    def build() -> Path:
        raise engine.exc

    files.add_lazy("m/fp32/model.onnx", build)
    apps = {
        "gateway": Starlette(routes=gateway_routes(store, gateway=Gateway(store))),
        "v1": Starlette(routes=openai_routes(engine, KEY)),  # type: ignore[arg-type]
        "bridge": create_app(token="t", hub=WorkerHub(), model_files=files, allowed_origins=set),
    }
    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
        for name, app in apps.items()
    }
    return store, engine, clients


async def test_every_code_maps_the_same_on_gateway_v1_and_bridge_routes(tmp_path: Path) -> None:
    store, engine, clients = _apps(tmp_path)
    entry, _ = import_bytes(b"some bytes", "kubo-v1")
    for code in ALL_CODES:
        exc = error_from_code(str(code), f"{code} happened")
        store.exc = engine.exc = exc
        got = {
            "gateway": await clients["gateway"].get(f"/ipfs/{entry.cid_str}"),
            "v1": await clients["v1"].post(
                "/v1/embeddings",
                json={"model": "minilm", "input": "hello"},
                headers={"authorization": f"Bearer {KEY}"},
            ),
            "bridge": await clients["bridge"].get(
                "/models/m/fp32/model.onnx", headers={"authorization": "Bearer t"}
            ),
        }
        statuses = {name: r.status_code for name, r in got.items()}
        assert statuses == dict.fromkeys(got, HTTP_ERRORS[code].status), code
        assert got["v1"].json()["error"]["type"] == HTTP_ERRORS[code].openai_type
        assert got["bridge"].json()["error"]["code"] == str(code)
        assert got["gateway"].text == f"{HTTP_ERRORS[code].status}: {code} happened\n"
    for client in clients.values():
        await client.aclose()


async def test_a_timeout_is_504_on_gateway_and_v1_and_429_says_when_to_retry(
    tmp_path: Path,
) -> None:
    store, engine, clients = _apps(tmp_path)
    entry, _ = import_bytes(b"some bytes", "kubo-v1")
    auth = {"authorization": f"Bearer {KEY}"}
    body = {"model": "minilm", "input": "hello"}
    store.exc = engine.exc = TimeoutError_("peers did not answer in 30 s; retry later")
    assert (await clients["gateway"].get(f"/ipfs/{entry.cid_str}")).status_code == 504
    r = await clients["v1"].post("/v1/embeddings", json=body, headers=auth)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    store.exc = engine.exc = OverloadedError("the pool is full; retry in a second")
    g = await clients["gateway"].get(f"/ipfs/{entry.cid_str}")
    v = await clients["v1"].post("/v1/embeddings", json=body, headers=auth)
    for r in (g, v):
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
    for client in clients.values():
        await client.aclose()


def test_the_tree_in_the_docstring_matches_the_classes_and_the_table() -> None:
    import re

    import webaccel.errors as errors

    rows = re.findall(r"[├└]── (\w+)\s+([A-Z_]+)\s+(\d{3})", errors.__doc__ or "")
    assert len(rows) >= len(ErrorCode)
    for name, code, status in rows:
        cls = getattr(errors, name)
        assert cls.code == code, name
        assert HTTP_ERRORS[ErrorCode(code)].status == int(status), name
    assert {code for _, code, _ in rows} == {str(c) for c in ErrorCode}
