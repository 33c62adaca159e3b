"""schemathesis against the OpenAPI document a real ``webaccel serve`` serves.

The server runs on loopback in a subprocess, without browsers: a request that
names a registered model names one that does not exist instead (st_hooks.py), so
the server checks every field (they are all checked before the model) and then
answers 404.  schemathesis (its CLI: its pytest plugin does not run under pytest 9)
loads ``/v1/openapi.json`` and runs its examples, coverage and fuzzing phases,
deterministic and with a small budget, twice:

* with the API key: no answer is a 5xx; every status, content type and body is
  one the document declares; a request the document calls valid gets past
  validation (404 for the absent model; 200 from the model list), and one it calls
  invalid is refused (400/413); a route that answered 200 refuses the request
  without the key (ignored_auth); a path asked with another method is a 405;
* without it: every secured route answers 401 in OpenAI's error shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

KEY = "sk-schemathesis"
HERE = Path(__file__).parent
MAX_EXAMPLES = 20
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["200", "404"]

[checks.negative_data_rejection]
expected-statuses = ["400", "405", "413"]
"""
WITH_KEY_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "positive_data_acceptance",
    "negative_data_rejection",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
]
NO_KEY_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
]


@pytest.fixture(scope="module")
def server(serve_process):
    return serve_process("--api-key", KEY)


def schemathesis_run(server, tmp_path: Path, checks: list[str], *args: str) -> list[dict]:
    """Run the schemathesis CLI against ``server``; the requests it made (st_hooks)."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    record = tmp_path / "requests.jsonl"
    src = Path(__file__).parents[2] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(src), os.environ.get("PYTHONPATH", "")]),
        "SCHEMATHESIS_HOOKS": "st_hooks",
        "WEBACCEL_ST_RECORD": str(record),
        "NO_COLOR": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "--config-file",
        str(config),
        "run",
        f"{server.url}/v1/openapi.json",
        "--checks",
        ",".join(checks),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(MAX_EXAMPLES),
        "--generation-deterministic",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--max-failures",
        "20",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, (
        f"schemathesis found failures:\n{out[-12000:]}\nserver log:\n{server.output()[-4000:]}"
    )
    assert "Traceback" not in server.output(), server.output()[-4000:]
    return [json.loads(line) for line in record.read_text().splitlines()]


def test_with_the_key_no_input_is_a_server_error(server, tmp_path) -> None:
    calls = schemathesis_run(
        server, tmp_path, WITH_KEY_CHECKS, "--header", f"Authorization: Bearer {KEY}"
    )
    by_op = {
        op: Counter(c["status"] for c in calls if c["operation"] == op)
        for op in {c["operation"] for c in calls}
    }
    print(json.dumps({op: dict(n) for op, n in sorted(by_op.items())}))
    assert all(c["status"] < 500 for c in calls)
    # The run reached past validation (404: the absent model) and was refused by it (400).
    for op in ("POST /v1/chat/completions", "POST /v1/completions", "POST /v1/embeddings"):
        assert by_op[op][404] and by_op[op][400], (op, by_op[op])
    assert by_op["GET /v1/models"][200]


def test_without_the_key_every_route_is_401_in_openai_shape(server, tmp_path) -> None:
    calls = schemathesis_run(server, tmp_path, NO_KEY_CHECKS)
    secured = [c for c in calls if not c["url"].endswith("/v1/openapi.json")]
    assert {c["operation"] for c in secured} >= {
        "POST /v1/chat/completions",
        "POST /v1/completions",
        "POST /v1/embeddings",
        "GET /v1/models",
        "GET /v1/models/{model}",
    }
    for c in secured:
        assert c["status"] == 401, c
        assert (
            c["headers"]["content-type"] == "application/json"
            and c["headers"]["www-authenticate"] == "Bearer"
        ), c
        err = json.loads(c["body"])["error"]
        assert set(err) == {"message", "type", "param", "code"}, c
        assert err["code"] == "invalid_api_key" and err["type"] == "invalid_request_error", c
    print(f"{len(secured)} requests without the key, all 401")
