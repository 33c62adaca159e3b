"""The OpenAI-compatible API: the official ``openai`` client against ``webaccel serve``,
raw SSE/auth/validation checks with httpx, and disconnect -> cancel in the page.

``webaccel serve`` runs as a real subprocess (the CLI entry point, with the tiny
test Llama registered first so generation stays fast); the disconnect test runs
the same routes in-process so it can watch the page's frames.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from webaccel.generation import GenerationParams

pytestmark = pytest.mark.browser

KEY = "test-key-" + "x" * 16
SERVE = (
    "from webaccel.generation.testing import tiny_llama_spec; tiny_llama_spec('tiny-llama'); "
    "import sys; from webaccel.cli import main; sys.argv[0] = 'webaccel'; main()"
)


HEALTH_SEEN: list[tuple[int, dict]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_models():
    pytest.importorskip("torch")
    from webaccel.generation import load_generation_model
    from webaccel.generation.native import NativeGenerator
    from webaccel.generation.testing import tiny_llama_spec
    from webaccel.models import registry

    tiny_llama_spec("tiny-llama")
    _, gm, path = load_generation_model("tiny-llama")
    registry.get("minilm").ensure_onnx()  # built once here, not inside a request
    return gm, NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory):
    """``webaccel serve`` on a free loopback port with one Chromium worker."""
    from webaccel import paths

    home = tmp_path_factory.mktemp("serve-home")
    (home / "models").symlink_to(paths.subdir("models"))  # reuse the built models
    port = free_port()
    log = home / "serve.log"
    env = {**os.environ, "WEBACCEL_HOME": str(home), "WEBACCEL_API_KEY": KEY}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--port", str(port), "--browsers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"webaccel serve exited: {Path(log).read_text()[-3000:]}")
            try:
                r = httpx.get(
                    url + "/v1/models", headers={"authorization": f"Bearer {KEY}"}, timeout=2
                )
                if r.status_code == 200 and b"serving on" in Path(log).read_bytes():
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"webaccel serve did not start: {Path(log).read_text()[-3000:]}")
            time.sleep(0.3)
        # /health as vLLM's: 503 while the --browsers worker starts, 200 once it serves
        while True:
            r = httpx.get(url + "/health", timeout=10)
            HEALTH_SEEN.append((r.status_code, r.json()))
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def client(served):
    openai = pytest.importorskip("openai")
    return openai.OpenAI(base_url=served + "/v1", api_key=KEY, max_retries=0, timeout=300)


def chat_reference(tiny_models, messages, max_tokens):
    gm, native = tiny_models
    ids = gm.encode(gm.apply_chat_template(messages))
    res = native.generate(
        ids, GenerationParams(max_tokens=max_tokens), stop_token_ids=gm.eos_token_ids
    )
    return gm.decode(res.token_ids), res, len(ids)


MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a city in Japan: 東京?"},
]


# ------------------------------------------------------------------ openai client


def test_openai_client_chat_completion(client, tiny_models):
    want, res, prompt_tokens = chat_reference(tiny_models, MESSAGES, 24)
    out = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, max_tokens=24, temperature=0
    )
    assert out.object == "chat.completion" and out.model == "tiny-llama"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].message.content == want
    assert out.choices[0].finish_reason == ("stop" if res.finish_reason == "stop" else "length")
    assert out.usage.prompt_tokens == prompt_tokens
    assert out.usage.completion_tokens == len(res.token_ids)


def test_openai_client_streaming_chat(client, tiny_models):
    want, _, _ = chat_reference(tiny_models, MESSAGES, 24)
    stream = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == want
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finals in (["length"], ["stop"])
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 24


def test_openai_client_embeddings(client):
    import onnxruntime as ort

    from webaccel.models import registry

    texts = ["The quick brown fox.", "Grüße aus Köln", "東京は日本の首都です。"]
    out = client.embeddings.create(model="minilm", input=texts)  # the client asks for base64
    got = np.array([d.embedding for d in out.data], dtype=np.float32)
    assert got.shape == (3, 384) and [d.index for d in out.data] == [0, 1, 2]
    spec = registry.get("minilm")
    proc = spec.processor()
    prepared = proc.preprocess(texts, {})
    sess = ort.InferenceSession(str(spec.ensure_onnx()), providers=["CPUExecutionProvider"])
    (pooled,) = sess.run(["sentence_embedding"], prepared.tensors)
    want = proc.postprocess({"sentence_embedding": pooled}, prepared)["embeddings"]
    assert (got * want).sum(axis=1).min() > 0.9999
    assert out.usage.prompt_tokens == int(prepared.tensors["attention_mask"].sum())


def test_openai_client_completions_and_models(client, tiny_models):
    gm, native = tiny_models
    want = native.generate(
        gm.encode("Once upon"), GenerationParams(max_tokens=10), stop_token_ids=gm.eos_token_ids
    )
    out = client.completions.create(
        model="tiny-llama", prompt="Once upon", max_tokens=10, temperature=0
    )
    assert out.choices[0].text == gm.decode(want.token_ids)
    ids = {m.id for m in client.models.list().data}
    assert {"smollm2", "minilm", "tiny-llama"} <= ids


def test_openai_client_errors_are_typed(client, served):
    import openai

    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-llama", messages=MESSAGES, temperature=7)
    assert info.value.body["param"] == "temperature"
    bad = openai.OpenAI(base_url=served + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_no_sampling_parameters_use_the_models_generation_config(client):
    """As vLLM: a request without temperature/top_p/top_k gets the model's own
    generation_config.json values; the page reports what it sampled with."""
    from webaccel.generation.testing import TINY_SAMPLING

    out = client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=8)
    info = out.model_extra["webaccel"]
    assert info["sampling"] == {**TINY_SAMPLING, "repetition_penalty": 1.0}
    assert info["sampling_source"] == {
        "temperature": "generation_config",
        "top_p": "generation_config",
        "top_k": "generation_config",
        "repetition_penalty": "default",
    }
    out = client.chat.completions.create(
        model="tiny-llama", messages=MESSAGES, max_tokens=8, temperature=0, top_p=0.5
    )
    info = out.model_extra["webaccel"]
    assert info["sampling"] == {"temperature": 0, "top_p": 0.5, "top_k": 20,
                                "repetition_penalty": 1.0}
    assert info["sampling_source"]["temperature"] == "request"


@pytest.mark.slow
def test_the_openai_client_without_sampling_parameters_gets_paris(client):
    """SmolLM2 through `webaccel serve`, the client passing no sampling parameter: the
    server samples with the model's own generation config (temperature 0.2, top-p 0.9),
    not at 1.0, so the answer is coherent (it was gibberish before)."""
    pytest.importorskip("torch")  # SmolLM2 is built from its GGUF with torch
    pytest.importorskip("gguf")
    question = [{"role": "user", "content": "What is the capital of France?"}]
    for _ in range(2):  # sampled, so twice
        out = client.chat.completions.create(model="smollm2", messages=question, max_tokens=30)
        assert "Paris" in out.choices[0].message.content, out.choices[0].message.content
        assert out.model_extra["webaccel"]["sampling_source"]["temperature"] == "generation_config"


def test_missing_model_unknown_field_and_long_input_are_400_for_the_client(client, served):
    import openai

    r = httpx.post(served + "/v1/chat/completions", json={"messages": MESSAGES},
                   headers=auth(), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tiny-llama", messages=MESSAGES, extra_body={"temprature": 0.1}
        )
    assert info.value.body["param"] == "temprature" and "temprature" in info.value.message
    long = "word " * 1000
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="minilm", input=long)
    assert info.value.body["param"] == "input" and "256" in info.value.message
    out = client.embeddings.create(
        model="minilm", input=["short", long], extra_body={"truncate_prompt_tokens": -1}
    )
    assert len(out.data) == 2 and out.model_extra["webaccel"]["truncated"] == [False, True]
    assert out.usage.prompt_tokens == 3 + 256


def test_health_is_503_until_a_worker_serves(served):
    assert HEALTH_SEEN and HEALTH_SEEN[-1][0] == 200
    assert HEALTH_SEEN[-1][1]["ready_workers"] >= 1
    for status, body in HEALTH_SEEN[:-1]:
        assert status == 503 and body["problem"].startswith("starting")
    r = httpx.get(served + "/health", timeout=10)
    assert r.status_code == 200 and r.json()["ready_workers"] >= 1


def test_readiness_rules():
    from webaccel.serve import readiness

    yes, no = (True, "chromium"), (False, "no Chromium or Firefox found")
    assert "problem" in readiness([], True, yes)
    assert "problem" in readiness(["launching"], True, yes)
    assert "problem" not in readiness(["ready"], True, yes)
    assert "problem" not in readiness([], False, yes)  # the first request launches one
    assert readiness([], False, no)["problem"].startswith("no worker can serve")
    assert readiness(["lost"], False, no)["ready_workers"] == 0
    assert "problem" not in readiness(["busy"], False, no)


# ------------------------------------------------------------------ raw HTTP


def auth(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def sse_events(lines):
    events = []
    for line in lines:
        if not line:
            continue
        assert line.startswith("data: "), line
        events.append(line[len("data: ") :])
    return events


def test_sse_chunk_format(served, tiny_models):
    want, _, _ = chat_reference(tiny_models, MESSAGES, 16)
    body = {
        "model": "tiny-llama",
        "messages": MESSAGES,
        "max_tokens": 16,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with httpx.stream(
        "POST", served + "/v1/chat/completions", json=body, headers=auth(), timeout=120
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        raw = r.read().decode()
    assert raw.endswith("data: [DONE]\n\n")
    blocks = raw.split("\n\n")
    assert all(b.startswith("data: ") and "\n" not in b for b in blocks if b)
    events = sse_events(raw.split("\n"))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    for c in chunks:
        assert c["object"] == "chat.completion.chunk" and c["model"] == "tiny-llama"
        assert isinstance(c["created"], int) and c["id"].startswith("chatcmpl-")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == want
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(final) == 1 and final[0]["choices"][0]["delta"] == {}
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 16
    assert usage["usage"]["total_tokens"] == usage["usage"]["prompt_tokens"] + 16


def test_completions_stream(served, tiny_models):
    gm, native = tiny_models
    want = gm.decode(
        native.generate(
            gm.encode("Once upon"), GenerationParams(max_tokens=12), stop_token_ids=gm.eos_token_ids
        ).token_ids
    )
    body = {
        "model": "tiny-llama",
        "prompt": "Once upon",
        "max_tokens": 12,
        "temperature": 0,
        "stream": True,
    }
    r = httpx.post(served + "/v1/completions", json=body, headers=auth(), timeout=120)
    events = sse_events(r.text.split("\n"))
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "text_completion" for c in chunks)
    assert "".join(c["choices"][0]["text"] for c in chunks) == want
    assert chunks[-1]["choices"][0]["finish_reason"] in ("length", "stop")


@pytest.mark.parametrize(
    "path,method",
    [
        ("/v1/chat/completions", "POST"),
        ("/v1/models", "GET"),
        ("/v1/embeddings", "POST"),
        ("/v1/completions", "POST"),
    ],
)
@pytest.mark.parametrize(
    "headers", [{}, auth("wrong-key"), {"authorization": KEY}, {"authorization": "Basic abc"}]
)
def test_auth_failures_are_401_in_openai_shape(served, path, method, headers):
    r = httpx.request(method, served + path, headers=headers, json={}, timeout=30)
    assert r.status_code == 401
    err = r.json()["error"]
    assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error"
    assert "Bearer" in err["message"]


BAD = [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "tiny-llama"}, 400, "messages"),
    ({"model": "tiny-llama", "messages": []}, 400, "messages"),
    ({"model": "tiny-llama", "messages": "hi"}, 400, "messages"),
    (
        {"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "messages[0].role",
    ),
    (
        {"model": "tiny-llama", "messages": [{"role": "user", "content": 5}]},
        400,
        "messages[0].content",
    ),
    ({"model": "tiny-llama", "messages": MESSAGES, "temperature": 5}, 400, "temperature"),
    ({"model": "tiny-llama", "messages": MESSAGES, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "tiny-llama", "messages": MESSAGES, "n": 2}, 400, "n"),
    ({"model": "tiny-llama", "messages": MESSAGES, "stream": "yes"}, 400, "stream"),
    ({"model": "tiny-llama", "messages": MESSAGES, "top_p": 0}, 400, "top_p"),
    ({"model": "tiny-llama", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "tiny-llama", "messages": MESSAGES, "presence_penalty": 1}, 400, "presence_penalty"),
    ({"model": "minilm", "messages": MESSAGES}, 400, "model"),
    ({"model": "nope", "messages": MESSAGES}, 404, "model"),
    ({"model": 42, "messages": MESSAGES}, 400, "model"),
]


@pytest.mark.parametrize("body,status,param", BAD)
def test_bad_chat_requests(served, body, status, param):
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    r = httpx.post(served + "/v1/chat/completions", headers=auth(), timeout=30, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    assert err["param"] == param


def test_context_overflow_is_400_even_when_streaming(served):
    body = {"model": "tiny-llama", "prompt": "x" * 5000, "max_tokens": 10, "stream": True}
    r = httpx.post(served + "/v1/completions", json=body, headers=auth(), timeout=60)
    assert r.status_code == 400 and "context" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    "body,param",
    [
        ({"model": "minilm", "input": []}, "input"),
        ({"model": "minilm", "input": [1, 2, 3]}, "input"),
        ({"model": "minilm", "input": ["ok", ""]}, "input"),
        ({"model": "minilm", "input": "ok", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "tiny-llama", "input": "ok"}, "model"),
    ],
)
def test_bad_embedding_requests(served, body, param):
    r = httpx.post(served + "/v1/embeddings", json=body, headers=auth(), timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == param


def test_embeddings_float_format_and_dimensions(served):
    r = httpx.post(
        served + "/v1/embeddings",
        headers=auth(),
        timeout=120,
        json={"model": "minilm", "input": "hello", "encoding_format": "float"},
    )
    vec = np.array(r.json()["data"][0]["embedding"])
    assert vec.shape == (384,) and abs(np.linalg.norm(vec) - 1) < 1e-4
    r2 = httpx.post(
        served + "/v1/embeddings",
        headers=auth(),
        timeout=120,
        json={"model": "minilm", "input": "hello", "encoding_format": "base64"},
    )
    b64 = np.frombuffer(base64.b64decode(r2.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(b64, vec, atol=1e-6)
    r3 = httpx.post(
        served + "/v1/embeddings",
        headers=auth(),
        timeout=30,
        json={"model": "minilm", "input": "hello", "dimensions": 10},
    )
    assert r3.status_code == 400 and r3.json()["error"]["param"] == "dimensions"


def test_generation_shows_in_metrics_and_dashboard(served, client, tiny_models):
    """Chat and completion streams are pool work: /metrics and the dashboard count them
    (requests, tokens, time to first token) per model and backend."""
    client.chat.completions.create(model="tiny-llama", messages=MESSAGES, max_tokens=8)
    client.completions.create(model="tiny-llama", prompt="Once", max_tokens=8)
    text = httpx.get(served + "/metrics", timeout=30).text
    series = {
        line.split(" ")[0]: float(line.split(" ")[-1])
        for line in text.splitlines()
        if line.startswith("webaccel_generation") and 'model="tiny-llama"' in line
    }
    requests = sum(
        v for k, v in series.items() if k.startswith("webaccel_generation_requests_total")
    )
    assert requests >= 2, text
    assert any(
        k.startswith("webaccel_generation_completion_tokens_total") and v >= 16
        for k, v in series.items()
    )
    assert any(
        k.startswith("webaccel_generation_ttft_seconds_count") and 'backend="wasm"' in k
        for k in series
    )
    snap = httpx.get(
        served + "/dashboard/snapshot.json", headers={"authorization": f"Bearer {KEY}"}, timeout=30
    ).json()
    gens = snap["metrics"]["generations"]["models"]["tiny-llama"]
    assert gens["generations"] >= 2 and gens["completion_tokens"] >= 16
    assert gens["avg_ttft_ms"] > 0 and "wasm" in gens["backends"]


def test_openapi_document(served):
    r = httpx.get(served + "/v1/openapi.json", timeout=10)  # public, like /healthz
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models"):
        assert path in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert httpx.get(served + "/healthz", timeout=10).status_code == 200


# ------------------------------------------------------------------ disconnect -> cancel


@pytest.fixture(scope="module")
def inproc(tiny_models):
    from webaccel.api import _LoopThread
    from webaccel.engine import Engine
    from webaccel.openai import openai_routes

    loop = _LoopThread()
    engine = Engine(max_connections=1, default_platform="wasm")
    engine.server.add_routes(openai_routes(engine, KEY))
    loop.run(engine.start())
    worker = loop.run(engine.any_worker())
    yield loop, engine, worker
    loop.run(engine.close(), timeout=30)
    loop.stop()


def test_client_disconnect_cancels_the_generation(inproc, record_frames):
    loop, engine, worker = inproc
    conn = worker.connection
    seen = record_frames(conn)
    url = engine.server.url
    body = {
        "model": "tiny-llama",
        "messages": MESSAGES,
        "max_tokens": 3000,
        "temperature": 1.0,
        "seed": 3,
        "stream": True,
    }
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers=auth(), timeout=60
    ) as r:
        assert r.status_code == 200
        got = 0
        for line in r.iter_lines():
            if line.startswith("data: "):
                got += 1
            if got >= 5:
                break
    left = time.perf_counter()  # the with-block closed the connection
    deadline = left + 10
    while conn.session.pending and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not conn.session.pending, "the server kept waiting for the page"
    time.sleep(1.5)
    late = [name for t, name in seen if t > left + 1.0 and name in ("Stale", "StreamStep")]
    assert late == [], f"{len(late)} token frames arrived after the client left"
    # Non-streaming: a client that gives up mid-request cancels it as well.
    body["stream"] = False
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/chat/completions", json=body, headers=auth(), timeout=1.0)
    left = time.perf_counter()
    deadline = left + 10
    while conn.session.pending and time.perf_counter() < deadline:
        time.sleep(0.05)
    assert not conn.session.pending
    time.sleep(1.5)
    late = [name for t, name in seen if t > left + 2.0 and name in ("Stale", "StreamStep")]
    assert late == []
