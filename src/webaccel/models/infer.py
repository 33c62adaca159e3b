"""Which family a model belongs to, from its graph (and HF config), not its name.

:func:`infer_model_type` is pure: it reads an ``onnx.ModelProto``'s inputs and
outputs (names, element types, ranks, static dims) and, when given, a Hugging
Face ``config.json`` dict.  The config is trusted first (``architectures``
and ``model_type`` say what the weights were trained for); the graph decides
otherwise.  The answer names the rule that fired, so a wrong guess is easy to
see and to override in the registry.

Families are the registry's tasks: ``text_embedding``, ``text_generation``,
``vision`` (dense outputs such as saliency or segmentation maps),
``image_classification`` and ``audio``; ``unknown`` when nothing fits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import onnx

UNKNOWN = "unknown"

# HF model_type values by family (config.json "model_type").
_AUDIO_TYPES = {
    "whisper",
    "wav2vec2",
    "hubert",
    "wavlm",
    "speech_to_text",
    "moonshine",
    "seamless_m4t",
    "audio-spectrogram-transformer",
    "clap",
    "encodec",
    "sew",
    "unispeech",
}
_VISION_TYPES = {
    "vit",
    "deit",
    "beit",
    "swin",
    "convnext",
    "convnextv2",
    "resnet",
    "efficientnet",
    "mobilenet_v2",
    "mobilevit",
    "regnet",
    "dinov2",
    "segformer",
    "detr",
    "yolos",
    "dpt",
    "levit",
    "poolformer",
}
_TEXT_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "mpnet",
    "distilbert",
    "albert",
    "electra",
    "deberta",
    "deberta-v2",
    "camembert",
    "nomic_bert",
    "modernbert",
    "e5",
}

_LM_TYPES = {
    "llama",
    "gpt2",
    "gpt_neox",
    "gptj",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "opt",
    "bloom",
    "falcon",
    "stablelm",
    "olmo",
    "smollm3",
    "granite",
}

_AUDIO_INPUT = re.compile(r"input_features|input_values|audio|waveform|mel|speech|pcm", re.I)
_IMAGE_INPUT = re.compile(r"pixel|image|img", re.I)
_PAST = re.compile(r"past|present|cache", re.I)
_CROSS = re.compile(r"encoder_hidden_states|cross_", re.I)

_FLOATS = {
    onnx.TensorProto.FLOAT,
    onnx.TensorProto.FLOAT16,
    onnx.TensorProto.BFLOAT16,
    onnx.TensorProto.DOUBLE,
}
_INTS = {onnx.TensorProto.INT64, onnx.TensorProto.INT32}


@dataclass(frozen=True)
class TensorSig:
    name: str
    elem_type: int
    dims: tuple[int | str | None, ...]  # int when static, the symbol (or None) when dynamic

    @property
    def rank(self) -> int:
        return len(self.dims)

    @property
    def is_float(self) -> bool:
        return self.elem_type in _FLOATS

    @property
    def is_int(self) -> bool:
        return self.elem_type in _INTS


@dataclass(frozen=True)
class ModelTypeGuess:
    task: str
    reason: str
    source: str  # "config" | "graph" | "none"


def signature(values: Sequence[onnx.ValueInfoProto]) -> list[TensorSig]:
    out = []
    for v in values:
        t = v.type.tensor_type
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
        )
        out.append(TensorSig(v.name, t.elem_type, dims))
    return out


def graph_inputs(model: onnx.ModelProto) -> list[TensorSig]:
    """Real inputs: graph inputs that are not also initializers (old exporters list both)."""
    inits = {i.name for i in model.graph.initializer}
    return [s for s in signature(model.graph.input) if s.name not in inits]


def infer_model_type(
    model: onnx.ModelProto, hf_config: Mapping[str, Any] | None = None
) -> ModelTypeGuess:
    """The family of ``model``: from ``hf_config`` when it is decisive, else from the graph."""
    if hf_config:
        guess = _from_config(hf_config)
        if guess is not None:
            return guess
    return _from_graph(graph_inputs(model), signature(model.graph.output))


def _from_config(cfg: Mapping[str, Any]) -> ModelTypeGuess | None:
    archs = [str(a) for a in cfg.get("architectures") or []]
    mtype = str(cfg.get("model_type", "")).lower()

    def hit(task: str, why: str) -> ModelTypeGuess:
        return ModelTypeGuess(task, why, "config")

    for a in archs:
        if a.endswith("ForImageClassification"):
            return hit("image_classification", f"architecture {a}")
        if a.endswith(("ForSpeechSeq2Seq", "ForCTC", "ForAudioClassification")) or (
            a.endswith("ForConditionalGeneration") and mtype in _AUDIO_TYPES
        ):
            return hit("audio", f"architecture {a}")
        if a.endswith(("ForCausalLM", "LMHeadModel")):
            return hit("text_generation", f"architecture {a}")
        if a.endswith(
            (
                "ForSemanticSegmentation",
                "ForDepthEstimation",
                "ForObjectDetection",
                "ForImageSegmentation",
            )
        ):
            return hit("vision", f"architecture {a}")
    if mtype in _AUDIO_TYPES:
        return hit("audio", f"model_type {mtype}")
    if mtype in _VISION_TYPES:
        return hit("vision", f"model_type {mtype}")
    if mtype in _TEXT_ENCODER_TYPES and not any(
        a.endswith(
            (
                "ForSequenceClassification",
                "ForTokenClassification",
                "ForQuestionAnswering",
                "ForMaskedLM",
            )
        )
        for a in archs
    ):
        return hit("text_embedding", f"model_type {mtype} (an encoder without a task head)")
    if mtype in _LM_TYPES or cfg.get("is_decoder"):
        return hit("text_generation", f"model_type {mtype}" if mtype in _LM_TYPES else "is_decoder")
    return None


def _is_image(s: TensorSig) -> bool:
    if not s.is_float or s.rank != 4:
        return False
    nchw = s.dims[1] in (1, 3, 4)
    nhwc = s.dims[3] in (1, 3, 4)
    spatial_ok = all(
        not isinstance(d, int) or d >= 16 for d in (s.dims[2:] if nchw else s.dims[1:3])
    )
    return (nchw or nhwc) and spatial_ok


def _is_audio(s: TensorSig) -> bool:
    if not s.is_float:
        return False
    if _AUDIO_INPUT.search(s.name) and s.rank in (2, 3):
        return True
    # [batch, mel bins, frames] with a typical mel count.
    return s.rank == 3 and s.dims[1] in (64, 80, 128)


def _from_graph(inputs: list[TensorSig], outputs: list[TensorSig]) -> ModelTypeGuess:
    def hit(task: str, why: str) -> ModelTypeGuess:
        return ModelTypeGuess(task, why, "graph")

    if not inputs:
        return ModelTypeGuess(UNKNOWN, "the graph has no inputs", "none")
    names = [s.name for s in inputs]
    out_names = [s.name for s in outputs]
    ids = next((s for s in inputs if s.is_int and re.search(r"input_ids|tokens?$", s.name)), None)
    has_past = any(_PAST.search(n) for n in names + out_names)

    audio = next((s for s in inputs if _is_audio(s)), None)
    if audio is not None and ids is None:
        return hit(
            "audio", f"float input {audio.name} {list(audio.dims)} looks like audio features"
        )
    image = next((s for s in inputs if _is_image(s)), None)
    if image is not None and ids is None:
        # One score vector per image -> classifier; maps or token grids -> dense vision.
        first = outputs[0] if outputs else None
        if first is not None and first.rank == 2:
            return hit(
                "image_classification",
                f"image input {image.name} {list(image.dims)} and a [batch, classes] output",
            )
        return hit("vision", f"image input {image.name} {list(image.dims)} with dense outputs")
    if ids is not None:
        logits = next((s for s in outputs if "logits" in s.name.lower()), None)
        if any(_CROSS.search(n) for n in names):
            return hit(
                "text_generation",
                "input_ids with encoder states: a seq2seq decoder (its encoder decides the family)",
            )
        if has_past:
            return hit("text_generation", "input_ids with past/present key-value tensors")
        if logits is not None and logits.rank == 3:
            return hit("text_generation", f"per-token logits output {logits.name}")
        emb = next((s for s in outputs if s.is_float and s.rank in (2, 3)), None)
        if emb is not None and (logits is None):
            return hit("text_embedding", f"token ids in, float {emb.name} rank {emb.rank} out")
        return ModelTypeGuess(
            UNKNOWN,
            "token ids in, class logits out (text classification is not a registry task)",
            "graph",
        )
    return ModelTypeGuess(UNKNOWN, f"no rule matches inputs {names}", "none")


__all__ = [
    "ModelTypeGuess",
    "TensorSig",
    "UNKNOWN",
    "graph_inputs",
    "infer_model_type",
    "signature",
]
