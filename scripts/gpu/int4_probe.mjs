// Precision probe: runs each model of a manifest in this Node process (no
// bridge) on one onnxruntime-web build, checks its output against reference
// outputs of native fp32 and times it. One JSON object per line on stdout.
// Made for issue 18 item 2 (4-bit MatMulNBits / GatherBlockQuantized on
// WebGPU); scripts/gpu/int4_check.py writes the manifest and the references.
//
//   node scripts/gpu/int4_probe.mjs --manifest DIR/manifest.json --build all|webgpu
//        [--models a,b] [--variants sentences,plain,capture] [--shapes 1x16,32x128] [--warmup 20] [--repeat 40]
//
// manifest.json: {"models": {"NAME": "file.onnx", ...}, "refs": {"1x16": "ref.1x16.f32", ...}}
// (paths relative to the manifest). A reference holds [batch, 384] float32,
// native onnxruntime CPU on the fp32 graph with the same token ids.
// Variants: "plain" is session.run with the output left on the GPU and read
// back (the webgpu-fp32 bench row); "sentences" runs the manifest's sentences
// (token ids of calibration.SENTENCES, one run each, batch 1) once, plain, and
// reports mean and worst cosine against refs.sentences; "capture" is a session per shape, graph
// captured, what the pool runs (JSEP only: runtime.mjs refuses capture on the
// WebGPU EP build, whose replays are wrong). On JSEP the session config is
// runtime.mjs's (MatMulAddFusion off).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { F16_FLAG, setupNodeEnv } from '../../src/webaccel/web/node-env.mjs';

const { values: o } = parseArgs({ options: {
  manifest: { type: 'string' }, build: { type: 'string', default: 'all' },
  models: { type: 'string', default: '' },
  variants: { type: 'string', default: 'sentences,plain,capture' },
  shapes: { type: 'string', default: '1x16,32x128' },
  warmup: { type: 'string', default: '20' }, repeat: { type: 'string', default: '40' },
} });
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
const dir = path.dirname(path.resolve(o.manifest));
const manifest = JSON.parse(await readFile(o.manifest, 'utf8'));
const env = await setupNodeEnv({ build: o.build, threads: 1, dawnFlags: [F16_FLAG] });
const { ort, capabilities } = env;
emit({ kind: 'capabilities', build: o.build, capabilities });
const JSEP_SESSION_CONFIG = { optimization: { disable_specified_optimizers: 'MatMulAddFusion' } };  // runtime.mjs

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

// Worst row cosine and max abs difference of out [batch, dim] against ref.
function compare(out, ref, batch) {
  const dim = ref.length / batch;
  let worst = 1, maxAbs = 0, nonFinite = 0;
  for (let b = 0; b < batch; b++) {
    let dot = 0, na = 0, nb = 0;
    for (let i = b * dim; i < (b + 1) * dim; i++) {
      const x = out[i], y = ref[i];
      if (!Number.isFinite(x)) { nonFinite++; continue; }
      dot += x * y; na += x * x; nb += y * y;
      maxAbs = Math.max(maxAbs, Math.abs(x - y));
    }
    worst = Math.min(worst, na && nb ? dot / Math.sqrt(na * nb) : 0);
  }
  return { worst_cosine: worst, max_abs: maxAbs, non_finite: nonFinite };
}

