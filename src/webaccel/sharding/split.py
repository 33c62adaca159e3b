"""Cutting one ONNX model into pipeline stages (issue 19).

A model is cut at *boundary tensors* -- for a transformer, the hidden state
each layer hands to the next.  Stage ``k`` is extracted with onnx's own
:class:`onnx.utils.Extractor`: its inputs are the previous boundary plus
whichever of the model's own inputs its nodes still need (MiniLM's later
stages need ``attention_mask``: each stage recomputes the attention bias from
it), its output is the next boundary (the last stage: the model's outputs).
Each stage is a model of its own -- a file, a CID, a registry entry
(``minilm.stage0of2``) -- so the pool places and loads it like any model.

Boundaries are found by name (``layer.N/output/LayerNorm`` for BERT exports)
and chosen by layer count, or by measured cost (:func:`balance`), so the
stages take similar time.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from webaccel.errors import InvalidInputError

# The hidden state leaving transformer layer N, as BERT exports name it (kept by fusion).
_BERT_LAYER_OUT = re.compile(r"/layer\.(\d+)/output/LayerNorm/LayerNormalization_output_0$")
# ... and the residual stream leaving decoder layer N of a Llama-style export.
_LLAMA_LAYER_OUT = re.compile(r"/layers\.(\d+)/Add_1_output_0$")
_ANY_LAYER = re.compile(r"/layers?\.(\d+)/")


@dataclass(frozen=True)
class StageGraph:
    """What one stage takes and gives, by tensor name."""

    index: int
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    layers: tuple[int, ...]  # the transformer layers it holds


def layer_boundaries(model: Any) -> list[str]:
    """The tensor leaving each transformer layer, in layer order (one per layer).

    The last layer's output often carries the export's own name
    (``last_hidden_state``) and is never a cut (the last stage ends at the
    model's outputs), so it may be returned as ``""``.
    """
    produced = {o for n in model.graph.node for o in n.output}
    found: dict[int, str] = {}
    seen_layers: set[int] = set()
    for n in model.graph.node:
        for hit in _ANY_LAYER.finditer(n.name + " " + " ".join(n.output)):
            seen_layers.add(int(hit.group(1)))
    for name in produced:
        m = _BERT_LAYER_OUT.search(name) or _LLAMA_LAYER_OUT.search(name)
        if m:
            found[int(m.group(1))] = name
    if not seen_layers:
        raise InvalidInputError(
            "no transformer layers found in this graph (looked for '/layer.N/' in node "
            "names); it cannot be split by layers"
        )
    n_layers = max(seen_layers) + 1
    missing = [i for i in range(n_layers - 1) if i not in found]
    if missing:
        raise InvalidInputError(f"no output tensor found for layers {missing}")
    return [found[i] for i in range(n_layers - 1)] + [found.get(n_layers - 1, "")]


def even_cuts(n_layers: int, stages: int) -> list[int]:
    """How many layers each stage holds, as even as possible (earlier stages get the extra)."""
    if stages < 1:
        raise InvalidInputError("stages must be >= 1")
    if stages > n_layers:
        raise InvalidInputError(f"{stages} stages for {n_layers} layers: at most {n_layers}")
    base, extra = divmod(n_layers, stages)
    return [base + (1 if i < extra else 0) for i in range(stages)]


def balance(costs: Sequence[float], stages: int) -> list[int]:
    """Layers per stage that minimise the slowest stage, given each layer's measured cost.

    Exact (dynamic programming over contiguous partitions); ties go to the
    even split.
    """
    n = len(costs)
    if stages < 1 or stages > n:
        raise InvalidInputError(f"{stages} stages for {n} layers")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[k][i]: the slowest stage when the first i layers make k stages
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                v = max(best[k - 1][j], prefix[i] - prefix[j])
                if v < best[k][i] - 1e-12:
                    best[k][i], cut[k][i] = v, j
    sizes: list[int] = []
    i = n
    for k in range(stages, 0, -1):
        j = cut[k][i]
        sizes.append(i - j)
        i = j
    return sizes[::-1]


def with_shapes(model: Any) -> Any:
    """The model with value_info for its intermediate tensors (the Extractor needs the
    boundaries' types); onnxruntime's symbolic inference knows the contrib ops."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True)


def stage_graphs(model: Any, sizes: Sequence[int]) -> list[StageGraph]:
    """Inputs and outputs of each stage for ``sizes`` layers per stage (pure: reads the graph)."""
    bounds = layer_boundaries(model)
    if sum(sizes) != len(bounds) or any(s < 1 for s in sizes):
        raise InvalidInputError(f"layers per stage {list(sizes)} do not cover {len(bounds)} layers")
    originals = [i.name for i in model.graph.input]
    finals = [o.name for o in model.graph.output]
    # A model output made inside a layer (a KV cache's present.N) leaves from that
    # layer's stage; the others (logits, embeddings) from the last stage.
    home = {o: _layer_of(model, o) for o in finals}
    out: list[StageGraph] = []
    first = 0
    for k, size in enumerate(sizes):
        layers = tuple(range(first, first + size))
        last = k == len(sizes) - 1
        ins = originals if k == 0 else [bounds[first - 1], *originals]
        mine = [o for o in finals if home[o] in layers or (last and home[o] is None)]
        outs = mine if last else [bounds[first + size - 1], *mine]
        needed = _needed_inputs(model, ins, outs)
        out.append(StageGraph(k, tuple(needed), tuple(outs), layers))
        first += size
    return out


def _layer_of(model: Any, tensor: str) -> int | None:
    """The layer whose node makes ``tensor`` (by the node's name), or None."""
    for n in model.graph.node:
        if tensor in n.output:
            hit = _ANY_LAYER.search(n.name + " " + " ".join(n.output))
            return int(hit.group(1)) if hit else None
    return None


def _needed_inputs(model: Any, inputs: Sequence[str], outputs: Sequence[str]) -> list[str]:
    """The subset of ``inputs`` the nodes between them and ``outputs`` read."""
    producer = {o: n for n in model.graph.node for o in n.output}
    stop = set(inputs)
    seen: set[str] = set()
    used: set[str] = set()
    stack = list(outputs)
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in stop:
            used.add(name)
            continue
        node = producer.get(name)
        if node is None:
            continue  # an initializer
        stack.extend(i for i in node.input if i)
    return [i for i in inputs if i in used]


def extract_stage(shaped: Any, stage: StageGraph, dest: Path) -> None:
    """Write ``stage`` of ``shaped`` (a model with value_info, :func:`with_shapes`) to ``dest``."""
    import onnx
    import onnx.utils

    sub = onnx.utils.Extractor(shaped).extract_model(list(stage.inputs), list(stage.outputs))
    sub.graph.name = f"{shaped.graph.name or 'model'}_stage{stage.index}"
    _own_cache_only(sub, stage)
    # Keep only the value_info of tensors this stage holds (the rest is noise).
    held = {o for n in sub.graph.node for o in n.output}
    keep = [v for v in sub.graph.value_info if v.name in held]
    del sub.graph.value_info[:]
    sub.graph.value_info.extend(keep)
    onnx.checker.check_model(sub)
    onnx.save(sub, str(dest))


_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


def _own_cache_only(sub: Any, stage: StageGraph) -> None:
    """Make a stage read no other layer's KV cache.

    Llama exports take the past length from ``Shape(past_key_values.0.key)``
    (through a one-input Concat) for every layer's mask and positions; a later
    stage would then need layer 0's cache only for its shape.  Every layer's
    cache has that shape, so such nodes read this stage's first layer's instead."""
    if not stage.layers:
        return
    own = stage.layers[0]
    for inp in list(sub.graph.input):
        m = _PAST.match(inp.name)
        if not m or int(m.group(1)) in stage.layers:
            continue
        users = [n for n in sub.graph.node if inp.name in n.input]
        if not users or not _shape_only(sub, inp.name):
            continue  # a real dependency: keep it
        mine = f"past_key_values.{own}.{m.group(2)}"
        if mine not in {i.name for i in sub.graph.input}:
            continue
        for n in users:
            for k, name in enumerate(n.input):
                if name == inp.name:
                    n.input[k] = mine
        sub.graph.input.remove(inp)


def _shape_only(sub: Any, name: str) -> bool:
    """Only the shape of ``name`` is read: its users are Shape nodes, or one-input
    Concat/Identity nodes (copies) whose outputs are read only for their shape."""
    users = [n for n in sub.graph.node if name in n.input]
    if any(o.name == name for o in sub.graph.output):
        return False
    for n in users:
        if n.op_type == "Shape":
            continue
        copy = n.op_type in ("Concat", "Identity") and len([i for i in n.input if i]) == 1
        if copy and all(_shape_only(sub, o) for o in n.output if o):
            continue
        return False
    return True


def split_file(src: Path, sizes: Sequence[int], dests: Sequence[Path]) -> list[StageGraph]:
    """Cut the ONNX file ``src`` into ``len(sizes)`` stage files at ``dests``."""
    import onnx

    model = onnx.load(str(src))
    stages = stage_graphs(model, sizes)
    shaped = with_shapes(model)
    for stage, dest in zip(stages, dests, strict=True):
        extract_stage(shaped, stage, dest)
    return stages


def count_layers(src: Path) -> int:
    import onnx

    return len(layer_boundaries(onnx.load(str(src), load_external_data=False)))


__all__ = [
    "StageGraph",
    "balance",
    "count_layers",
    "even_cuts",
    "extract_stage",
    "layer_boundaries",
    "split_file",
    "stage_graphs",
    "with_shapes",
]
