// GPU probe: times onnxruntime-web session.run in this Node process (no bridge)
// for several session/Dawn variants, so one device call shows where the fixed
// per-run cost goes. Prints one JSON object per line to stdout.
//
//   node scripts/gpu/probe.mjs --model M.onnx [--model16 M16.onnx] [--shapes 1x16,32x128]
//        [--variants base,gpuout,...] [--warmup 20] [--repeat 30] [--build webgpu] [--threads 1]
//        [--session-config KEY=VALUE ...]
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';

import { F16_FLAG, setupNodeEnv } from '../../src/webaccel/web/node-env.mjs';

const { values: o } = parseArgs({ options: {
  model: { type: 'string' }, model16: { type: 'string' },
  shapes: { type: 'string', default: '1x16,32x128,128x128' },
  variants: { type: 'string', default: 'base' },
  warmup: { type: 'string', default: '20' }, repeat: { type: 'string', default: '30' },
  build: { type: 'string', default: 'webgpu' }, threads: { type: 'string', default: '1' },
  'dawn-flag': { type: 'string', multiple: true, default: [] },
  'ort-dir': { type: 'string' },
  // onnxruntime session config entries, e.g. optimization.disable_specified_optimizers=MatMulAddFusion
  'session-config': { type: 'string', multiple: true, default: [] },
} });
const extra = Object.fromEntries(o['session-config'].map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
// One enable-dawn-features flag with every toggle (the f16 one always on).
const toggles = [F16_FLAG.split('=')[1]];
const dawnFlags = [];
for (const f of o['dawn-flag']) {
  if (f.startsWith('enable-dawn-features=')) toggles.push(...f.split('=')[1].split(',').filter(Boolean));
  else dawnFlags.push(f);
}
dawnFlags.push(`enable-dawn-features=${[...new Set(toggles)].join(',')}`);
const env = await setupNodeEnv({ build: o.build, threads: Number(o.threads), dawnFlags,
  ...(o['ort-dir'] ? { ortDir: o['ort-dir'] } : {}) });
const { ort, capabilities } = env;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
emit({ kind: 'capabilities', capabilities });

// Seeded LCG: the same token ids as the Python bench (webgpu_vs_wasm.token_ids).
function tokenIds(batch, seq, seed = 1234) {
  let s = BigInt(seed);
  const ids = new BigInt64Array(batch * seq);
  for (let i = 0; i < ids.length; i++) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
    ids[i] = 1000n + ((s >> 33n) % 28000n);
  }
  for (let b = 0; b < batch; b++) { ids[b * seq] = 101n; ids[b * seq + seq - 1] = 102n; }
  return ids;
}
const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

// Each variant: session options + how a run is done.
const VARIANTS = {
  base: { ep: 'webgpu' },
  base_prof: { ep: 'webgpu' },
  gpuout: { ep: 'webgpu', sess: { preferredOutputLocation: 'gpu-buffer' }, read: true },
  gpuout_noread: { ep: 'webgpu', sess: { preferredOutputLocation: 'gpu-buffer' }, read: false },
  gpuio: { ep: 'webgpu', sess: { preferredOutputLocation: 'gpu-buffer' }, gpuInputs: true, read: true },
  // Graph capture (static shapes, GPU-resident inputs and outputs). Exact with
  // the JSEP build (--build all) once every node runs on the GPU (MiniLM r4);
  // the WebGPU EP build (1.30) replays wrong outputs (max abs 0.2 on MiniLM r4,
  // onnxruntime issue 29594) or fails in dawn.node: time it, never trust it.
  capture: { ep: 'webgpu', fixed: true, sess: { preferredOutputLocation: 'gpu-buffer', enableGraphCapture: true }, gpuInputs: true, read: true },
  capture_noread: { ep: 'webgpu', fixed: true, sess: { preferredOutputLocation: 'gpu-buffer', enableGraphCapture: true }, gpuInputs: true, read: false },
  nchw: { ep: { name: 'webgpu', preferredLayout: 'NCHW' } },
  // Shape buckets: a session per (batch, sequence) with the dims fixed, so
  // onnxruntime folds the shape arithmetic at load (freeDimensionOverrides).
  static: { ep: 'webgpu', fixed: true },
  static_prof: { ep: 'webgpu', fixed: true },  // kernel times of the graph that capture replays
  static_gpuout: { ep: 'webgpu', fixed: true, sess: { preferredOutputLocation: 'gpu-buffer' }, read: true },
  opt_disabled: { ep: 'webgpu', sess: { graphOptimizationLevel: 'disabled' } },
  opt_basic: { ep: 'webgpu', sess: { graphOptimizationLevel: 'basic' } },
  opt_extended: { ep: 'webgpu', sess: { graphOptimizationLevel: 'extended' } },
  wasm: { ep: 'wasm' },
};