async function gpuTensor(device, data, dims) {
  const bytes = data.byteLength;
  const buf = device.createBuffer({ size: Math.ceil(bytes / 16) * 16, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(buf, 0, data.buffer, data.byteOffset, bytes);
  return ort.Tensor.fromGpuBuffer(buf, { dataType: 'int64', dims });
}

const wantedModels = o.models ? o.models.split(',') : Object.keys(manifest.models);
for (const name of wantedModels) {
  const file = path.resolve(dir, manifest.models[name]);
  const bytes = new Uint8Array(await readFile(file));
  for (const variant of o.variants.split(',')) {
    if (variant === 'sentences') {
      if (!manifest.sentences || !manifest.refs?.sentences) continue;
      const rec = { kind: 'int4probe', build: o.build, model: name, variant, n: manifest.sentences.length, bytes: bytes.byteLength };
      let session;
      try {
        session = await ort.InferenceSession.create(bytes, {
          executionProviders: ['webgpu'], graphOptimizationLevel: 'all',
          ...(o.build === 'all' ? { extra: JSEP_SESSION_CONFIG } : {}),
        });
        const raw = await readFile(path.resolve(dir, manifest.refs.sentences));
        const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
        const cos = [];
        let maxAbs = 0;
        for (const [i, idList] of manifest.sentences.entries()) {
          const ids = BigInt64Array.from(idList.map(BigInt));
          const dims = [1, ids.length];
          const out = await session.run({ input_ids: new ort.Tensor('int64', ids, dims),
            attention_mask: new ort.Tensor('int64', new BigInt64Array(ids.length).fill(1n), dims),
            token_type_ids: new ort.Tensor('int64', new BigInt64Array(ids.length), dims) });
          const c = compare(out[session.outputNames[0]].data, ref.subarray(i * 384, (i + 1) * 384), 1);
          cos.push(c.worst_cosine); maxAbs = Math.max(maxAbs, c.max_abs);
        }
        rec.cosines = cos;
        rec.mean_cosine = cos.reduce((a, b) => a + b, 0) / cos.length;
        rec.worst_cosine = Math.min(...cos);
        rec.max_abs = maxAbs;
      } catch (err) {
        rec.error = String(err.message || err).slice(0, 600);
      }
      try { await session?.release(); } catch {}
      emit(rec);
      continue;
    }
    const capture = variant === 'capture';
    for (const shape of o.shapes.split(',')) {
      const [batch, seq] = shape.split('x').map(Number);
      const rec = { kind: 'int4probe', build: o.build, model: name, variant, batch, seq, bytes: bytes.byteLength };
      if (capture && o.build !== 'all') { rec.skipped = 'capture is refused on the WebGPU EP build (runtime.mjs)'; emit(rec); continue; }
      let session;
      try {
        const t0 = performance.now();
        session = await ort.InferenceSession.create(bytes, {
          executionProviders: ['webgpu'], graphOptimizationLevel: 'all',
          ...(o.build === 'all' ? { extra: JSEP_SESSION_CONFIG } : {}),
          preferredOutputLocation: 'gpu-buffer',
          ...(capture ? { enableGraphCapture: true, freeDimensionOverrides: { batch, sequence: seq } } : {}),
        });
        rec.create_ms = performance.now() - t0;
        const ids = tokenIds(batch, seq);
        const mask = new BigInt64Array(batch * seq).fill(1n);
        const types = new BigInt64Array(batch * seq);
        const dims = [batch, seq];
        const device = await ort.env.webgpu.device;
        const outName = session.outputNames[0];
        let once;
        if (capture) {
          const feeds = { input_ids: await gpuTensor(device, ids, dims), attention_mask: await gpuTensor(device, mask, dims), token_type_ids: await gpuTensor(device, types, dims) };
          const size = batch * 384 * 4;
          const buf = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
          const fetches = { [outName]: ort.Tensor.fromGpuBuffer(buf, { dataType: 'float32', dims: [batch, 384] }) };
          once = async () => {
            await session.run(feeds, fetches);
            const staging = device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
            const enc = device.createCommandEncoder();
            enc.copyBufferToBuffer(buf, 0, staging, 0, size);
            device.queue.submit([enc.finish()]);
            await staging.mapAsync(GPUMapMode.READ);
            const out = new Float32Array(staging.getMappedRange().slice(0));
            staging.destroy();
            return out;
          };
        } else {
          const feeds = { input_ids: new ort.Tensor('int64', ids, dims), attention_mask: new ort.Tensor('int64', mask, dims), token_type_ids: new ort.Tensor('int64', types, dims) };
          once = async () => {
            const out = await session.run(feeds);
            const t = out[outName];
            const data = t.location === 'cpu' ? t.data : await t.getData(true);
            return data;
          };
        }
        let last = await once();
        const refFile = manifest.refs?.[shape];
        if (refFile) {
          const raw = await readFile(path.resolve(dir, refFile));
          const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
          Object.assign(rec, compare(last, ref, batch));
        }
        const warm = Number(o.warmup), rep = Number(o.repeat);
        for (let i = 0; i < warm; i++) last = await once();
        const times = [];
        for (let i = 0; i < rep; i++) {
          const t1 = performance.now();
          last = await once();
          times.push(performance.now() - t1);
        }
        if (refFile && rep > 0) {  // replays (capture) must stay right too
          const raw = await readFile(path.resolve(dir, refFile));
          const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
          rec.last_worst_cosine = compare(last, ref, batch).worst_cosine;
        }
        if (rep > 0) { rec.median_ms = median(times); rec.min_ms = Math.min(...times); rec.max_ms = Math.max(...times); rec.n = rep; }
      } catch (err) {
        rec.error = String(err.message || err).slice(0, 600);
      }
      try { await session?.release(); } catch {}
      emit(rec);
    }
  }
}
process.exit(0);
