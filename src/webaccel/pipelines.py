"""``webaccel.pipeline(task, model=None, **opts)``: one callable per task, as in
transformers.js (``await pipeline('feature-extraction', model)``) and
sentence-transformers (``SentenceTransformer(name).encode(sentences)``).

Tasks take transformers.js names (``feature-extraction``,
``image-classification``, ``automatic-speech-recognition``,
``text-generation``) or webaccel's own; each has a default model
(:data:`webaccel.dtypes.TASK_ALIASES`).  ``dtype`` takes transformers.js
dtypes (``q8``, ``q4``...) mapped to our variants (:mod:`webaccel.dtypes`),
``device`` the backend (``webgpu``, ``wasm``, ``webnn``, ``auto``).

What each call returns follows the library its users know:

* feature-extraction: a ``float32`` array, ``(n, 384)`` for a list and
  ``(384,)`` for one string, mean-pooled and L2-normalised (transformers.js'
  ``{pooling: 'mean', normalize: true}``); any number of texts (sent in
  batches of ``batch_size``).  ``encode()`` is sentence-transformers' name.
* image-classification: ``[{"label", "score"}, ...]`` best first (a list of
  such lists for a list of images).
* automatic-speech-recognition: ``{"text": ...}``.
* text-generation: ``[{"generated_text": ...}]``: the prompt plus its
  continuation for a string (``return_full_text``), or the chat with the
  assistant's answer appended for a list of messages.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from webaccel.dtypes import resolve_task, to_precision
from webaccel.errors import InvalidInputError

DEFAULT_BATCH = 64


class Pipeline:
    """A callable over one model in a browser worker pool; ``close()`` (or ``with``) ends it."""

    def __init__(
        self,
        task: str,
        model: str | None = None,
        *,
        dtype: str | None = None,
        device: str | None = None,
        browser: str | None = None,
        accelerator: Any = None,
        **accelerator_options: Any,
    ) -> None:
        from webaccel.models import registry

        self.task, default_model = resolve_task(task)
        spec = registry.get(model or default_model)
        if spec.task != self.task and spec.model_type != self.task:
            raise InvalidInputError(
                f"{spec.name} is a {spec.task} model, not {task}; leave model out for "
                f"this task's default ({default_model})"
            )
        self.model = spec.name
        self.precision = to_precision(dtype)
        self.device = None if device in (None, "auto") else device
        self.browser = browser
        self._own = accelerator is None
        if accelerator is None:
            from webaccel.api import WebAccelerator

            accelerator_options.setdefault("default_platform", "auto")
            accelerator_options.setdefault("default_browser", browser or "chromium")
            accelerator = WebAccelerator(**accelerator_options)
        self.accelerator = accelerator

    # ------------------------------------------------------------------ calling
    def __call__(self, inputs: Any, **kwargs: Any) -> Any:
        if self.task == "text_embedding":
            return self._embed(inputs, **kwargs)
        if self.task == "text_generation":
            return self._generate(inputs, **kwargs)
        if self.task == "image_classification":
            return self._classify(inputs, **kwargs)
        if self.task == "audio":
            return self._transcribe(inputs, **kwargs)
        return self._run(inputs, kwargs)

    def _run(self, data: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
        opts = dict(options or {})
        if self.precision is not None:
            opts.setdefault("precision", self.precision)
        return dict(
            self.accelerator.accelerate(
                self.model, data, opts, platform=self.device, browser=self.browser
            )
        )

    def _embed(
        self,
        texts: str | list[str],
        *,
        pooling: str = "mean",
        normalize: bool = True,
        batch_size: int = DEFAULT_BATCH,
    ) -> np.ndarray:
        if pooling != "mean" or not normalize:
            raise InvalidInputError(
                f"{self.model} pools in its graph: mean pooling, normalised (pooling='mean', "
                "normalize=True), as sentence-transformers does for it"
            )
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        if not items:
            return np.zeros((0, 384), dtype=np.float32)
        if batch_size < 1:
            raise InvalidInputError("batch_size must be at least 1")
        parts = [
            np.asarray(self._run(items[i : i + batch_size])["embeddings"], dtype=np.float32)
            for i in range(0, len(items), batch_size)
        ]
        out = np.concatenate(parts)
        return out[0] if single else out

    def encode(
        self,
        sentences: str | list[str],
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        convert_to_numpy: bool = True,
        **_: Any,
    ) -> np.ndarray:
        """sentence-transformers' ``encode``: normalised embeddings as a numpy array."""
        if self.task != "text_embedding":
            raise InvalidInputError("encode() is for feature-extraction pipelines")
        return self._embed(sentences, batch_size=batch_size, normalize=normalize_embeddings)

    def _classify(self, images: Any, *, top_k: int | None = None) -> Any:
        single = not isinstance(images, list)
        res = self._run(images)["results"]
        rows = [res] if single else res

        def ranked(r: dict[str, Any]) -> list[dict[str, Any]]:
            items = sorted(
                ({"label": k, "score": float(v)} for k, v in r["scores"].items()),
                key=lambda x: -x["score"],
            )
            return items[:top_k] if top_k else items

        out = [ranked(r) for r in rows]
        return out[0] if single else out

    def _transcribe(self, audio: Any, **options: Any) -> dict[str, str]:
        return {"text": str(self._run(audio, options or None)["text"])}

    def _generate(
        self,
        prompt: str | list[dict[str, Any]],
        *,
        max_new_tokens: int | None = None,
        max_tokens: int | None = None,
        do_sample: bool | None = None,
        return_full_text: bool = True,
        **params: Any,
    ) -> list[dict[str, Any]]:
        from webaccel.generation import load_generation_model

        _, gm, _ = load_generation_model(self.model, self.precision or "fp32")
        # the model's generation config first, then what the caller sets (as transformers)
        settings = {**gm.sampling_defaults, **params}
        if do_sample is False:
            settings["temperature"] = 0.0
        settings["max_tokens"] = max_new_tokens or max_tokens or 128
        text = self.accelerator.generate(
            self.model,
            prompt,
            platform=self.device,
            precision=self.precision or "fp32",
            **settings,
        )
        if isinstance(prompt, list):
            return [{"generated_text": [*prompt, {"role": "assistant", "content": text}]}]
        return [{"generated_text": prompt + text if return_full_text else text}]

    # ------------------------------------------------------------------ lifetime
    def close(self) -> None:
        if self._own and self.accelerator is not None:
            self.accelerator.close()
        self.accelerator = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Pipeline(task={self.task!r}, model={self.model!r}, precision={self.precision!r})"


def pipeline(task: str, model: str | None = None, **opts: Any) -> Pipeline:
    """A callable for ``task`` (transformers.js names work) over ``model`` (else the
    task's default); ``opts``: ``dtype``, ``device``, ``browser``, ``accelerator`` (share
    one :class:`~webaccel.api.WebAccelerator`), or WebAccelerator's own options."""
    return Pipeline(task, model, **opts)
