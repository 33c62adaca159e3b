"""The OpenAPI 3.1 document of the ``/v1`` routes (served at ``/v1/openapi.json``)."""

from __future__ import annotations

from typing import Any

from webaccel.errors import HTTP_ERRORS
from webaccel.openai.validation import MAX_EMBEDDING_INPUTS, MAX_SEED, MAX_TOP_K, MIN_SEED


def openapi_document() -> dict[str, Any]:
    """OpenAPI 3.1 for the routes above (request fields webaccel accepts, error shape)."""
    error = {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
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

    def optional(schema: dict[str, Any]) -> dict[str, Any]:
        # A field left out and a field sent as null are the same to the server.
        return {"anyOf": [schema, {"type": "null"}]}

    text = {"type": "string", "minLength": 1}
    nonblank = {"type": "string", "pattern": r"\S"}
    sampling = {
        "max_tokens": optional({"type": "integer", "minimum": 1, "maximum": 8192, "default": 256}),
        "max_completion_tokens": optional(
            {"type": "integer", "minimum": 1, "maximum": 8192, "description": "over max_tokens"}
        ),
        "temperature": optional(
            {
                "type": "number",
                "minimum": 0,
                "maximum": 2,
                "description": "0 = greedy; default: the model's generation config, else 1",
            }
        ),
        "top_p": optional({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        "top_k": optional(
            {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_TOP_K,
                "description": "webaccel extension (vLLM's name); 0 = no limit",
            }
        ),
        "repetition_penalty": optional(
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 10,
                "description": "webaccel extension (vLLM's name)",
            }
        ),
        "seed": optional({"type": "integer", "minimum": MIN_SEED, "maximum": MAX_SEED}),
        "stop": optional(
            {
                "oneOf": [
                    text,
                    {"type": "array", "items": text, "maxItems": 4},
                ]
            }
        ),
        "n": optional({"type": "integer", "const": 1, "description": "only 1"}),
        "stream": optional({"type": "boolean", "default": False}),
        "stream_options": optional(
            {"type": "object", "properties": {"include_usage": optional({"type": "boolean"})}}
        ),
        "user": optional({"type": "string"}),
        "logprobs": optional({"enum": [False, 0], "description": "not supported: false or 0"}),
        "presence_penalty": optional(
            {
                "type": "number",
                "const": 0,
                "description": "not supported: 0 (see repetition_penalty)",
            }
        ),
        "frequency_penalty": optional(
            {
                "type": "number",
                "const": 0,
                "description": "not supported: 0 (see repetition_penalty)",
            }
        ),
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
                            "required": ["type", "text"],
                            "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                        },
                    },
                ]
            },
        },
    }

    def request(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
        # Every field the route reads is listed; any other is a 400 naming it (OpenAI
        # fields it cannot honour are accepted only with their "off" value, unlisted).
        return {
            "type": "object",
            "required": ["model", *required],
            "additionalProperties": False,
            "properties": {"model": {"type": "string"}, **properties},
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
                    request(
                        {
                            "messages": {"type": "array", "minItems": 1, "items": message},
                            **sampling,
                            "metadata": optional(
                                {"type": "object", "additionalProperties": {"type": "string"}}
                            ),
                            "store": optional({"type": "boolean"}),
                        },
                        ["messages"],
                    ),
                    sse=True,
                )
            },
            "/v1/completions": {
                "post": op(
                    "Text completion generated in a browser page",
                    request(
                        {
                            "prompt": {
                                "oneOf": [
                                    text,
                                    {"type": "array", "items": text, "minItems": 1, "maxItems": 1},
                                ]
                            },
                            **sampling,
                        },
                        ["prompt"],
                    ),
                    sse=True,
                )
            },
            "/v1/embeddings": {
                "post": op(
                    "Text embeddings (minilm)",
                    request(
                        {
                            "input": {
                                "description": "each text holds more than white space; at "
                                "most the model's context (minilm: 256 tokens) unless "
                                "truncate_prompt_tokens is sent",
                                "oneOf": [
                                    nonblank,
                                    {
                                        "type": "array",
                                        "items": nonblank,
                                        "minItems": 1,
                                        "maxItems": MAX_EMBEDDING_INPUTS,
                                    },
                                ],
                            },
                            "encoding_format": optional(
                                {"type": "string", "enum": ["float", "base64"]}
                            ),
                            "dimensions": optional(
                                {"type": "integer", "description": "must be the model's own"}
                            ),
                            "user": optional({"type": "string"}),
                            "truncate_prompt_tokens": optional(
                                {
                                    "type": "integer",
                                    "description": "vLLM's: cut inputs to this many tokens "
                                    "(-1: the model's context)",
                                }
                            ),
                        },
                        ["input"],
                    ),
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
