// Runs one ONNX model once in onnxruntime-web's WASM backend under Node (the
// same build the page uses) so tests can check that our variants' ops exist
// there and agree with native onnxruntime.
// usage: node ort_web_run.mjs ORT_MJS model.onnx manifest.json out.json
//   manifest: {input name: {dtype: float32|int64, dims: [...], file: raw little-endian bytes}}
import fs from 'node:fs';
import path from 'node:path';
import {pathToFileURL} from 'node:url';
const [ortPath, model, manifest, out] = process.argv.slice(2);
const ort = await import(pathToFileURL(ortPath).href);
ort.env.wasm.numThreads = 1;
const sess = await ort.InferenceSession.create(fs.readFileSync(model), {executionProviders: ['wasm']});
const m = JSON.parse(fs.readFileSync(manifest));
const feeds = {};
const T = {float32: Float32Array, int64: BigInt64Array};
for (const [name, t] of Object.entries(m)) {
  const buf = fs.readFileSync(path.join(path.dirname(manifest), t.file));
  const arr = new T[t.dtype](buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  feeds[name] = new ort.Tensor(t.dtype, arr, t.dims);
}
const t0 = performance.now();
const res = await sess.run(feeds);
const ms = performance.now() - t0;
const o = {ms};
for (const [k, v] of Object.entries(res)) {
  const f = path.join(path.dirname(out), k.replace(/[^\w.]/g, '_') + '.out.bin');
  fs.writeFileSync(f, Buffer.from(v.data.buffer, v.data.byteOffset, v.data.byteLength));
  o[k] = {dims: v.dims, type: v.type, file: f};
}
fs.writeFileSync(out, JSON.stringify(o));