async function gpuTensor(device, data, dims) {
  const bytes = data.byteLength;
  const buf = device.createBuffer({ size: Math.ceil(bytes / 16) * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, bytes);
  return ort.Tensor.fromGpuBuffer(buf, { dataType: 'int64', dims });
}

for (const name of o.variants.split(',')) {
  const v = VARIANTS[name.replace(/_f16$/, '')];
  const f16 = name.endsWith('_f16');
  const file = f16 ? o.model16 : o.model;
  if (!v || !file) { emit({ kind: 'skip', variant: name, why: v ? 'no model file' : 'unknown variant' }); continue; }
  const bytes = new Uint8Array(await readFile(file));
  for (const shape of o.shapes.split(',')) {
    const [batch, seq] = shape.split('x').map(Number);
    const rec = { kind: 'probe', variant: name, batch, seq };
    let session;
    try {
      const t0 = performance.now();
      const fixed = v.fixed ? { freeDimensionOverrides: { batch, sequence: seq } } : {};
      session = await ort.InferenceSession.create(bytes, { executionProviders: [v.ep], graphOptimizationLevel: 'all', extra, ...fixed, ...(v.sess || {}) });
      rec.create_ms = performance.now() - t0;
      const ids = tokenIds(batch, seq);
      const mask = new BigInt64Array(batch * seq).fill(1n);
      const types = new BigInt64Array(batch * seq);
      const dims = [batch, seq];
      let feeds;
      if (v.gpuInputs) {
        const device = await ort.env.webgpu.device;
        feeds = { input_ids: await gpuTensor(device, ids, dims), attention_mask: await gpuTensor(device, mask, dims), token_type_ids: await gpuTensor(device, types, dims) };
      } else {
        feeds = { input_ids: new ort.Tensor('int64', ids, dims), attention_mask: new ort.Tensor('int64', mask, dims), token_type_ids: new ort.Tensor('int64', types, dims) };
      }
      let fetches;
      let readCaptured;
      if (v.sess?.enableGraphCapture) {
        // Graph capture needs every input and output in a GPU buffer of its own
        // (the replay reuses them): read the output back ourselves, never through
        // Tensor.getData, which turns the fetch tensor into a CPU one.
        const device = await ort.env.webgpu.device;
        const pooledOut = session.outputNames[0] !== 'last_hidden_state';
        const outDims = pooledOut ? [batch, 384] : [batch, seq, 384];
        const size = outDims.reduce((a, b) => a * b, 1) * 4;
        const buf = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
        readCaptured = async () => {
          const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
          const enc = device.createCommandEncoder();
          enc.copyBufferToBuffer(buf, 0, staging, 0, size);
          device.queue.submit([enc.finish()]);
          await staging.mapAsync(GPUMapMode.READ);
          const out = new Float32Array(staging.getMappedRange().slice(0));
          staging.destroy();
          return out;
        };
        fetches = { [session.outputNames[0]]: ort.Tensor.fromGpuBuffer(buf, { dataType: 'float32', dims: outDims }) };
      }
      const once = async () => {
        if (fetches) {
          await session.run(feeds, fetches);
          return v.read === false ? null : readCaptured();
        }
        const out = await session.run(feeds);
        const t = out[session.outputNames[0]];
        if (v.read === false) return t;
        if (t.location === 'cpu') return t.data;
        const data = await t.getData(false);
        if (!fetches) t.dispose();
        return data;
      };
      const warm = Number(o.warmup), rep = Number(o.repeat);
      let last;
      for (let i = 0; i < warm; i++) last = await once();
      const dev = v.ep === 'wasm' ? null : await ort.env.webgpu.device;
      if (v.read === false) await dev.queue.onSubmittedWorkDone();
      if (name.includes('prof')) {
        // Per-kernel GPU times for one run (onnxruntime-web env.webgpu.profiling; printed to the console).
        ort.env.webgpu.profiling = { mode: 'default' };
        console.log(`# profile ${name} ${batch}x${seq} begin`);
        await once();
        console.log(`# profile ${name} ${batch}x${seq} end`);
        ort.env.webgpu.profiling = { mode: 'off' };
      }
      const times = [];
      for (let i = 0; i < rep; i++) {
        const t0 = performance.now();
        last = await once();
        if (v.read === false && !fetches) last.dispose();
        if (v.read === false) await dev.queue.onSubmittedWorkDone();
        times.push(performance.now() - t0);
      }
      if (last && last.length) { let s = 0; for (let i = 0; i < last.length; i += 97) s += Number(last[i]); rec.checksum = s; rec.first = Array.from(last.slice(0, 4)).map(Number); }
      rec.median_ms = median(times); rec.min_ms = Math.min(...times); rec.max_ms = Math.max(...times); rec.n = rep;
    } catch (err) {
      rec.error = String(err.message || err).slice(0, 500);
    }
    try { await session?.release(); } catch {}
    emit(rec);
  }
}
process.exit(0);
