// Node set-up shared by the headless WebGPU worker (node-worker.mjs) and the
// GPU probe (scripts/gpu/probe.mjs): Dawn's navigator.gpu, onnxruntime-web
// loaded from our vendored files, and the same capabilities a page reports.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { detectCapabilities } from './capabilities.mjs';

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const DEFAULT_ORT_DIR = path.join(HERE, 'vendor', 'ort');

export const ORT_BUILDS = {
  // docs/FACTS.md: `webgpu` is the native C++ WebGPU EP (asyncify wasm); `all` runs
  // WebGPU through JSEP; `wasm` is CPU only.
  webgpu: { module: 'ort.webgpu.min.mjs', wasm: 'ort-wasm-simd-threaded.asyncify.wasm' },
  all: { module: 'ort.all.min.mjs', wasm: 'ort-wasm-simd-threaded.jsep.wasm' },
  wasm: { module: 'ort.wasm.min.mjs', wasm: 'ort-wasm-simd-threaded.wasm' },
};

// Dawn withholds shader-f16 on NVIDIA/Vulkan unless this toggle is on (docs/FACTS.md).
export const F16_FLAG = 'enable-dawn-features=vulkan_enable_f16_on_nvidia';

async function loadDawn(dawnPath) {
  if (dawnPath) return createRequire(import.meta.url)(path.resolve(dawnPath));
  try {
    return await import('webgpu'); // node_modules/webgpu, set up by `make setup`
  } catch (err) {
    throw new Error(`cannot load Dawn (npm package webgpu): ${err.message}; run \`make setup\` or pass --dawn PATH/dawn.node`);
  }
}

// JSEP hands queue.writeBuffer views of the wasm SharedArrayBuffer, which
// dawn.node rejects (docs/FACTS.md): copy such data into an ordinary buffer.
function shimWriteBufferForJsep() {
  const proto = globalThis.GPUQueue && GPUQueue.prototype;
  if (!proto || proto.__webaccelShim) return;
  const writeBuffer = proto.writeBuffer;
  proto.writeBuffer = function (buffer, offset, data, dataOffset, size) {
    const raw = ArrayBuffer.isView(data) ? data.buffer : data;
    if (typeof SharedArrayBuffer === 'undefined' || !(raw instanceof SharedArrayBuffer)) {
      return writeBuffer.call(this, buffer, offset, data, dataOffset, size);
    }
    // WebGPU spec (GPUQueue.writeBuffer): dataOffset/size count elements of a typed array, bytes otherwise.
    const unit = ArrayBuffer.isView(data) ? (data.BYTES_PER_ELEMENT || 1) : 1;
    const base = ArrayBuffer.isView(data) ? data.byteOffset : 0;
    const total = ArrayBuffer.isView(data) ? data.byteLength : raw.byteLength;
    const start = (dataOffset ?? 0) * unit;
    const len = size === undefined ? total - start : size * unit;
    const copy = new Uint8Array(len);
    copy.set(new Uint8Array(raw, base + start, len));
    return writeBuffer.call(this, buffer, offset, copy);
  };
  proto.__webaccelShim = true;
}

// onnxruntime-web starts its WASM threads from a script it first fetch()es into
// a blob: URL unless the script is same-origin with `location`, which Node has
// not: fetch cannot read file: URLs and Node cannot import blob: URLs. Serve
// file: URLs from disk and let such a "blob" stand for its own file URL.
function shimFileFetchForThreads() {
  if (globalThis.fetch.__webaccelFile) return;
  const realFetch = globalThis.fetch;
  const realCreate = URL.createObjectURL;
  const fileFetch = async (input, init) => {
    const url = typeof input === 'string' ? input : (input?.href ?? input?.url ?? String(input));
    if (!url.startsWith('file:')) return realFetch(input, init);
    const bytes = await readFile(new URL(url));
    return {
      ok: true, status: 200, url, headers: new Headers(),
      arrayBuffer: async () => bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
      blob: async () => Object.assign(new Blob([bytes]), { webaccelFileUrl: url }),
    };
  };
  fileFetch.__webaccelFile = true;
  globalThis.fetch = fileFetch;
  URL.createObjectURL = (obj) => obj?.webaccelFileUrl ?? realCreate(obj);
}

// Returns {ort, nav, gpu, capabilities}. Never throws for a missing GPU: the
// capabilities say why WebGPU is unavailable, as a page's would.
export async function setupNodeEnv({ build = 'webgpu', threads = 1, dawnFlags = [], dawn, ortDir = DEFAULT_ORT_DIR,
  log = () => {} } = {}) {
  const spec = ORT_BUILDS[build];
  if (!spec) throw new Error(`unknown onnxruntime-web build ${build}; choose one of ${Object.keys(ORT_BUILDS)}`);
  let gpu = null;
  let gpuReason = `build ${build} has no WebGPU`;
  if (build !== 'wasm') {
    try {
      const { create, globals } = await loadDawn(dawn);
      // GPUBufferUsage, GPUMapMode, ...: onnxruntime-web reads them as globals.
      Object.assign(globalThis, globals);
      gpu = create(dawnFlags);
      if (build === 'all') shimWriteBufferForJsep();
    } catch (err) {
      gpuReason = String(err.message || err);
      log(`WebGPU unavailable: ${gpuReason}`);
    }
  }
  // Node 21+ has a `navigator` (userAgent, hardwareConcurrency) without gpu: add it.
  const nav = globalThis.navigator ?? {};
  if (gpu) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true, enumerable: true });
  if (!globalThis.navigator) globalThis.navigator = nav;

  const dir = path.resolve(ortDir);
  if (threads > 1) shimFileFetchForThreads();
  const ort = await import(pathToFileURL(path.join(dir, spec.module)).href);
  // Hand the wasm over as bytes: emscripten would otherwise fetch() a file:// URL.
  ort.env.wasm.wasmBinary = await readFile(path.join(dir, spec.wasm));
  ort.env.wasm.wasmPaths = pathToFileURL(dir + path.sep).href;
  ort.env.wasm.numThreads = Math.max(1, threads);
  ort.env.logLevel = 'error';

  const capabilities = await detectCapabilities(nav);
  if (!gpu) capabilities.webgpu = { available: false, reason: gpuReason };
  capabilities.ort = { version: ort.env.versions?.web || null, build, threads: ort.env.wasm.numThreads };
  capabilities.runtime = {
    kind: 'node-webgpu', node: process.versions.node, platform: `${process.platform}-${process.arch}`,
    dawn_flags: [...dawnFlags], pid: process.pid,
  };
  return { ort, nav, gpu, capabilities };
}
