"""Export a Hugging Face causal LM (Llama family) to ONNX with past key/values.

One graph serves prefill and decode steps (a "with past" decoder whose past
may be empty)::

    inputs : input_ids [batch, seq] int64, attention_mask [batch, past+seq] int64,
             position_ids [batch, seq] int64,
             past_key_values.{i}.key|value [batch, kv_heads, past, head_dim] float32
    outputs: logits [batch, 1, vocab] (last position only: the loop needs nothing else,
             and skipping the LM head on the prompt saves ~20% of prefill for SmolLM2),
             present.{i}.key|value [batch, kv_heads, past+seq, head_dim],
             next_token [batch, 1] int64 (greedy choice: ArgMax of logits, first
             maximum on ties like the samplers; a GPU loop reads back 8 bytes a row
             instead of the vocabulary's logits)

The names follow Optimum / transformers.js, so other tools read the file.  The
tokenizer and everything the decode loop needs (layers, kv shape, stop ids,
chat template) are written beside the model as ``tokenizer.json`` and
``generation.json`` (see :mod:`webaccel.generation.meta`); the model's own
sampling defaults as ``generation_config.json``, the file and format of
Hugging Face exports (transformers.js and vLLM read the same one).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from webaccel.errors import LoadFailedError

META_FILE = "generation.json"
TOKENIZER_FILE = "tokenizer.json"
GENERATION_CONFIG_FILE = "generation_config.json"
# The registry revision of exported causal LMs (files of another are rebuilt).
# 2: softmax NaN guards as Equal(x, x), which WebGPU runs (was a GPU sync per layer).
# 3: generation_config.json (the model's sampling defaults) beside the model.
# 4: next_token output (ArgMax in the graph) and mask/position inputs converted on
#    the GPU (no CPU node left): the captured decode step.
EXPORT_REVISION = "4"
# The sampling fields of a Hugging Face GenerationConfig that serve as request
# defaults (vLLM's ``--generation-config auto`` reads these same ones).
SAMPLING_KEYS = ("temperature", "top_p", "top_k", "repetition_penalty")


def sampling_config(
    generation_config: Any, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The sampling fields a model's ``GenerationConfig`` sets away from transformers'
    defaults (as ``to_diff_dict`` reports them), then ``overrides``."""
    out: dict[str, Any] = {}
    if generation_config is not None:
        diff = generation_config.to_diff_dict()
        out = {k: diff[k] for k in SAMPLING_KEYS if diff.get(k) is not None}
    out.update(overrides or {})
    return out


