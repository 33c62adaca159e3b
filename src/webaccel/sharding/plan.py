"""How to split: how many stages a memory budget needs, and where to cut by cost.

* :func:`stages_for_budget` -- the fewest stages (even by layer count) whose
  files each fit a per-worker memory budget; the pool's own budget check
  (``PoolState._evictions``) then keeps each stage on a worker it fits.
* :func:`measured_sizes` -- layers per stage from each layer's measured time
  in native onnxruntime (:func:`webaccel.sharding.split.balance`), so stages
  take similar time.
"""

from __future__ import annotations

import time
from typing import Any

from webaccel.errors import OutOfMemoryError
from webaccel.sharding import split as cut
from webaccel.sharding.stages import SplitModel, split_model


def fits(split: SplitModel, budget: int | None) -> bool:
    return budget is None or all(s.size_bytes() <= budget for s in split.stages)


def stages_for_budget(name: str, budget: int | None) -> SplitModel:
    """The fewest stages of ``name`` whose files each fit ``budget`` bytes (2 at least)."""
    from webaccel.models import registry

    src = registry.get(name).ensure_onnx("fp32")
    n_layers = cut.count_layers(src)
    last: SplitModel | None = None
    for n in range(2, n_layers + 1):
        last = split_model(name, n)
        if fits(last, budget):
            return last
    biggest = max(s.size_bytes() for s in last.stages) if last else src.stat().st_size
    raise OutOfMemoryError(
        f"{name} does not fit a per-worker budget of {budget} bytes even in {n_layers} stages "
        f"(one layer per stage; the largest stage is {biggest} bytes); raise the budget",
        details={"budget": budget, "largest_stage": biggest},
    )


def why_sharded(split: SplitModel, budget: int | None) -> str:
    whole = split.parent.onnx_path("fp32").stat().st_size
    sizes = ", ".join(f"{s.size_bytes() / 1e6:.1f}" for s in split.stages)
    return (
        f"{split.parent.name} fp32 is {whole / 1e6:.1f} MB, over the per-worker memory budget "
        f"of {(budget or 0) / 1e6:.1f} MB: runs as {len(split.stages)} stages of {sizes} MB "
        f"on separate workers"
    )


def layer_costs(name: str, feeds: dict[str, Any], repeats: int = 5) -> list[float]:
    """Each layer's median time (ms) in native onnxruntime, 1 thread, on ``feeds``.

    Measured as one-layer stages: the embedding lookup and pooling are charged
    to the first and last layer, where they run."""
    import onnxruntime as ort

    from webaccel.models import registry

    n = cut.count_layers(registry.get(name).ensure_onnx("fp32"))
    split = split_model(name, sizes=tuple([1] * n), how="cost")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    avail = dict(feeds)
    costs: list[float] = []
    for s in split.stages:
        sess = ort.InferenceSession(str(s.path()), opts, providers=["CPUExecutionProvider"])
        run_feeds = {k: avail[k] for k in s.inputs}
        times = []
        outs: list[Any] = []
        for _ in range(repeats):
            t = time.perf_counter()
            outs = sess.run(None, run_feeds)
            times.append((time.perf_counter() - t) * 1000)
        avail.update(zip(s.outputs, outs, strict=True))
        costs.append(sorted(times)[len(times) // 2])
    return costs


def measured_sizes(name: str, stages: int, feeds: dict[str, Any]) -> tuple[int, ...]:
    return tuple(cut.balance(layer_costs(name, feeds), stages))


__all__ = ["fits", "layer_costs", "measured_sizes", "stages_for_budget", "why_sharded"]
