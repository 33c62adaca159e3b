"""``/v1`` input handling without a browser: nothing a client sends may become a 500.

Every case here is refused before the engine is reached, so the engine is a
stand-in that fails the test if it is ever called.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from webaccel.openai_api import MAX_BODY_BYTES, openai_routes

KEY = "sk-routes-test"
AUTH = {"authorization": f"Bearer {KEY}"}
POST_ROUTES = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]


class UncalledEngine:
    """The engine behind ``/v1``, for requests validation must refuse first."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def accelerate(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(args)
        raise AssertionError("validation let a bad request through to the engine")


@pytest.fixture
def v1():
    engine = UncalledEngine()
    app = Starlette(routes=openai_routes(engine, KEY))  # type: ignore[arg-type]
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    return client, engine, app


def openai_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_deeply_nested_json_is_400_on_every_route(v1, path: str) -> None:
    client, engine, _ = v1
    for depth in (100_000, 50):  # past json's recursion limit, and past ours
        deep = b"[" * depth + b"]" * depth
        body = b'{"model": "minilm", "input": ' + deep + b', "messages": ' + deep + b"}"
        err = openai_error(await client.post(path, content=body, headers=AUTH), 400)
        assert err["type"] == "invalid_request_error" and "nests" in err["message"]
    assert engine.calls == []


SURROGATE = "\ud800"
SURROGATE_CASES = [
    ("/v1/embeddings", {"model": SURROGATE, "input": "x"}, "model"),
    ("/v1/embeddings", {"model": "minilm", "input": SURROGATE}, "input"),
    ("/v1/embeddings", {"model": "minilm", "input": ["ok", "a" + SURROGATE]}, "input[1]"),
    ("/v1/completions", {"model": "smollm2", "prompt": SURROGATE}, "prompt"),
    ("/v1/completions", {"model": SURROGATE, "prompt": "x"}, "model"),
    (
        "/v1/chat/completions",
        {"model": "smollm2", "messages": [{"role": "user", "content": "hi " + SURROGATE}]},
        "messages[0].content",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": [{"type": "text", "text": SURROGATE}]}]},
        "messages[0].content[0].text",
    ),
    (
        "/v1/chat/completions",
        {"messages": [{"role": SURROGATE, "content": "x"}]},
        "messages[0].role",
    ),
]


@pytest.mark.parametrize("path,body,param", SURROGATE_CASES)
async def test_a_lone_surrogate_is_400_naming_the_field(v1, path, body, param) -> None:
    client, engine, _ = v1
    raw = json.dumps(body).encode()  # ensure_ascii: the surrogate travels as "\ud800"
    assert b"\\ud800" in raw
    err = openai_error(await client.post(path, content=raw, headers=AUTH), 400)
    assert err["param"] == param and "Unicode" in err["message"]
    assert engine.calls == []


async def test_a_lone_surrogate_as_raw_bytes_or_in_a_key_is_400(v1) -> None:
    client, engine, _ = v1
    cesu = b'{"model": "minilm", "input": "\xed\xa0\x80"}'  # json decodes with surrogatepass
    openai_error(await client.post("/v1/embeddings", content=cesu, headers=AUTH), 400)
    key = b'{"model": "minilm", "input": "x", "\\udfff": 1}'
    openai_error(await client.post("/v1/embeddings", content=key, headers=AUTH), 400)
    assert engine.calls == []


async def test_nan_and_infinity_are_not_json(v1) -> None:
    client, _, _ = v1
    for constant in (b"NaN", b"Infinity", b"-Infinity"):
        body = b'{"messages": [{"role": "user", "content": "x"}], "temperature": ' + constant + b"}"
        r = await client.post("/v1/chat/completions", content=body, headers=AUTH)
        assert "not valid JSON" in openai_error(r, 400)["message"]