def _torch() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    try:
        import torch
        from transformers.cache_utils import DynamicCache  # noqa: F401
    except ImportError as exc:
        raise LoadFailedError(
            "exporting a text-generation model needs torch and transformers: "
            "`pip install 'webaccel[export]'`"
        ) from exc
    return torch


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def export_causal_lm(
    model: Any,
    dest: Path,
    *,
    tokenizer_json: str,
    chat_template: str | None,
    eos_token_ids: list[int],
    bos_token_id: int | None = None,
    source: str = "",
    opset: int = 17,
    sampling: dict[str, Any] | None = None,
) -> None:
    """Write ``dest`` (ONNX) and, beside it, ``tokenizer.json``, ``generation.json`` and
    ``generation_config.json`` (``sampling``: defaults over the model's own
    ``generation_config``, e.g. where the weights file carries none)."""
    torch = _torch()
    from transformers.cache_utils import DynamicCache

    cfg = model.config
    layers = int(cfg.num_hidden_layers)
    kv_heads = int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
    model = model.eval()

    class WithPast(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.lm = model

        def forward(
            self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any
        ) -> Any:
            cache = DynamicCache(
                ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(layers)],
                config=self.lm.config,
            )
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            flat = [out.logits]
            for layer in out.past_key_values.layers:
                flat += [layer.keys, layer.values]
            return tuple(flat)

    # Trace with a non-empty past and seq > 1 so neither the "no cache yet" nor the
    # "single query" shortcut of the attention-mask code is baked into the graph.
    past_len, seq = 3, 4
    dummy_past = [torch.zeros(1, kv_heads, past_len, head_dim) for _ in range(2 * layers)]
    ids = torch.ones(1, seq, dtype=torch.int64)
    mask = torch.ones(1, past_len + seq, dtype=torch.int64)
    pos = torch.arange(past_len, past_len + seq, dtype=torch.int64)[None]
    in_names = ["input_ids", "attention_mask", "position_ids", *past_names(layers)]
    out_names = ["logits", *present_names(layers)]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch"},
    }
    for name in past_names(layers):
        axes[name] = {0: "batch", 2: "past_sequence"}
    for name in present_names(layers):
        axes[name] = {0: "batch", 2: "total_sequence"}
    with torch.no_grad():
        torch.onnx.export(
            WithPast().eval(),
            (ids, mask, pos, *dummy_past),
            str(dest),
            input_names=in_names,
            output_names=out_names,
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    model.eval()  # docs/FACTS.md: export can leave the module in training mode
    if getattr(cfg, "tie_word_embeddings", False):
        untie_lm_head(Path(dest))
    _gpu_rewrites(Path(dest), int(getattr(cfg, "max_position_embeddings", 2048)))
    out_names.append(NEXT_TOKEN)
    meta = {
        "format": "webaccel-causal-lm/1",
        "source": source,
        "layers": layers,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        "vocab_size": int(cfg.vocab_size),
        "max_positions": int(getattr(cfg, "max_position_embeddings", 2048)),
        "eos_token_ids": [int(i) for i in eos_token_ids],
        "bos_token_id": bos_token_id,
        "chat_template": chat_template,
        "inputs": in_names,
        "outputs": out_names,
    }
    out_dir = Path(dest).parent
    (out_dir / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    (out_dir / META_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
    gen_cfg = {
        "bos_token_id": bos_token_id,
        "eos_token_id": [int(i) for i in eos_token_ids],
        **sampling_config(getattr(model, "generation_config", None), sampling),
    }
    if any(k in gen_cfg for k in SAMPLING_KEYS):
        gen_cfg["do_sample"] = gen_cfg.get("temperature", 1.0) > 0
    (out_dir / GENERATION_CONFIG_FILE).write_text(json.dumps(gen_cfg, indent=1), encoding="utf-8")


NEXT_TOKEN = "next_token"


def _gpu_rewrites(path: Path, max_positions: int) -> None:
    """Graph edits for onnxruntime-web's WebGPU kernels (models/rewrites.py): NaN guards
    and the mask/position inputs on the GPU (no CPU node left, so the decode step can
    be captured), and ``next_token``."""
    import onnx
    from onnx import TensorProto, helper

    from webaccel.models.rewrites import (
        graph_outputs_from_kernels,
        int64_inputs_on_gpu,
        nan_guards_on_gpu,
    )

    model = onnx.load(str(path))
    nan_guards_on_gpu(model)
    int64_inputs_on_gpu(model, max_positions)
    graph_outputs_from_kernels(model)  # logits (untie_lm_head's Unsqueeze)
    graph = model.graph
    # ONNX ArgMax keeps the first maximum, as greedy picking in sampling.py and
    # generate.mjs does.
    graph.node.append(
        helper.make_node(
            "ArgMax", ["logits"], [NEXT_TOKEN], axis=-1, keepdims=0, name="/next_token"
        )
    )
    graph.output.append(helper.make_tensor_value_info(NEXT_TOKEN, TensorProto.INT64, ["batch", 1]))
    onnx.save(model, str(path))


def untie_lm_head(path: Path) -> bool:
    """Drop the exporter's transposed copy of a tied embedding (113 MB for SmolLM2).

    The tracer writes ``lm_head`` as ``MatMul(h, E^T)`` with ``E^T`` as a second
    initializer.  With logits for one position, ``h`` is ``[batch, 1, hidden]``, so
    ``Unsqueeze(Gemm(Reshape(h, [-1, hidden]), E, transB=1), 1)`` is the same
    product reading the embedding table itself.  Returns whether it rewrote.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gather = next(
        (
            n
            for n in graph.node
            if n.op_type == "Gather" and n.input[0] in inits and n.input[1] == "input_ids"
        ),
        None,
    )
    matmul = next(
        (n for n in graph.node if n.op_type == "MatMul" and n.output[0] == "logits"), None
    )
    if gather is None or matmul is None or matmul.input[1] not in inits:
        return False
    table = numpy_helper.to_array(inits[gather.input[0]])
    copy = numpy_helper.to_array(inits[matmul.input[1]])
    if copy.shape != table.T.shape or not np.array_equal(copy, table.T):
        return False
    hidden = table.shape[1]
    shape_name = "lm_head_2d_shape"
    graph.initializer.append(
        numpy_helper.from_array(np.array([-1, hidden], dtype=np.int64), shape_name)
    )
    axes_name = "lm_head_unsqueeze_axes"
    graph.initializer.append(numpy_helper.from_array(np.array([1], dtype=np.int64), axes_name))
    idx = list(graph.node).index(matmul)
    new_nodes = [
        helper.make_node(
            "Reshape", [matmul.input[0], shape_name], ["lm_head_2d"], name="/lm/lm_head/Reshape"
        ),
        helper.make_node(
            "Gemm",
            ["lm_head_2d", gather.input[0]],
            ["lm_head_logits_2d"],
            transB=1,
            name="/lm/lm_head/Gemm",
        ),
        helper.make_node(
            "Unsqueeze", ["lm_head_logits_2d", axes_name], ["logits"], name="/lm/lm_head/Unsqueeze"
        ),
    ]
    graph.node.remove(matmul)
    for offset, node in enumerate(new_nodes):
        graph.node.insert(idx + offset, node)
    graph.initializer.remove(inits[matmul.input[1]])
    onnx.save(model, str(path))
    return True
