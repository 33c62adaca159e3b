"""Request validation for the ``/v1`` routes: the body, then each field.

Everything a client sends is checked here, before any of it reaches a
tokenizer, the engine or an error message:

* the body is read under :data:`MAX_BODY_BYTES` while it arrives and must
  be one strict JSON object, not too deep, whose every string is valid
  Unicode (:func:`webaccel.http_body.read_json_object`);
* then each field has its type and range checked.

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


def model(body: dict[str, Any], task: str, default: str | None) -> str:
    name = get(body, "model", str, default, required=default is None)
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


def generation_params(body: dict[str, Any]) -> dict[str, Any]:
    n = get(body, "n", int, 1)
    if n != 1:
        raise bad("only n=1 is supported", "n")
    if get(body, "logprobs", (bool, int), False):
        raise bad("logprobs are not supported", "logprobs")
    for name in ("presence_penalty", "frequency_penalty"):
        if get(body, name, (int, float), 0) != 0:
            raise bad(f"{name} is not supported (use repetition_penalty)", name)
    max_tokens = get(body, "max_completion_tokens", int) or get(body, "max_tokens", int, 256)
    if not 1 <= max_tokens <= 8192:
        raise bad("max_tokens must be between 1 and 8192", "max_tokens")
    temperature = get(body, "temperature", (int, float), 1.0)
    if not 0 <= temperature <= 2:
        raise bad("temperature must be between 0 and 2", "temperature")
    top_p = get(body, "top_p", (int, float), 1.0)
    if not 0 < top_p <= 1:
        raise bad("top_p must be in (0, 1]", "top_p")
    stop = get(body, "stop", (str, list), None)
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (len(stop) > 4 or not all(isinstance(s, str) and s for s in stop)):
        raise bad("stop must be a non-empty string or a list of at most 4 of them", "stop")
    params = {
        "max_tokens": max_tokens,
        "temperature": float(temperature),
        "top_p": float(top_p),
        "seed": get(body, "seed", int),
        "stop": tuple(stop or ()),
        "top_k": get(body, "top_k", int, 0),
        "repetition_penalty": get(body, "repetition_penalty", (int, float), 1.0),
    }
    try:
        GenerationParams.from_kwargs(**params)
    except InvalidInputError as exc:
        raise bad(exc.message) from None
    return params


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
