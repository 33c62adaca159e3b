"""4-bit MiniLM on WebGPU: build int4 variants, native references, and run them on both builds.

Issue 18 item 2.  From MiniLM's fp32 graph (the registry's pooled file, or the
one scripts/gpu/run.sh unpacks as ``pooled.fp32.onnx``) this builds the 4-bit
variants named on the command line with ``webaccel.models.precision.to_int4``,
an fp16 variant, and native onnxruntime CPU outputs (fp32 = the reference;
each variant natively, to tell quantization error from a WebGPU kernel's), then
runs ``scripts/gpu/int4_probe.mjs`` on the JSEP build (``all``) and the native
WebGPU EP build (``webgpu``) and prints one JSON object with everything.

    python scripts/gpu/int4_check.py sentences DIR  # ids of calibration.SENTENCES (tokenizer)
    python scripts/gpu/int4_check.py prepare FP32.onnx DIR [VARIANT ...]
    python scripts/gpu/int4_check.py run DIR [--builds all,webgpu] [--node node] [-- PROBE ARGS]

A VARIANT is ``int4-b<block>[-sym][-nogbq][-a0]`` (block size, symmetric
weights, embedding tables left in fp32, accuracy_level unset instead of 4),
``mixed<NN>`` (``to_mixed`` at worst cosine >= 0.NN on the calibration
sentences: 4-bit where measured safe, 8-bit elsewhere) or ``fp16``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# The seeded ids every GPU probe uses (int4_probe.mjs and probe.mjs make the same).
from webaccel.bench.webgpu_vs_wasm import feeds

SHAPES = ((1, 16), (32, 128))
HERE = Path(__file__).resolve().parent


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = min(8, os.cpu_count() or 1)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _native(path: Path, batch: int, seq: int) -> np.ndarray:
    return np.asarray(_session(path).run(None, feeds(batch, seq))[0], dtype=np.float32)


def _sentence_feeds(ids: list[int]) -> dict[str, np.ndarray]:
    row = np.asarray([ids], dtype=np.int64)
    return {
        "input_ids": row,
        "attention_mask": np.ones_like(row),
        "token_type_ids": np.zeros_like(row),
    }


def _native_sentences(path: Path, sentences: list[list[int]]) -> np.ndarray:
    """One run per sentence (batch 1, no padding), as calibration.feeds_for: [n, 384]."""
    sess = _session(path)
    return np.concatenate([sess.run(None, _sentence_feeds(ids))[0] for ids in sentences]).astype(
        np.float32
    )


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def sentences(out: Path) -> None:
    """Token ids of calibration.SENTENCES, for a machine without the tokenizer."""
    from webaccel.models import calibration, registry

    per_sentence = calibration.feeds_for(registry.get("minilm"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentences.json").write_text(
        json.dumps([f["input_ids"][0].tolist() for f in per_sentence])
    )


def _worst_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(_cosines(a, b).min())


def _build(fp32: Path, dest: Path, variant: str) -> dict:
    from webaccel.models import precision

    if variant == "fp16":
        precision.to_fp16(fp32, dest)
        return {"precision": "fp16"}
    mixed = re.fullmatch(r"mixed(\d+)", variant)  # mixed95: to_mixed, worst cosine >= 0.95
    if mixed:
        from webaccel.models import calibration, registry

        target = int(mixed.group(1)) / 100
        feeds = calibration.feeds_for(registry.get("minilm"))
        plan = precision.to_mixed(fp32, dest, feeds, target=target, metric="cosine")
        return {"precision": "mixed", "target": target, "choice": plan.choice}
    m = re.fullmatch(r"int4-b(\d+)((?:-sym|-nogbq|-a0|-dq)*)", variant)
    if not m:
        raise SystemExit(f"unknown variant {variant}")
    opts = {
        "block_size": int(m.group(1)),
        "symmetric": "-sym" in m.group(2),
        "quantize_embeddings": "auto" if not re.search("-nogbq|-dq", m.group(2)) else False,
    }
    kwargs: dict = {
        "block_size": opts["block_size"],
        "quantize_embeddings": opts["quantize_embeddings"],
    }
    if "-a0" in m.group(2):  # no int8 activations in native MatMulNBits (WebGPU ignores the level)
        kwargs["accuracy_level"] = opts["accuracy_level"] = None
    if opts["symmetric"]:
        kwargs["symmetric"] = True
    precision.to_int4(fp32, dest, **kwargs)
    if "-dq" in m.group(2):
        opts["embeddings"] = _dequantize_tables(dest, opts["block_size"])
    return opts


def _dequantize_tables(path: Path, block: int, share: float = 0.15) -> list[str]:
    """Store big Gather tables as blocked uint4 + ``DequantizeLinear`` (opset 21) before the Gather.

    The same bytes as ``GatherBlockQuantized`` (which JSEP computes wrongly),
    built from ops JSEP has; the whole table is dequantized every run.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    total = sum(numpy_helper.to_array(i).nbytes for i in model.graph.initializer)
    done = []
    for node in list(model.graph.node):
        if node.op_type != "Gather" or node.input[0] not in inits:
            continue
        table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        if table.ndim != 2 or table.nbytes < share * total or table.shape[1] % block:
            continue
        rows, cols = table.shape
        b = table.reshape(rows, cols // block, block)
        lo, hi = np.minimum(b.min(-1), 0), np.maximum(b.max(-1), 0)
        scale = ((hi - lo) / 15).astype(np.float32)
        scale[scale == 0] = 1
        zp = np.clip(np.round(-lo / scale), 0, 15).astype(np.uint8)
        q = np.clip(np.round(b / scale[..., None]) + zp[..., None], 0, 15).astype(np.uint8)

        def uint4(name: str, arr: np.ndarray) -> onnx.TensorProto:
            flat = arr.reshape(-1)
            if flat.size % 2:
                flat = np.append(flat, 0).astype(np.uint8)
            t = onnx.TensorProto(name=name, data_type=TensorProto.UINT4, dims=arr.shape)
            t.raw_data = (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8).tobytes()
            return t

        name = node.input[0]
        model.graph.initializer.remove(inits[name])
        model.graph.initializer.extend(
            [
                uint4(name + "_q4", q.reshape(rows, cols)),
                numpy_helper.from_array(scale, name + "_scale"),
                uint4(name + "_zp4", zp),
            ]
        )
        dq = helper.make_node(
            "DequantizeLinear",
            [name + "_q4", name + "_scale", name + "_zp4"],
            [name],
            axis=1,
            block_size=block,
            name=name + "_dq",
        )
        model.graph.node.insert(list(model.graph.node).index(node), dq)
        done.append(name)
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = max(o.version, 21)
    model.ir_version = max(model.ir_version, 10)
    onnx.save(model, str(path))
    return done


def prepare(fp32: Path, out: Path, variants: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {
        "models": {"fp32": str(fp32.resolve())},
        "refs": {},
        "native": {},
        "variants": {},
    }
    refs = {}
    for batch, seq in SHAPES:
        key = f"{batch}x{seq}"
        refs[key] = _native(fp32, batch, seq)
        refs[key].tofile(out / f"ref.{key}.f32")
        manifest["refs"][key] = f"ref.{key}.f32"
    sent = (
        json.loads((out / "sentences.json").read_text())
        if (out / "sentences.json").is_file()
        else None
    )
    if sent:
        refs["sentences"] = _native_sentences(fp32, sent)
        refs["sentences"].tofile(out / "ref.sentences.f32")
        manifest["refs"]["sentences"] = "ref.sentences.f32"
        manifest["sentences"] = sent
    fp32_bytes = fp32.stat().st_size
    manifest["variants"]["fp32"] = {"bytes": fp32_bytes, "bytes_ratio": 1.0}
    for variant in variants:
        dest = out / f"{variant}.onnx"
        t0 = time.perf_counter()
        opts = _build(fp32, dest, variant) if not dest.is_file() else {"reused": True}
        info = {
            **opts,
            "build_s": round(time.perf_counter() - t0, 1),
            "bytes": dest.stat().st_size,
            "bytes_ratio": dest.stat().st_size / fp32_bytes,
            # Native onnxruntime CPU on the same file: the quantization's own error.
            "native_worst_cosine": {
                f"{b}x{s}": _worst_cosine(_native(dest, b, s), refs[f"{b}x{s}"]) for b, s in SHAPES
            },
        }
        if sent:
            cos = _cosines(_native_sentences(dest, sent), refs["sentences"])
            info["native_sentences_cosine"] = {"mean": float(cos.mean()), "worst": float(cos.min())}
        manifest["models"][variant] = dest.name
        manifest["variants"][variant] = info
        print(json.dumps({"variant": variant, **info}), file=sys.stderr, flush=True)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def run(out: Path, builds: list[str], node: str, probe_args: list[str]) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for build in builds:
        cmd = [
            node,
            str(HERE / "int4_probe.mjs"),
            "--manifest",
            str(out / "manifest.json"),
            "--build",
            build,
            *probe_args,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows.append(row)
                if row.get("kind") != "capabilities":
                    print(json.dumps(row), file=sys.stderr, flush=True)
        if proc.returncode:
            rows.append(
                {
                    "kind": "exit",
                    "build": build,
                    "rc": proc.returncode,
                    "stderr": proc.stderr[-2000:],
                }
            )
    return {"manifest": manifest, "rows": rows}


def main(argv: list[str]) -> None:
    if argv[:1] == ["sentences"]:
        sentences(Path(argv[1]))
    elif argv[:1] == ["prepare"]:
        prepare(Path(argv[1]), Path(argv[2]), argv[3:])
    elif argv[:1] == ["run"]:
        out = Path(argv[1])
        rest = argv[2:]
        probe_args = rest[rest.index("--") + 1 :] if "--" in rest else []
        rest = rest[: rest.index("--")] if "--" in rest else rest
        builds = ["all", "webgpu"]
        node = "node"
        for i, a in enumerate(rest):
            if a == "--builds":
                builds = rest[i + 1].split(",")
            if a == "--node":
                node = rest[i + 1]
        print(json.dumps(run(out, builds, node, probe_args)))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
