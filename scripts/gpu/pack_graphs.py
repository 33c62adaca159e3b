"""Pack ONNX graphs small enough to carry to the GPU machine, and unpack them there.

The GPU machine has no network and a call carries at most 64 MiB: one fp32
MiniLM ONNX (90 MB) does not fit beside Node and Dawn, let alone the two
graphs the benchmark compares (``webgpu_vs_wasm.BASE_GRAPHS``).  ``pack``
keeps each graph and stores every float initializer as float16 (half the
bytes, and they compress), once per distinct content: the graphs share their
embeddings and feed-forward weights, so the second one costs only its fused
attention weights.  ``unpack`` widens them back to float32.  Each result is
the same fp32 graph whose weights are the fp16-rounded originals: every op
still computes in fp32, so its timings are those of the fp32 model, and all
correctness checks there compare runtimes on those same files.  Rounding is
idempotent, so fp16 variants made from them equal those made from the originals.
``pack8`` stores int8 with a scale per tensor instead (a quarter of the bytes):
for runs where only the shape and the compute matter (the pipeline benchmark
compares the split and unsplit graphs made from the same weights), when the
fp16 pack does not fit one call beside Node.

    python scripts/gpu/pack_graphs.py pack|pack8 OUT.npz NAME=FP32.onnx [NAME=FP32.onnx ...]
    python scripts/gpu/pack_graphs.py unpack IN.npz DIR   # writes DIR/NAME.fp32.onnx
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def pack(dest: Path, graphs: dict[str, Path], int8: bool = False) -> None:
    arrays: dict[str, np.ndarray] = {}
    by_digest: dict[str, str] = {}
    index: dict[str, dict[str, str]] = {}  # graph -> initializer name -> array key
    blobs: dict[str, np.ndarray] = {}
    for name, src in graphs.items():
        model = onnx.load(str(src))
        refs: dict[str, str] = {}
        for init in model.graph.initializer:
            if init.data_type != onnx.TensorProto.FLOAT or init.external_data:
                continue
            arr = numpy_helper.to_array(init)
            if arr.size < 64:  # scalars and tiny constants stay exact in the graph
                continue
            half = arr.astype(np.float16)
            digest = hashlib.sha256(half.tobytes() + str(half.shape).encode()).hexdigest()
            key = by_digest.setdefault(digest, f"w{len(by_digest)}")
            if int8:
                scale = np.float32(max(float(np.abs(arr).max()), 1e-12) / 127)
                arrays[key] = np.round(arr / scale).astype(np.int8)
                arrays[f"{key}_scale"] = np.array(scale)
            else:
                arrays[key] = half
            refs[init.name] = key
            init.ClearField("raw_data")
            init.ClearField("float_data")
        index[name] = refs
        blobs[f"graph_{name}"] = np.frombuffer(model.SerializeToString(), dtype=np.uint8)
    meta = np.frombuffer(json.dumps(index).encode(), dtype=np.uint8)
    np.savez(dest, index=meta, **blobs, **arrays)


def unpack(src: Path, folder: Path) -> list[Path]:
    data = np.load(src)
    index = json.loads(data["index"].tobytes())
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, refs in index.items():
        model = onnx.ModelProto()
        model.ParseFromString(data[f"graph_{name}"].tobytes())
        for init in model.graph.initializer:
            key = refs.get(init.name)
            if key is not None:
                arr = data[key].astype(np.float32)
                if f"{key}_scale" in data:
                    arr *= data[f"{key}_scale"]
                init.CopyFrom(numpy_helper.from_array(arr, init.name))
        out = folder / f"{name}.fp32.onnx"
        tmp = folder / f".{name}.tmp"
        onnx.save(model, str(tmp))
        tmp.replace(out)
        written.append(out)
    return written


if __name__ == "__main__":
    cmd, a, *rest = sys.argv[1:]
    if cmd in ("pack", "pack8"):
        pack(Path(a), {k: Path(v) for k, v in (arg.split("=", 1) for arg in rest)}, cmd == "pack8")
    elif cmd == "unpack":
        print(*unpack(Path(a), Path(rest[0])), sep="\n")
    else:
        raise SystemExit(f"unknown command {cmd}; use pack or unpack")
