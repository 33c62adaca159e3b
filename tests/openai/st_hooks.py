"""schemathesis hooks for tests/openai/test_schemathesis.py (``SCHEMATHESIS_HOOKS=st_hooks``).

* No browser: a request body that names a registered model names one that does not
  exist instead, so the server checks every field and then answers 404.
* ``WEBACCEL_ST_RECORD=PATH``: every request's method, path, whether it carried an
  Authorization header, and the answer's status, headers and first bytes go to PATH
  (JSON lines), for the test to check what schemathesis cannot express (every route
  401 in OpenAI's shape without the key) and to see how far requests got.
"""

from __future__ import annotations

import json
import os

import schemathesis

from webaccel.models import registry

NAMES = {name for spec in registry.all_models() for name in (spec.name, *spec.aliases)}


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"] in NAMES:
        body["model"] = "no-such-model"


@schemathesis.hook
def after_call(context, case, response) -> None:
    path = os.environ.get("WEBACCEL_ST_RECORD")
    if not path:
        return
    sent = {k.lower() for k in (response.request.headers or {})}
    row = {
        "operation": case.operation.label,
        "method": response.request.method,
        "url": response.request.url,
        "auth": "authorization" in sent,
        "status": response.status_code,
        "headers": {k: v[0] for k, v in response.headers.items()},
        "body": response.content[:2000].decode("utf-8", "replace"),
    }
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
