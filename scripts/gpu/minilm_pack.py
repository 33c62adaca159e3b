"""Pack MiniLM small enough to carry to the GPU machine, and unpack it there.

The GPU machine has no network and a call carries at most 64 MiB: the fp32
ONNX (90 MB) does not fit beside Node and Dawn.  ``pack`` keeps the graph and
stores every float initializer as float16 (half the bytes, and they compress);
``unpack`` widens them back to float32.  The result is the same fp32 graph
whose weights are the fp16-rounded originals: every op still computes in
fp32, so its timings are those of the fp32 model, and all correctness checks
there compare runtimes on that same file.  Rounding is idempotent, so the fp16
variant made from it (``precision.to_fp16``) equals the one made from the
original.

    python scripts/gpu/minilm_pack.py pack FP32.onnx OUT.npz
    python scripts/gpu/minilm_pack.py unpack IN.npz MODEL_DIR   # writes MODEL_DIR/model.onnx
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def pack(src: Path, dest: Path) -> None:
    model = onnx.load(str(src))
    names: list[str] = []
    arrays: dict[str, np.ndarray] = {}
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or init.external_data:
            continue
        arr = numpy_helper.to_array(init)
        if arr.size < 64:  # scalars and tiny constants stay exact in the graph
            continue
        arrays[f"w{len(names)}"] = arr.astype(np.float16)
        names.append(init.name)
        init.ClearField("raw_data")
        init.ClearField("float_data")
    graph = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
    np.savez(
        dest, graph=graph, names=np.frombuffer(json.dumps(names).encode(), dtype=np.uint8), **arrays
    )


def unpack(src: Path, model_dir: Path) -> Path:
    data = np.load(src)
    model = onnx.ModelProto()
    model.ParseFromString(data["graph"].tobytes())
    names = json.loads(data["names"].tobytes())
    index = {name: i for i, name in enumerate(names)}
    for init in model.graph.initializer:
        i = index.get(init.name)
        if i is not None:
            init.CopyFrom(numpy_helper.from_array(data[f"w{i}"].astype(np.float32), init.name))
    model_dir.mkdir(parents=True, exist_ok=True)
    out = model_dir / "model.onnx"
    tmp = model_dir / ".model.onnx.tmp"
    onnx.save(model, str(tmp))
    tmp.replace(out)
    return out


if __name__ == "__main__":
    cmd, a, b = sys.argv[1:4]
    if cmd == "pack":
        pack(Path(a), Path(b))
    elif cmd == "unpack":
        print(unpack(Path(a), Path(b)))
    else:
        raise SystemExit(f"unknown command {cmd}; use pack or unpack")
