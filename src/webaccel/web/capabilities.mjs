// What this JS environment can run: WebGPU adapter, WebNN, WASM SIMD/threads.
// Used by the page and by the Node WebGPU worker; every probe is bounded by a
// timeout because a broken backend can hang instead of failing (docs/FACTS.md:
// WebNN createContext can kill the renderer).

const withTimeout = (promise, ms, what) =>
  Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)),
  ]);

// The smallest module using a v128 instruction (the wasm-feature-detect SIMD probe).
const SIMD_PROBE = new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]);

const LIMIT_KEYS = ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxStorageBuffersPerShaderStage'];

export async function probeWebGPU(gpu) {
  if (!gpu) return { available: false, reason: 'navigator.gpu is missing (WebGPU disabled or unsupported)' };
  let adapter;
  try {
    adapter = await withTimeout(gpu.requestAdapter({ powerPreference: 'high-performance' }), 5000, 'requestAdapter');
  } catch (err) {
    return { available: false, reason: String(err.message || err) };
  }
  if (!adapter) return { available: false, reason: 'requestAdapter() returned null (no usable GPU adapter)' };
  const info = adapter.info || {};
  const features = [...adapter.features].sort();
  const limits = {};
  for (const k of LIMIT_KEYS) if (adapter.limits && k in adapter.limits) limits[k] = Number(adapter.limits[k]);
  const isFallback = Boolean(info.isFallbackAdapter ?? adapter.isFallbackAdapter ?? false);
  const desc = `${info.vendor || ''} ${info.architecture || ''} ${info.description || ''}`.toLowerCase();
  // SwiftShader/llvmpipe are CPU rasterizers: correct, but not a GPU (docs/FACTS.md: 85-1700x slower than WASM).
  const software = isFallback || /swiftshader|llvmpipe|lavapipe|software|cpu/.test(desc);
  return {
    available: true,
    vendor: info.vendor || '', architecture: info.architecture || '', device: info.device || '',
    description: info.description || '', isFallbackAdapter: isFallback, software,
    shaderF16: features.includes('shader-f16'), features, limits,
  };
}

export async function probeWebNN(ml) {
  if (!ml) return { available: false, present: false, reason: 'navigator.ml is missing (WebNN not enabled in this browser)' };
  try {
    await withTimeout(ml.createContext(), 3000, 'navigator.ml.createContext');
    return { available: true, present: true };
  } catch (err) {
    return { available: false, present: true, reason: String(err.message || err) };
  }
}

export function probeWasm() {
  const isolated = Boolean(globalThis.crossOriginIsolated);
  return {
    simd: WebAssembly.validate(SIMD_PROBE),
    threads: typeof SharedArrayBuffer !== 'undefined' && (isolated || typeof window === 'undefined'),
    crossOriginIsolated: isolated,
  };
}

export async function detectCapabilities(nav = globalThis.navigator || {}) {
  const [webgpu, webnn] = await Promise.all([probeWebGPU(nav.gpu), probeWebNN(nav.ml)]);
  return {
    userAgent: nav.userAgent || '',
    hardwareConcurrency: nav.hardwareConcurrency || 1,
    deviceMemory: nav.deviceMemory ?? null,
    wasm: probeWasm(),
    webgpu,
    webnn,
  };
}
