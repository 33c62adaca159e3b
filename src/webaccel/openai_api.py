"""The OpenAI-compatible API moved to :mod:`webaccel.openai`; this name stays for importers."""

from __future__ import annotations

from webaccel.openai import (
    API_KEY_ENV,
    MAX_BODY_BYTES,
    MAX_EMBEDDING_INPUTS,
    openai_routes,
    openapi_document,
    resolve_api_key,
)

__all__ = [
    "API_KEY_ENV",
    "MAX_BODY_BYTES",
    "MAX_EMBEDDING_INPUTS",
    "openai_routes",
    "openapi_document",
    "resolve_api_key",
]
