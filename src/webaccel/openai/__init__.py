"""OpenAI-compatible HTTP API over the engine's browser workers.

Routes (mounted by ``webaccel serve`` through :func:`openai_routes`):

* ``POST /v1/chat/completions`` and ``POST /v1/completions``: generation in a
  browser page; ``"stream": true`` answers with server-sent events in
  OpenAI's chunk format, ending with ``data: [DONE]``
  (``stream_options.include_usage`` adds a usage chunk before it).
* ``POST /v1/embeddings``: text embeddings (minilm) via ``Engine.accelerate``;
  ``encoding_format`` float or base64 (the official client asks for base64).
* ``GET /v1/models``: the registry's models.
* ``GET /v1/openapi.json``: an OpenAPI 3.1 document of these routes (no auth).

Every ``/v1`` route but the OpenAPI document needs ``Authorization: Bearer
<api key>``.  Errors use OpenAI's shape ``{"error": {"message", "type",
"param", "code"}}`` with the status from the one table,
:data:`webaccel.errors.HTTP_ERRORS`: 401 (code ``invalid_api_key``) for a
missing/wrong key, 400 for malformed or invalid requests (with ``param``
naming the field), 413 past the body limit, 404 for an unknown model, 429
(with Retry-After) when the pool is full, 503, 504 on a timeout.  A client
that disconnects (streaming or not) cancels its generation in the page.

Modules, one job each: :mod:`.validation` (the body and its fields),
:mod:`.routes` (auth, the handlers), :mod:`.sse` (event framing),
:mod:`.schema` (the OpenAPI document).
"""

from __future__ import annotations

from webaccel.openai.routes import API_KEY_ENV, openai_routes, resolve_api_key
from webaccel.openai.schema import openapi_document
from webaccel.openai.validation import MAX_BODY_BYTES, MAX_EMBEDDING_INPUTS

__all__ = [
    "API_KEY_ENV",
    "MAX_BODY_BYTES",
    "MAX_EMBEDDING_INPUTS",
    "openai_routes",
    "openapi_document",
    "resolve_api_key",
]
