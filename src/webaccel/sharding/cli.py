"""``webaccel models split NAME --stages N``: cut a model into stage files (registered by
:mod:`webaccel.cli` through its plugin list)."""

from __future__ import annotations

import json
import time
from typing import Any

import typer


def register_models(models_app: typer.Typer) -> None:
    from webaccel.cli import console, typed_errors

    @models_app.command("split")
    @typed_errors
    def models_split(
        name: str,
        stages: int = typer.Option(2, "--stages", help="how many pipeline stages"),
        by: str = typer.Option("layers", "--by", help="layers (even layer count) | cost "
                               "(layers timed in native onnxruntime, stages of similar time)"),
        as_json: bool = typer.Option(False, "--json"),
    ) -> None:
        """Split NAME (fp32) into STAGES models of consecutive transformer layers, each its
        own ONNX file with its own CID (registered as NAME.stageKofN)."""
        from webaccel.content.store import BlockStore
        from webaccel.errors import InvalidInputError
        from webaccel.hosting import content_id
        from webaccel.sharding.stages import split_model

        t0 = time.perf_counter()
        if by == "layers":
            split = split_model(name, stages)
        elif by == "cost":
            from webaccel.models import registry
            from webaccel.sharding.plan import measured_sizes

            spec = registry.get(name)
            feeds = spec.processor().preprocess(
                ["A man is playing a guitar on a stage in front of a crowd."] * 8, {}
            ).tensors
            split = split_model(name, sizes=measured_sizes(name, stages, feeds), how="cost")
        else:
            raise InvalidInputError(f"--by {by!r}: choose layers or cost")
        blocks = BlockStore.default()
        info: dict[str, Any] = {
            "model": split.parent.name,
            "how": split.how,
            "layers_per_stage": list(split.sizes),
            "stages": [
                {**d, "path": str(s.path()), "cid": content_id(s.path(), blocks)}
                for d, s in zip(split.describe(), split.stages, strict=True)
            ],
            "seconds": round(time.perf_counter() - t0, 2),
        }
        if as_json:
            print(json.dumps(info))
            return
        for st in info["stages"]:
            console.print(
                f"{st['model']}: layers {st['layers'][0]}-{st['layers'][-1]}, "
                f"{st['bytes'] / 1e6:.1f} MB, in {st['inputs']} -> out {st['outputs']}\n"
                f"  {st['path']}\n  cid {st['cid']}",
                highlight=False,
            )
