"""Request validation for the ``/v1`` routes: the body, then each field.

Everything a client sends is checked here, before any of it reaches a
tokenizer, the engine or an error message:

* the body is read under :data:`MAX_BODY_BYTES` while it arrives and must
  be one strict JSON object, not too deep, whose every string is valid
  Unicode (:func:`webaccel.http_body.read_json_object`);
* every field must be one the route knows: an unknown field (a typo, or a
  newer OpenAI parameter) is a 400 naming it, as is a known OpenAI field this
  server cannot honour (``tools``, ``logit_bias``...), instead of being
  silently ignored (:func:`check_fields`);
* then each field has its type and range checked; ``model`` is required.

Failures raise :class:`webaccel.errors.InvalidInputError` (400) whose
``details`` carry OpenAI's ``param`` (the field at fault, e.g.
``messages[0].content``) and ``openai_code``; the routes render them with
:func:`webaccel.errors.openai_error_response`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from webaccel.errors import InvalidInputError, ModelNotFoundError
from webaccel.generation import GenerationParams
from webaccel.http_body import bad, read_json_object
from webaccel.models import registry

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 256
MAX_TOP_K = 2**31 - 1
MIN_SEED, MAX_SEED = -(2**63), 2**63 - 1  # as OpenAI's int64; the page uses its low 32 bits


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read under :data:`MAX_BODY_BYTES`."""
    return await read_json_object(request, MAX_BODY_BYTES)


def get(
    body: dict[str, Any],
    name: str,
    kinds: type | tuple[type, ...],
    default: Any = None,
    *,
    required: bool = False,
) -> Any:
    if name not in body or body[name] is None:
        if required:
            raise bad(f"'{name}' is required", name, "missing_required_parameter")
        return default
    value = body[name]
    kinds_t = kinds if isinstance(kinds, tuple) else (kinds,)
    # 5.0 is an integer to JSON Schema (and to pydantic, hence vLLM): take it as 5.
    if isinstance(value, float) and int in kinds_t and float not in kinds_t and value.is_integer():
        value = int(value)
    # bool is an int in Python, but not in JSON Schema.
    if isinstance(value, bool) and bool not in kinds_t:
        raise bad(f"'{name}' must be of type {'/'.join(k.__name__ for k in kinds_t)}", name)
    if not isinstance(value, kinds_t):
        raise bad(
            f"'{name}' must be of type {'/'.join(k.__name__ for k in kinds_t)}, "
            f"got {type(value).__name__}",
            name,
        )
    return value


# The fields each route reads; everything else is refused by check_fields.
COMMON_GENERATION_FIELDS = frozenset({
    "model", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stream",
    "stream_options", "stop", "seed", "user", "logprobs", "presence_penalty",
    "frequency_penalty",
    # extensions, as vLLM names them
    "top_k", "repetition_penalty",
})
CHAT_FIELDS = COMMON_GENERATION_FIELDS | {"messages", "metadata", "store"}
COMPLETION_FIELDS = COMMON_GENERATION_FIELDS | {"prompt"}
EMBEDDING_FIELDS = frozenset(
    {"model", "input", "encoding_format", "dimensions", "user", "truncate_prompt_tokens"}
)
# OpenAI fields this server knows but cannot honour: refused unless they carry their
# "off" value (the official client only sends what the caller set).
UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "logit_bias": (None, {}),
    "top_logprobs": (None, 0),
    "response_format": (None, {"type": "text"}),
    "suffix": (None, ""),
    "echo": (None, False),
    "best_of": (None, 1),
    "audio": (None,),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "service_tier": (None, "auto", "default"),
    "web_search_options": (None,),
}


def check_fields(body: dict[str, Any], allowed: frozenset[str]) -> None:
    """400 for a field the route does not know, or knows but cannot honour (named)."""
    unsupported = sorted(k for k in body if k in UNSUPPORTED and body[k] not in UNSUPPORTED[k])
    if unsupported:
        raise bad(
            f"{', '.join(repr(k) for k in unsupported)} "
            f"{'is' if len(unsupported) == 1 else 'are'} not supported by this server",
            unsupported[0],
            "unsupported_parameter",
        )
    unknown = sorted(k for k in body if k not in allowed and k not in UNSUPPORTED)
    if unknown:
        raise bad(
            f"unknown field{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown)}; accepted: {', '.join(sorted(allowed))}",
            unknown[0],
            "unknown_parameter",
        )


