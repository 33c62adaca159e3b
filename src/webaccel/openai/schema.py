"""The OpenAPI 3.1 document of the ``/v1`` routes (served at ``/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from webaccel.errors import HTTP_ERRORS
from webaccel.openai.validation import MAX_EMBEDDING_INPUTS


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for the routes above (request fields webaccel accepts, error shape)."""
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"]},
                },
            }
        },
    }
    # Every status an error can have, from the one table (webaccel.errors.HTTP_ERRORS).
    statuses: dict[int, list[str]] = {}
    for code, row in HTTP_ERRORS.items():
        statuses.setdefault(row.status, []).append(str(code))
    sampling = {
        "max_tokens": {"type": "integer", "minimum": 1, "maximum": 8192, "default": 256},
        "max_completion_tokens": {"type": "integer", "minimum": 1, "maximum": 8192},
        "temperature": {
            "type": "number",
            "minimum": 0,
            "maximum": 2,
            "default": 1,
            "description": "0 = greedy",
        },
        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1, "default": 1},
        "top_k": {
            "type": "integer",
            "minimum": 0,
            "default": 0,
            "description": "webaccel extension",
        },
        "repetition_penalty": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": 10,
            "default": 1,
            "description": "webaccel extension",
        },
        "seed": {"type": "integer"},
        "stop": {
            "oneOf": [
                {"type": "string"},
                {"type": "array", "items": {"type": "string"}, "maxItems": 4},
            ]
        },
        "n": {"type": "integer", "enum": [1]},
        "stream": {"type": "boolean", "default": False},
        "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    }
    message = {
        "type": "object",
        "required": ["role", "content"],
        "properties": {
            "role": {
                "type": "string",
                "enum": ["system", "developer", "user", "assistant", "tool"],
            },
            "content": {
                "oneOf": [
                    {"type": "string"},
                    {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                        },
                    },
                ]
            },
        },
    }

    model_object = {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"},
            "object": {"const": "model"},
            "created": {"type": "integer"},
            "owned_by": {"type": "string"},
            "task": {"type": "string"},
            "description": {"type": "string"},
        },
    }
    model_list = {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": model_object},
        },
    }

    def op(
        summary: str,
        schema: dict[str, Any] | None,
        sse: bool = False,
        ok: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"application/json": {"schema": ok or {"type": "object"}}}
        if sse:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        out: dict[str, Any] = {
            "summary": summary,
            "security": [{"bearer": []}],
            "responses": {
                "200": {"description": "OK", "content": content},
                **{
                    str(status): {
                        "description": "webaccel error code " + " or ".join(codes),
                        "content": {"application/json": {"schema": error}},
                    }
                    for status, codes in sorted(statuses.items())
                },
            },
        }
        if schema is not None:
            out["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema}},
            }
        return out

    return {
        "openapi": "3.1.0",
        "info": {"title": "webaccel OpenAI-compatible API", "version": "1"},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/v1/chat/completions": {
                "post": op(
                    "Chat completion generated in a browser page",
                    {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {
                            "model": {"type": "string", "default": "smollm2"},
                            "messages": {"type": "array", "minItems": 1, "items": message},
                            **sampling,
                        },
                    },
                    sse=True,
                )
            },
            "/v1/completions": {
                "post": op(
                    "Text completion generated in a browser page",
                    {
                        "type": "object",
                        "required": ["prompt"],
                        "properties": {
                            "model": {"type": "string", "default": "smollm2"},
                            "prompt": {"type": "string"},
                            **sampling,
                        },
                    },
                    sse=True,
                )
            },
            "/v1/embeddings": {
                "post": op(
                    "Text embeddings (minilm)",
                    {
                        "type": "object",
                        "required": ["input"],
                        "properties": {
                            "model": {"type": "string", "default": "minilm"},
                            "input": {
                                "oneOf": [
                                    {"type": "string"},
                                    {
                                        "type": "array",
                                        "items": {"type": "string"},
                                        "maxItems": MAX_EMBEDDING_INPUTS,
                                    },
                                ]
                            },
                            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
                            "dimensions": {"type": "integer"},
                        },
                    },
                )
            },
            "/v1/models": {"get": op("List models", None, ok=model_list)},
            "/v1/models/{model}": {
                "get": {
                    **op("One model", None, ok=model_object),
                    "parameters": [
                        {
                            "name": "model",
                            "in": "path",
                            "required": True,
                            "description": "a registered model's name or alias",
                            "schema": {"type": "string"},
                        }
                    ],
                }
            },
            "/v1/openapi.json": {
                "get": {
                    "summary": "This document (no key needed)",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "OpenAPI 3.1",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
    }
