"""transformers.js names for precisions and tasks, mapped to webaccel's own.

transformers.js picks a weight file by ``dtype`` and a pipeline by task name;
webaccel builds precision variants (``fp32, fp16, int8, int4, mixed``) and
names tasks by model type.  Both sets of names are accepted everywhere a
precision or a task is given (CLI ``--precision``, ``accelerate(options=
{"precision": ...})``, :func:`webaccel.pipeline`):

======== ============= ==============================================================
dtype    our variant   what it is here
======== ============= ==============================================================
fp32     fp32          the exported graph
fp16     fp16          onnxruntime's float16 converter, inputs and outputs kept fp32
q8       int8          dynamic quantization, unsigned 8-bit weights (QUInt8) per channel
uint8    int8          the same file (transformers.js' q8 is uint8 too)
int8     int8          the same file: we build one 8-bit variant, with unsigned weights
q4       int4          ``MatMulNBits`` 4-bit weights, fp32 activations
q4f16    int4          the same file: activations stay fp32 (no fp16 4-bit build)
======== ============= ==============================================================

``mixed`` (per-layer choice from measured sensitivity) has no transformers.js name.
"""

from __future__ import annotations

from webaccel.errors import InvalidInputError

PRECISIONS = ("fp32", "fp16", "int8", "int4", "mixed")

DTYPE_TO_PRECISION: dict[str, str] = {
    "fp32": "fp32",
    "fp16": "fp16",
    "q8": "int8",
    "int8": "int8",
    "uint8": "int8",
    "q4": "int4",
    "q4f16": "int4",
}

# transformers.js pipeline task -> (our task, the registered model it defaults to)
TASK_ALIASES: dict[str, tuple[str, str]] = {
    "feature-extraction": ("text_embedding", "minilm"),
    "sentence-similarity": ("text_embedding", "minilm"),
    "image-classification": ("image_classification", "nsfw-cnn"),
    "automatic-speech-recognition": ("audio", "whisper-tiny-en"),
    "text-generation": ("text_generation", "smollm2"),
}
# our own task names are accepted as well
OWN_TASKS: dict[str, tuple[str, str]] = {
    "text_embedding": ("text_embedding", "minilm"),
    "image_classification": ("image_classification", "nsfw-cnn"),
    "vision": ("vision", "vit-saliency"),
    "audio": ("audio", "whisper-tiny-en"),
    "text_generation": ("text_generation", "smollm2"),
}


def describe_dtypes() -> str:
    return ", ".join(f"{d} -> {p}" for d, p in DTYPE_TO_PRECISION.items())


def to_precision(value: str | None) -> str | None:
    """Our variant name for a precision or a transformers.js dtype (None/"auto": None)."""
    if value is None or value == "auto":
        return None
    key = value.lower()
    if key in PRECISIONS:
        return key
    if key in DTYPE_TO_PRECISION:
        return DTYPE_TO_PRECISION[key]
    raise InvalidInputError(
        f"unknown precision {value!r}: use one of {', '.join(PRECISIONS)}, or a "
        f"transformers.js dtype ({describe_dtypes()})"
    )


def resolve_task(task: str) -> tuple[str, str]:
    """``(our task, default model)`` for a transformers.js or webaccel task name."""
    key = task.strip().lower()
    if key in TASK_ALIASES:
        return TASK_ALIASES[key]
    if key.replace("-", "_") in OWN_TASKS:
        return OWN_TASKS[key.replace("-", "_")]
    raise InvalidInputError(
        f"unknown task {task!r}: use one of {', '.join(TASK_ALIASES)} "
        f"(transformers.js names) or {', '.join(OWN_TASKS)}"
    )