def model(body: dict[str, Any], task: str) -> str:
    """The ``model`` field (required, as OpenAI's API and vLLM's require it)."""
    name = get(body, "model", str, required=True)
    try:
        spec = registry.get(name)
    except ModelNotFoundError:
        raise ModelNotFoundError(
            f"the model '{name}' does not exist; GET /v1/models lists them",
            details={"param": "model"},
        ) from None
    if spec.task != task:
        raise bad(f"the model '{name}' is a {spec.task} model, not {task}", "model")
    return spec.name


# Sampling fields a request may leave out; the model's own generation config
# (``generation_config.json`` beside the export) fills them, as vLLM does.
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "repetition_penalty")
# OpenAI's defaults, for a field neither the request nor the model sets.
OPENAI_SAMPLING_DEFAULTS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0,
}


def generation_params(
    body: dict[str, Any], model_defaults: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The generation parameters: the request's, else ``model_defaults`` (the model's
    generation config), else OpenAI's defaults.  ``params["sampling_source"]`` is not
    returned; :func:`sampling_sources` says where each came from."""
    n = get(body, "n", int, 1)
    if n != 1:
        raise bad("only n=1 is supported", "n")
    if get(body, "logprobs", (bool, int), False):
        raise bad("logprobs are not supported", "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if get(body, name, (int, float), 0) != 0:
            raise bad(f"{name} is not supported (use repetition_penalty)", name)
    # max_completion_tokens (OpenAI's current name) wins over max_tokens; both are checked.
    max_tokens = 256
    for name in ("max_tokens", "max_completion_tokens"):
        value = get(body, name, int)
        if value is not None:
            if not 1 <= value <= 8192:
                raise bad(f"{name} must be between 1 and 8192", name)
            max_tokens = value
    defaults = {**OPENAI_SAMPLING_DEFAULTS, **(model_defaults or {})}
    # Ranges are checked on the numbers as sent, before any float(): a 400-digit
    # integer is a 400 here, not an OverflowError.
    temperature = get(body, "temperature", (int, float), defaults["temperature"])
    if not 0 <= temperature <= 2:
        raise bad("temperature must be between 0 and 2", "temperature")
    top_p = get(body, "top_p", (int, float), defaults["top_p"])
    if not 0 < top_p <= 1:
        raise bad("top_p must be in (0, 1]", "top_p")
    penalty = get(body, "repetition_penalty", (int, float), defaults["repetition_penalty"])
    if not 0 < penalty <= 10:
        raise bad("repetition_penalty must be in (0, 10]", "repetition_penalty")
    top_k = get(body, "top_k", int, defaults["top_k"])
    if not 0 <= top_k <= MAX_TOP_K:
        raise bad(f"top_k must be between 0 (no limit) and {MAX_TOP_K}", "top_k")
    seed = get(body, "seed", int)
    if seed is not None and not MIN_SEED <= seed <= MAX_SEED:
        raise bad("seed must be a 64-bit signed integer", "seed")
    stop = get(body, "stop", (str, list), None)
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (len(stop) > 4 or not all(isinstance(s, str) and s for s in stop)):
        raise bad("stop must be a non-empty string or a list of at most 4 of them", "stop")
    params = {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": seed,
        "stop": tuple(stop or ()),
        "top_k": top_k,
        "repetition_penalty": float(penalty),
    }
    try:
        GenerationParams.from_kwargs(**params)
    except InvalidInputError as exc:
        raise bad(exc.message) from None
    return params


def passive_fields(body: dict[str, Any]) -> None:
    """Fields the server accepts but does not act on must still have their types:
    ``user`` a string, ``metadata`` an object of strings, ``store`` a boolean."""
    get(body, "user", str)
    metadata = get(body, "metadata", dict, {})
    if not all(isinstance(v, str) for v in metadata.values()):
        raise bad("metadata must be an object whose values are strings", "metadata")
    get(body, "store", bool)


def stream_options(body: dict[str, Any]) -> dict[str, Any]:
    """``stream_options``: an object whose ``include_usage`` (if sent) is a boolean."""
    opts = get(body, "stream_options", dict, {}) or {}
    if opts.get("include_usage") is not None and not isinstance(opts["include_usage"], bool):
        raise bad("stream_options.include_usage must be a boolean", "stream_options.include_usage")
    return opts


def sampling_sources(body: dict[str, Any], model_defaults: dict[str, Any]) -> dict[str, str]:
    """Where each sampling parameter came from: request | generation_config | default."""
    return {
        k: "request" if body.get(k) is not None
        else "generation_config" if k in model_defaults else "default"
        for k in SAMPLING_FIELDS
    }


def prompt(body: dict[str, Any]) -> str:
    text = get(body, "prompt", (str, list), required=True)
    if isinstance(text, list):
        if len(text) != 1 or not isinstance(text[0], str):
            raise bad("prompt must be a string (or a list of exactly one string)", "prompt")
        text = text[0]
    if not text:
        raise bad("prompt must not be empty", "prompt")
    return text


def messages(body: dict[str, Any]) -> list[dict[str, str]]:
    items = get(body, "messages", list, required=True)
    if not items:
        raise bad("'messages' must contain at least one message", "messages")
    out = []
    for i, msg in enumerate(items):
        if not isinstance(msg, dict):
            raise bad(f"messages[{i}] must be an object", f"messages[{i}]")
        role = msg.get("role")
        if role not in ("system", "user", "assistant", "developer", "tool"):
            raise bad(
                f"messages[{i}].role must be system, user, assistant, developer or tool",
                f"messages[{i}].role",
            )
        content = msg.get("content")
        if isinstance(content, list):  # content parts: text only
            texts = []
            for part in content:
                if (
                    not isinstance(part, dict)
                    or part.get("type") != "text"
                    or not isinstance(part.get("text"), str)
                ):
                    raise bad(
                        f"messages[{i}].content: only text parts are supported",
                        f"messages[{i}].content",
                    )
                texts.append(part["text"])
            content = "".join(texts)
        if not isinstance(content, str):
            raise bad(f"messages[{i}].content must be a string", f"messages[{i}].content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    data = get(body, "input", (str, list), required=True)
    texts = [data] if isinstance(data, str) else data
    if not texts or not all(isinstance(t, str) for t in texts):
        raise bad(
            "input must be a non-empty string or a list of strings (token arrays are "
            "not supported)",
            "input",
        )
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise bad(f"at most {MAX_EMBEDDING_INPUTS} inputs per request", "input")
    if any(not t.strip() for t in texts):
        raise bad("input strings must not be empty", "input")
    return list(texts)


def fit_embedding_inputs(
    model: str, texts: list[str], truncate: int | None
) -> tuple[list[str], list[bool], int]:
    """``(texts, truncated, prompt_tokens)``: inputs longer than the model's context
    (MiniLM: 256 tokens, [CLS] and [SEP] included) are a 400 naming the first,
    unless ``truncate`` (vLLM's ``truncate_prompt_tokens``: k tokens, -1 = the
    context) asks to cut them; a cut text ends at a token boundary, so the model
    sees exactly its first k tokens."""
    from tokenizers import Tokenizer

    from webaccel.models import text as text_models

    if model != "minilm":  # the only text-embedding model; a user's own takes raw tensors
        return texts, [False] * len(texts), 0
    limit = text_models.max_seq_length()
    if truncate is not None and truncate != -1 and not 2 < truncate <= limit:
        raise bad(
            f"truncate_prompt_tokens must be -1 (the model's context) or in [3, {limit}]",
            "truncate_prompt_tokens",
        )
    keep = limit if truncate in (None, -1) else truncate
    tok = Tokenizer.from_str(text_models._tokenizer().to_str())
    tok.no_truncation()
    tok.no_padding()
    out, cut, total = [], [], 0
    for i, (text, enc) in enumerate(zip(texts, tok.encode_batch(list(texts)), strict=True)):
        n = len(enc.ids)
        if n <= keep:
            out.append(text)
            cut.append(False)
            total += n
            continue
        if truncate is None:
            raise bad(
                f"input[{i}] is {n} tokens, over {model}'s context of {limit}; shorten it, or "
                "send \"truncate_prompt_tokens\": -1 to have it truncated",
                "input",
                "context_length_exceeded",
            )
        # enc.offsets[j] spans token j; tokens 1..keep-2 are kept between [CLS] and [SEP]
        end = enc.offsets[keep - 2][1]
        out.append(text[:end])
        cut.append(True)
        total += keep
    return out, cut, total
