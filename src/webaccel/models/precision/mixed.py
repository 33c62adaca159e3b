"""``mixed``: per layer group one of fp32 / 8-bit / 4-bit, from *measured* sensitivity.

The smallest mix that meets an accuracy target on calibration feeds; every
accepted plan was measured, nothing is extrapolated.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from webaccel.errors import InvalidInputError
from webaccel.models.precision.accuracy import Feed, Metric, compare_outputs, run_feeds, session
from webaccel.models.precision.files import load_model, model_bytes, save_model
from webaccel.models.precision.int4 import (
    DEFAULT_ACCURACY_LEVEL,
    DEFAULT_BLOCK_SIZE,
    _nbits_pass,
    _untie_column_gathers,
)
from webaccel.models.precision.weights import _nameless_nodes_named, weight_nodes

log = logging.getLogger(__name__)

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
            save_model(
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
        save_model(
            apply_plan(base, choice, block_size=block_size, accuracy_level=accuracy_level),
            Path(dest),
        )
        size_final = model_bytes(dest)
    return MixedPlan(target, metric, block_size, choice, sensitivity, score, size_final, met, steps)


__all__ = ["Choice", "MixedPlan", "apply_plan", "to_mixed"]
