"""What the decode loop and the Python side need to know about a generation model.

A built text-generation model is a directory with ``model.onnx``,
``tokenizer.json``, ``generation.json`` and ``generation_config.json`` (written
by :func:`webaccel.generation.export.export_causal_lm`).  :class:`GenerationModel`
reads them: tokenizer, chat template, stop ids, KV-cache shape, and the
model's own sampling defaults (:attr:`GenerationModel.sampling_defaults`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.generation.export import (
    GENERATION_CONFIG_FILE,
    META_FILE,
    SAMPLING_KEYS,
    TOKENIZER_FILE,
)

ROLES = ("system", "user", "assistant", "tool", "developer")


@dataclass(frozen=True)
class GenerationModel:
    name: str
    directory: Path
    meta: dict[str, Any]

    @classmethod
    def load(cls, name: str, onnx_path: Path) -> GenerationModel:
        directory = Path(onnx_path).parent
        try:
            meta = json.loads((directory / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise LoadFailedError(
                f"{name}: {directory / META_FILE} is missing or unreadable; delete {directory} "
                "and build the model again"
            ) from exc
        return cls(name, directory, meta)

    @property
    def layers(self) -> int:
        return int(self.meta["layers"])

    @property
    def kv_heads(self) -> int:
        return int(self.meta["kv_heads"])

    @property
    def head_dim(self) -> int:
        return int(self.meta["head_dim"])

    @property
    def eos_token_ids(self) -> list[int]:
        return [int(i) for i in self.meta.get("eos_token_ids", [])]

    @property
    def max_positions(self) -> int:
        return int(self.meta.get("max_positions", 2048))

    @cached_property
    def sampling_defaults(self) -> dict[str, Any]:
        """temperature / top_p / top_k / repetition_penalty from the model's
        ``generation_config.json``, those it sets ({} when it sets none)."""
        try:
            cfg = json.loads((self.directory / GENERATION_CONFIG_FILE).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise LoadFailedError(
                f"{self.name}: {self.directory / GENERATION_CONFIG_FILE} is unreadable; delete "
                f"{self.directory} and build the model again"
            ) from exc
        out = {k: cfg[k] for k in SAMPLING_KEYS if cfg.get(k) is not None}
        if cfg.get("do_sample") is False:  # transformers: greedy, whatever the temperature
            out["temperature"] = 0.0
        return out

    @cached_property
    def tokenizer(self) -> Any:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(self.directory / TOKENIZER_FILE))
        tok.no_padding()
        tok.no_truncation()
        return tok

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: list[int], *, skip_special_tokens: bool = True) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def apply_chat_template(
        self, messages: list[dict[str, Any]], *, add_generation_prompt: bool = True
    ) -> str:
        """Render ``messages`` with the model's own template (as transformers does)."""
        template = self.meta.get("chat_template")
        if not template:
            raise InvalidInputError(f"{self.name} has no chat template; pass a prompt string")
        check_messages(messages)
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        special = {}
        vocab = self.tokenizer.get_added_tokens_decoder()
        for tid, added in vocab.items():
            if tid == self.meta.get("bos_token_id"):
                special["bos_token"] = added.content
            if self.eos_token_ids and tid == self.eos_token_ids[0]:
                special["eos_token"] = added.content
        return str(
            env.from_string(template).render(
                messages=messages, add_generation_prompt=add_generation_prompt, **special
            )
        )


def check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise InvalidInputError("messages must be a non-empty list of {role, content} objects")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise InvalidInputError(f"messages[{i}] must be an object with 'role' and 'content'")
        role, content = msg.get("role"), msg.get("content")
        if role not in ROLES:
            raise InvalidInputError(f"messages[{i}].role must be one of {ROLES}, got {role!r}")
        if not isinstance(content, str):
            raise InvalidInputError(f"messages[{i}].content must be a string")
