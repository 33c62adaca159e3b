"""``webaccel run`` for every task, as a user runs it from the shell (real subprocesses,
real Chromium): embeddings, a streamed generation, a transcription, a classification
and a saliency map.  Generation uses the tiny test Llama (registered before the CLI
starts); SmolLM2 itself takes the same path."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The CLI entry point with the tiny test Llama registered first.
ENTRY = (
    "from webaccel.generation.testing import tiny_llama_spec; tiny_llama_spec('tiny-llama'); "
    "import sys; from webaccel.cli import main; sys.argv[0] = 'webaccel'; main()"
)


def webaccel(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", ENTRY, *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "60"})


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    from PIL import Image

    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
                    ).save(path)
    return path


def test_run_generation_streams_tokens_and_json_has_usage():
    pytest.importorskip("torch")
    from webaccel.generation import GenerationParams, load_generation_model
    from webaccel.generation.native import NativeGenerator
    from webaccel.generation.testing import tiny_llama_spec

    tiny_llama_spec("tiny-llama")
    _, gm, path = load_generation_model("tiny-llama")
    native = NativeGenerator(path, kv_heads=gm.kv_heads, head_dim=gm.head_dim)
    ids = gm.encode(gm.apply_chat_template([{"role": "user", "content": "Hello"}]))
    want = gm.decode(native.generate(ids, GenerationParams(max_tokens=12),
                                     stop_token_ids=gm.eos_token_ids).token_ids)

    proc = webaccel("run", "tiny-llama", "Hello", "--max-tokens", "12", "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == want + "\n"  # the text itself, as it streamed, nothing else
    assert "tokens" in proc.stderr and "Traceback" not in proc.stderr

    proc = webaccel("run", "tiny-llama", "Hello", "--max-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["usage"]["completion_tokens"] <= 5 and out["usage"]["prompt_tokens"] == len(ids)
    # no --temperature: the model's generation config (0.7 / top_p 0.8 / top_k 20)
    assert out["sampling"]["temperature"] == 0.7 and out["sampling"]["top_k"] == 20
    assert out["finish_reason"] in ("stop", "length")


def test_run_transcribes_an_audio_file():
    from webaccel.models import whisper

    proc = webaccel("run", "whisper-tiny-en", str(whisper.beckett_wav()), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["text"] == "Ever tried, ever failed. No matter, try again. Fail again. Fail better."


def test_run_classifies_an_image_human_output_is_plain(image):
    proc = webaccel("run", "nsfw-cnn", str(image))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] in ("label: sfw", "label: nsfw", "label: uncertain")
    assert "np.float" not in proc.stdout and "array(" not in proc.stdout
    fallback = next(line for line in lines if line.startswith("fallback_reason:"))
    assert len(fallback) > 60  # one unwrapped line although COLUMNS=60 and stdout is a pipe
    # stderr holds only stage lines, plain (not a terminal here: no spinner, no colour);
    # each stage speaks only when it takes over 2 s, so a fast machine prints none
    for line in proc.stderr.splitlines():
        assert "\r" not in line and "\x1b[" not in line, proc.stderr
        assert line.startswith(("starting a headless chromium", "nsfw-cnn:")), proc.stderr


def test_run_saliency_json_and_human(image):
    proc = webaccel("run", "vit-saliency", str(image), "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)["results"]
    h, w = np.asarray(res["heatmap"]).shape
    assert abs(h / w - 240 / 320) < 0.01 and "regions" in res  # the image's aspect, letterboxed
    human = webaccel("run", "vit-saliency", str(image))
    assert human.returncode == 0, human.stderr
    assert f"heatmap: {h}x{w}" in human.stdout and "np.float" not in human.stdout


def test_run_minilm_with_a_transformers_js_dtype():
    proc = webaccel("run", "minilm", "a sentence", "--precision", "q8", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["precision"] == "int8" and len(out["embedding"]) == 384


def test_run_talks_to_a_running_serve_as_ipfs_to_its_daemon(serve_process, image):
    """With a `webaccel serve` running for this WEBACCEL_HOME, `webaccel run` sends the
    request there (its browser stays warm between calls); --local starts its own."""
    server = serve_process("--browsers", "1", built_models=True)

    def run(*args: str) -> subprocess.CompletedProcess[str]:  # the `webaccel` command
        return subprocess.run(
            [sys.executable, "-m", "webaccel.quickrun", "run", *args], capture_output=True,
            text=True, timeout=300, env={**server.env, "COLUMNS": "60"},
        )

    first, second = run("minilm", "some text", "--json"), run("minilm", "other text", "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert len(a["embedding"]) == 384 and a["worker_id"] == b["worker_id"]  # the server's one
    assert b["load_ms"] is None or b["load_ms"] == 0  # loaded once, on the first call
    picture = run("nsfw-cnn", str(image), "--json")  # a file travels as its bytes
    assert picture.returncode == 0, picture.stderr
    assert json.loads(picture.stdout)["worker_id"] == a["worker_id"]
    human = run("minilm", "some text")
    assert human.returncode == 0 and human.stdout.startswith("embedding: 384 floats"), human
    assert f"worker_id: {a['worker_id']}" in human.stdout
    # That went the quick way: the standard library only, no SDK imported.
    quick = subprocess.run(
        [sys.executable, "-c", "import sys; from webaccel.quickrun import run; "
         "s = run(['run', 'minilm', 'some text', '--json']); "
         "print(s, sorted({'numpy', 'typer', 'rich', 'webaccel.cli'} & set(sys.modules)))"],
        capture_output=True, text=True, timeout=120, env=server.env)
    assert quick.stdout.strip().endswith("0 []"), quick.stdout + quick.stderr
    missing = run("no-such-model", "x")  # the server's typed error, as the full CLI prints it
    assert missing.returncode == 2 and "[MODEL_NOT_FOUND]" in missing.stderr, missing
    here = run("minilm", "some text", "--json", "--local")
    assert here.returncode == 0, here.stderr
    assert json.loads(here.stdout)["worker_id"] != a["worker_id"]
    np.testing.assert_allclose(json.loads(here.stdout)["embedding"], a["embedding"], atol=1e-4)
    import httpx  # the route itself: the master key only, typed errors

    url = server.url + "/api/v0/run"
    r = httpx.post(url, json={"model": "minilm", "input": "x"}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    key = {"authorization": f"Bearer {server.master_key}"}
    for body in ({"input": "x"}, {"model": "minilm", "input": {"file": "%%%"}},
                 {"model": "minilm", "input": "x", "platform": "../x"}):
        r = httpx.post(url, json=body, headers=key, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["code"] == "BAD_REQUEST", r.text
    r = httpx.post(url, json={"model": "no-such-model", "input": "x"}, headers=key, timeout=30)
    assert r.status_code == 404, r.text
    # A task the client runs itself (streamed generation) is not run here.
    r = httpx.post(url, json={"model": "minilm", "input": "x", "local_tasks": ["text_embedding"]},
                   headers=key, timeout=30)
    assert r.status_code == 200 and r.json() == {"local": True, "task": "text_embedding"}, r.text
