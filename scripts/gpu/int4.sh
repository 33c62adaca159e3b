#!/usr/bin/env bash
# Issue 18 item 2 on the GPU machine: MiniLM int4 variants (and fp16) on both
# onnxruntime-web WebGPU builds against native fp32 (scripts/gpu/int4_check.py).
# The stage is two folders, one per device call (64 MiB each), unpacked into
# /tmp/w on the same warm machine:
#   .stage/a: node.xz, js.tar.xz (as scripts/gpu/stage.sh, xz -1), gl/*.deb
#             (call 1: INT4_MODE=unpack, carry .stage/a)
#   .stage/b: minilm.npz.xz (pack_graphs.py pooled=...), sentences.json
#             (int4_check.py sentences), wt.tar.xz (this work tree's
#             src/webaccel and scripts/gpu)   (call 2, carry .stage/b)
# Call 2: mkdir -p /tmp/w/wt && tar -xJf .stage/b/wt.tar.xz -C /tmp/w/wt && bash /tmp/w/wt/scripts/gpu/int4.sh
#   VARIANTS="int4-b32 int4-b16 ..." PROBE_ARGS="--warmup 20 --repeat 40"
# Writes $OUT/int4.json (everything), $OUT/prepare.log, $OUT/nvidia-smi.csv.
set -uo pipefail
STAGE=${STAGE:-$PWD/.stage}
W=/tmp/w
OUT=${OUT:-$W/out}
mkdir -p $W $OUT
T0=$(date +%s)
step() { echo "[int4.sh +$(( $(date +%s) - T0 ))s] $*" >&2; }
if ls $STAGE/a/gl/*.deb >/dev/null 2>&1 && [ ! -f $W/gl.done ]; then
  for f in $STAGE/a/gl/*.deb; do dpkg -x "$f" /; done && ldconfig && touch $W/gl.done
fi
if [ -f $STAGE/a/node.xz ] && [ ! -x $W/node ]; then
  xz -dc $STAGE/a/node.xz > $W/node.tmp && chmod +x $W/node.tmp && mv $W/node.tmp $W/node
fi
if [ -f $STAGE/a/js.tar.xz ] && [ ! -f $W/js.done ]; then
  mkdir -p $W/js && xz -dc $STAGE/a/js.tar.xz | tar -C $W/js -xf - && touch $W/js.done
fi
if [ "${INT4_MODE:-}" = unpack ]; then ls -la $W; step unpacked; exit 0; fi
export XDG_RUNTIME_DIR=/tmp
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
WT=$W/wt
[ -f $W/js.done ] && cp -a $W/js/. $WT/
G=$W/g
if [ -f $STAGE/b/minilm.npz.xz ] && [ ! -f $G/pooled.fp32.onnx ]; then
  mkdir -p $G && xz -dc $STAGE/b/minilm.npz.xz > $W/minilm.npz \
    && PYTHONPATH=$WT/src python3 $WT/scripts/gpu/pack_graphs.py unpack $W/minilm.npz $G >/dev/null && rm $W/minilm.npz
fi
for need in $W/node $W/js.done $G/pooled.fp32.onnx; do
  [ -e $need ] || { echo "missing $need (see this script's header)" >&2; exit 3; }
done
nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,clocks.sm --format=csv > $OUT/nvidia-smi.csv 2>&1
step "staged: node $($W/node --version), $(nvidia-smi -L 2>/dev/null | head -1), onnxruntime $(python3 -c 'import onnxruntime; print(onnxruntime.__version__)')"
D=$W/int4
mkdir -p $D
[ -f $STAGE/b/sentences.json ] && cp $STAGE/b/sentences.json $D/
cd $WT
export PYTHONPATH=$WT/src PYTHONUNBUFFERED=1
step "prepare ${VARIANTS:=int4-b32 int4-b16 fp16}"
python3 scripts/gpu/int4_check.py prepare $G/pooled.fp32.onnx $D $VARIANTS 2> $OUT/prepare.log
step "prepare exit $?"
python3 scripts/gpu/int4_check.py run $D --builds ${BUILDS:-all,webgpu} --node $W/node -- ${PROBE_ARGS:-} \
  > $OUT/int4.json 2> $OUT/probe.log
step "run exit $?"
cat $OUT/prepare.log
grep -v '"capabilities"' $OUT/probe.log | cut -c1-700