async def _post_chunked(app, path: str, total: int, chunk: int) -> tuple[int, int, bytes]:
    """POST ``total`` bytes in ``chunk``-sized pieces with no Content-Length, straight
    through ASGI; returns (status, bytes the app read, response body)."""
    piece = b" " * chunk
    sent = 0
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent >= total:
            return {"type": "http.disconnect"}
        sent += chunk
        return {"type": "http.request", "body": piece, "more_body": sent < total}

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "server": ("t", 80),
        "client": ("c", 1),
        "headers": [
            (b"host", b"t"),
            (b"authorization", AUTH["authorization"].encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
    }
    await app(scope, receive, send)
    start = next(m for m in messages if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
    return start["status"], sent, body


@pytest.mark.parametrize("path", POST_ROUTES)
async def test_a_huge_chunked_body_is_cut_off_at_the_limit(v1, path: str) -> None:
    _, engine, app = v1
    chunk = 64 * 1024
    status, read, body = await _post_chunked(app, path, total=3 * MAX_BODY_BYTES, chunk=chunk)
    assert status == 413
    assert read <= MAX_BODY_BYTES + chunk, f"read {read} bytes before answering"
    assert json.loads(body)["error"]["code"] == "payload_too_large"
    assert engine.calls == []


async def test_a_declared_length_past_the_limit_is_refused_unread(v1) -> None:
    client, _, _ = v1
    headers = {**AUTH, "content-length": str(MAX_BODY_BYTES + 1)}
    r = await client.post("/v1/embeddings", content=b"x" * 10, headers=headers)
    openai_error(r, 413)


async def test_auth_and_unknown_routes_answer_in_openai_shape(v1) -> None:
    client, _, _ = v1
    r = await client.get("/v1/models", headers={"authorization": "Bearer wrong"})
    err = openai_error(r, 401)
    assert err["code"] == "invalid_api_key" and r.headers["www-authenticate"] == "Bearer"
    err = openai_error(await client.get("/v1/nope", headers=AUTH), 404)
    assert err["code"] == "not_found"
    err = openai_error(await client.get("/v1/models/no-such-model", headers=AUTH), 404)
    assert err["code"] == "model_not_found" and err["param"] == "model"


@pytest.mark.parametrize(
    "method,path,allow",
    [("PUT", "/v1/chat/completions", "POST"), ("GET", "/v1/embeddings", "POST"),
     ("DELETE", "/v1/models", "GET, HEAD"), ("PATCH", "/v1/models/minilm", "GET, HEAD"),
     ("POST", "/v1/openapi.json", "GET, HEAD"), ("TRACE", "/v1/chat/completions", "POST"),
     ("QUERY", "/v1/models", "GET, HEAD")],
)
async def test_a_known_path_with_another_method_is_405_with_allow(v1, method, path, allow) -> None:
    """Found by schemathesis (unsupported_method): PUT /v1/chat/completions was a 404,
    as if the path did not exist; PATCH fell through to a plain-text 405, and TRACE or
    QUERY got that plain-text 405 even without the key."""
    client, engine, _ = v1
    r = await client.request(method, path, headers=AUTH)
    err = openai_error(r, 405)
    assert r.headers["allow"] == allow and err["code"] == "method_not_allowed"
    for unknown in ("/v1/nope", "/v1/chat/completions/x"):
        openai_error(await client.request(method, unknown, headers=AUTH), 404)
    assert openai_error(await client.request(method, path), 401)  # the key comes first
    assert engine.calls == []


async def test_a_newline_in_a_v1_path_is_still_a_v1_answer(v1) -> None:
    """Found by schemathesis: GET /v1/models/a%0Ab matched no /v1 route (Starlette's
    path convertor stops at a newline) and got the server's bare 404, in the bridge's
    error shape and without the key check."""
    client, _, _ = v1
    err = openai_error(await client.get("/v1/models/a%0Ab", headers=AUTH), 404)
    assert err["code"] == "model_not_found" and "'a\nb'" in err["message"]
    openai_error(await client.get("/v1/models/a%0Ab"), 401)
    err = openai_error(await client.post("/v1/x%0Ay", headers=AUTH), 404)
    assert err["code"] == "not_found"
    openai_error(await client.put("/v1/models/a%0Ab", headers=AUTH), 405)


def test_the_document_lists_exactly_the_fields_each_route_reads() -> None:
    """What the document says of a body is what validation does: the fields each route
    reads, model required, nothing else (the server refuses any other field)."""
    from webaccel.openai import openapi_document, validation

    paths = openapi_document()["paths"]
    for path, fields in (
        ("/v1/chat/completions", validation.CHAT_FIELDS),
        ("/v1/completions", validation.COMPLETION_FIELDS),
        ("/v1/embeddings", validation.EMBEDDING_FIELDS),
    ):
        body = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert set(body["properties"]) == fields, path
        assert body["additionalProperties"] is False and "model" in body["required"]


@pytest.mark.parametrize(
    "path,field,value",
    [("/v1/chat/completions", "user", 5), ("/v1/embeddings", "user", ["u"]),
     ("/v1/chat/completions", "metadata", {"k": 1}), ("/v1/chat/completions", "metadata", "k"),
     ("/v1/chat/completions", "store", "yes")],
)
async def test_fields_read_but_unused_still_have_their_types(v1, path, field, value) -> None:
    client, _, _ = v1
    body = {"model": UNKNOWN, field: value}
    body.update({"input": "x"} if "embeddings" in path else {"messages": MESSAGES})
    err = openai_error(await client.post(path, json=body, headers=AUTH), 400)
    assert err["param"] == field


async def test_openapi_lists_the_tables_statuses(v1) -> None:
    client, _, _ = v1
    doc = (await client.get("/v1/openapi.json")).json()
    responses = doc["paths"]["/v1/embeddings"]["post"]["responses"]
    assert {"400", "401", "413", "429", "504"} <= set(responses)


async def test_openapi_document_is_valid_openapi_3_1(v1) -> None:
    """Validated as OpenAPI 3.1 (it once used ``{model}`` in a path without declaring it),
    and the 200s that need no browser have schemas their answers match."""
    from openapi_spec_validator import OpenAPIV31SpecValidator

    client, _, _ = v1
    doc = (await client.get("/v1/openapi.json")).json()
    OpenAPIV31SpecValidator(doc).validate()
    (param,) = doc["paths"]["/v1/models/{model}"]["get"]["parameters"]
    assert param["in"] == "path" and param["name"] == "model" and param["required"] is True
    assert doc["paths"]["/v1/openapi.json"]["get"]["security"] == []  # open, as served

    import jsonschema

    def ok_schema(path: str) -> dict:
        return doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]

    listed = (await client.get("/v1/models", headers=AUTH)).json()
    jsonschema.validate(listed, ok_schema("/v1/models"))
    one = (await client.get("/v1/models/minilm", headers=AUTH)).json()
    jsonschema.validate(one, ok_schema("/v1/models/{model}"))


def test_a_300_mib_chunked_post_over_a_socket_gets_413_early() -> None:
    """The issue's case over real HTTP (uvicorn): the answer comes, and the upload is
    cut off, long before 300 MiB are sent."""
    import select
    import socket

    from webaccel.content.testing import serve_in_thread

    app = Starlette(routes=openai_routes(UncalledEngine(), KEY))  # type: ignore[arg-type]
    srv = serve_in_thread(app)
    host, port = srv.url.removeprefix("http://").split(":")
    chunk = b" " * (1 << 20)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent, reply = 0, b""
    try:
        with socket.create_connection((host, int(port)), timeout=2) as sock:
            sock.sendall(
                b"POST /v1/embeddings HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                + f"Authorization: Bearer {KEY}\r\n".encode()
                + b"Transfer-Encoding: chunked\r\n\r\n"
            )
            while sent < 300 << 20:
                if select.select([sock], [], [], 0)[0]:
                    break
                try:
                    sock.sendall(frame)
                except OSError:  # the server closed its side after answering
                    break
                sent += len(chunk)
            sock.settimeout(10)
            while b"\r\n\r\n" not in reply:
                got = sock.recv(65536)
                if not got:
                    break
                reply += got
    finally:
        srv.stop()
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert sent < 64 << 20, f"sent {sent >> 20} MiB before the server answered"


# ---------------------------------------------------- fields: required, unknown, unsupported

MESSAGES = [{"role": "user", "content": "hi"}]
FIELD_CASES = [
    ("/v1/chat/completions", {"messages": MESSAGES}, "model", "missing_required_parameter"),
    ("/v1/completions", {"prompt": "x"}, "model", "missing_required_parameter"),
    ("/v1/embeddings", {"input": "x"}, "model", "missing_required_parameter"),
    ("/v1/chat/completions", {"model": "smollm2", "messages": MESSAGES, "temprature": 0.5},
     "temprature", "unknown_parameter"),
    ("/v1/completions", {"model": "smollm2", "prompt": "x", "messages": MESSAGES},
     "messages", "unknown_parameter"),
    ("/v1/embeddings", {"model": "minilm", "input": "x", "max_tokens": 3},
     "max_tokens", "unknown_parameter"),
    ("/v1/chat/completions",
     {"model": "smollm2", "messages": MESSAGES, "tools": [{"type": "function"}]},
     "tools", "unsupported_parameter"),
    ("/v1/chat/completions",
     {"model": "smollm2", "messages": MESSAGES, "response_format": {"type": "json_object"}},
     "response_format", "unsupported_parameter"),
    ("/v1/completions", {"model": "smollm2", "prompt": "x", "logit_bias": {"1": 5}},
     "logit_bias", "unsupported_parameter"),
    ("/v1/embeddings", {"model": "minilm", "input": "x", "truncate_prompt_tokens": 1000},
     "truncate_prompt_tokens", "invalid_value"),
]


@pytest.mark.parametrize("path,body,param,code", FIELD_CASES)
async def test_missing_model_and_unknown_or_unsupported_fields_are_400_naming_them(
    v1, path, body, param, code
) -> None:
    client, engine, _ = v1
    err = openai_error(await client.post(path, json=body, headers=AUTH), 400)
    assert err["param"] == param and err["code"] == code
    if code != "missing_required_parameter":
        assert repr(param) in err["message"] or param in err["message"]
    assert engine.calls == []


UNKNOWN = "no-such-model"
BEFORE_THE_MODEL = [
    ("/v1/chat/completions", {"model": UNKNOWN, "messages": []}, "messages"),
    ("/v1/chat/completions", {"model": UNKNOWN, "messages": MESSAGES, "stream": "yes"}, "stream"),
    ("/v1/chat/completions",
     {"model": UNKNOWN, "messages": MESSAGES, "stream_options": {"include_usage": "yes"}},
     "stream_options.include_usage"),
    ("/v1/chat/completions", {"model": UNKNOWN, "messages": MESSAGES, "stream_options": 1},
     "stream_options"),
    ("/v1/completions", {"model": UNKNOWN, "prompt": "x", "top_p": 0}, "top_p"),
    ("/v1/completions", {"model": UNKNOWN, "prompt": ""}, "prompt"),
    ("/v1/embeddings", {"model": UNKNOWN, "input": " "}, "input"),
    ("/v1/embeddings", {"model": UNKNOWN, "input": "x", "encoding_format": "hex"},
     "encoding_format"),
    ("/v1/embeddings", {"model": UNKNOWN, "input": "x", "dimensions": "3"}, "dimensions"),
]


@pytest.mark.parametrize("path,body,param", BEFORE_THE_MODEL)
async def test_every_field_is_checked_before_the_model_is_looked_up(v1, path, body, param) -> None:
    """Whatever model a request names, what is wrong with its fields is the answer (and
    the fuzzer, which may only name models that do not exist, reaches every check)."""
    client, engine, _ = v1
    err = openai_error(await client.post(path, json=body, headers=AUTH), 400)
    assert err["param"] == param, err
    ok = {k: v for k, v in body.items() if k != param}
    ok.update({"messages": MESSAGES} if "messages" in body else {})
    ok.update({"prompt": "x"} if "prompt" in body else {})
    ok.update({"input": "x"} if "input" in body else {})
    if param == "stream_options.include_usage":
        del ok["stream_options"]
    err = openai_error(await client.post(path, json=ok, headers=AUTH), 404)
    assert err["param"] == "model" and err["code"] == "model_not_found"
    assert engine.calls == []


HUGE = 10**400  # a JSON integer past float's range


@pytest.mark.parametrize(
    "field",
    ["repetition_penalty", "temperature", "top_p", "top_k", "seed", "max_tokens",
     "max_completion_tokens", "presence_penalty", "n"],
)
@pytest.mark.parametrize("sign", [1, -1])
async def test_a_400_digit_number_is_a_400_naming_its_field(v1, field, sign) -> None:
    """repetition_penalty went through float() before its range check: OverflowError, a
    500.  top_k and seed had no upper bound at all."""
    client, engine, _ = v1
    body = {"model": UNKNOWN, "prompt": "x", field: sign * HUGE}
    err = openai_error(await client.post("/v1/completions", json=body, headers=AUTH), 400)
    assert err["param"] == field, err
    assert engine.calls == []


async def test_max_completion_tokens_0_is_refused_not_ignored(v1) -> None:
    client, _, _ = v1
    body = {"model": UNKNOWN, "prompt": "x", "max_completion_tokens": 0, "max_tokens": 5}
    err = openai_error(await client.post("/v1/completions", json=body, headers=AUTH), 400)
    assert err["param"] == "max_completion_tokens"


@pytest.mark.parametrize(
    "field,value,ok",
    [("max_completion_tokens", 16.0, True), ("top_k", 17201.0, True), ("seed", 10354888.0, True),
     ("n", 1.0, True), ("max_tokens", 2.5, False), ("top_k", -1.0, False)],
)
def test_integral_floats_are_integers_as_in_json_schema(field, value, ok) -> None:
    """Found by schemathesis: {"top_k": 17201.0} is a valid integer to the OpenAPI
    document (JSON Schema) but was a 400 ("must be of type int, got float")."""
    from webaccel.errors import InvalidInputError
    from webaccel.openai import validation

    body = {"model": "smollm2", "prompt": "x", field: value}
    if not ok:
        with pytest.raises(InvalidInputError):
            validation.generation_params(body)
        return
    params = validation.generation_params(body)
    got = validation.get(body, field, int)
    assert type(got) is int and got == value
    if field in params:
        assert type(params[field]) is int


def test_generation_params_refuse_huge_numbers_with_a_typed_error() -> None:
    from webaccel.errors import InvalidInputError
    from webaccel.generation import GenerationParams

    for field in ("temperature", "top_p", "repetition_penalty"):
        with pytest.raises(InvalidInputError, match=field):
            GenerationParams(**{field: HUGE})  # was OverflowError from math.isfinite


async def test_off_values_of_unsupported_fields_are_accepted_by_validation() -> None:
    from webaccel.openai import validation

    body = {"model": "smollm2", "messages": MESSAGES, "tools": [], "tool_choice": "none",
            "logit_bias": {}, "response_format": {"type": "text"}, "user": "u1"}
    validation.check_fields(body, validation.CHAT_FIELDS)  # no error


async def test_embedding_input_over_the_context_is_400_unless_truncation_is_asked(v1) -> None:
    from webaccel.openai.validation import fit_embedding_inputs

    client, engine, _ = v1
    long = "word " * 1000  # ~1000 tokens; MiniLM's context is 256
    err = openai_error(
        await client.post("/v1/embeddings", json={"model": "minilm", "input": ["ok", long]},
                          headers=AUTH), 400)
    assert err["param"] == "input" and err["code"] == "context_length_exceeded"
    assert "input[1]" in err["message"] and "256" in err["message"]
    assert engine.calls == []
    texts, cut, tokens = fit_embedding_inputs("minilm", ["ok", long], -1)
    assert cut == [False, True] and texts[0] == "ok" and tokens == 3 + 256
    texts, cut, tokens = fit_embedding_inputs("minilm", [long], 10)
    assert texts == ["word " * 7 + "word"] and cut == [True] and tokens == 10
