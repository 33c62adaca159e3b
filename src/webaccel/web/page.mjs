// Browser bootstrap for the worker page: load onnxruntime-web from our own
// server, report capabilities, and keep a WebSocket to the bridge open
// (reconnecting with exponential backoff and jitter, sending heartbeats).
import { detectCapabilities } from './capabilities.mjs';
import { WorkerRuntime } from './runtime.mjs';
import { control } from './protocol.mjs';

const params = new URLSearchParams(location.search);
// Pages that join with a token (webaccel.browsers.remote) carry it in the URL;
// pages we launch carry only a single-use launch credential instead.
const token = params.get('token') || '';
const launch = params.get('launch') || '';
const workerId = params.get('worker') || `page-${Math.random().toString(36).slice(2)}`;
const requestedBuild = params.get('ort') || 'auto';
const threads = Number(params.get('threads') || 1);
const statusEl = document.getElementById('status');
const setStatus = (text) => {
  if (statusEl) statusEl.textContent = text;
  document.title = `webaccel worker: ${text}`;
};

// First thing (the credential expires ~60 s after launch): trade the launch
// credential for the session secret.  The secret lives only in this module's
// memory: never in a URL, storage or the console (webaccel.bridge.credentials).
let sessionSecret = '';
if (launch) {
  params.delete('launch');
  history.replaceState(null, '', `${location.pathname}?${params}`); // spent: keep it out of history
  const resp = await fetch(new URL('../bridge/session', location.href), {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ worker: workerId, launch }),
    cache: 'no-store',
  });
  if (!resp.ok) {
    let why = `HTTP ${resp.status}`;
    try { why = (await resp.json()).error.message; } catch (e) { /* keep the status */ }
    setStatus(`refused by server: ${why}`);
    throw new Error(`webaccel: launch credential refused: ${why}`);
  }
  sessionSecret = (await resp.json()).secret;
}
const bearer = sessionSecret || token;

const capabilities = await detectCapabilities(navigator);
// 'auto': the WebGPU/WebNN build (JSEP, a 28 MB wasm) only where there is a real GPU
// or WebNN to use it; otherwise the wasm-only build, which starts ~1.5 s sooner
// here (docs/FACTS.md). A software adapter is then not offered at all: a launcher
// asks for ort=all when the caller allows software WebGPU.
const realGpu = Boolean(capabilities.webgpu?.available && !capabilities.webgpu.software);
const build = requestedBuild === 'auto'
  ? (realGpu || capabilities.webnn?.available ? 'all' : 'wasm') : requestedBuild;
if (build === 'wasm' && capabilities.webgpu?.available) {
  capabilities.webgpu = {
    ...capabilities.webgpu,
    available: false,
    reason: `the only WebGPU adapter is a software rasterizer (${capabilities.webgpu.architecture || 'software'}), `
      + 'so this page loaded the wasm-only onnxruntime build; pass allow_software=True when '
      + 'creating the engine to run WebGPU on it anyway',
  };
}
const ORT_BUILDS = { all: 'ort.all.min.mjs', webgpu: 'ort.webgpu.min.mjs', wasm: 'ort.wasm.min.mjs' };
const vendor = new URL('./vendor/ort/', import.meta.url).href;
const ort = await import(vendor + (ORT_BUILDS[build] || ORT_BUILDS.all));
ort.env.wasm.wasmPaths = vendor; // never fetch wasm from a CDN
// docs/FACTS.md: on small machines one thread per worker beats several; the pool scales workers instead.
ort.env.wasm.numThreads = threads;
ort.env.logLevel = 'error';
capabilities.ort = { version: ort.env.versions?.web || null, build, requested: requestedBuild, threads };

async function fetchOverHttp(url) {
  const resp = await fetch(url, { headers: { authorization: `Bearer ${bearer}` } });
  if (!resp.ok) {
    const err = new Error(`HTTP ${resp.status} for ${url}`);
    err.code = resp.status === 404 ? 'MODEL_NOT_FOUND' : 'LOAD_FAILED';
    throw err;
  }
  return { bytes: new Uint8Array(await resp.arrayBuffer()), source: 'network' };
}

// Model bytes by CID (verified block by block, cached in OPFS/Cache API) when
// the loader bundle was built at set-up; plain HTTP otherwise.
let fetchModel = fetchOverHttp;
try {
  const { cidFetchModel } = await import('./vendor/cidfetch.bundle.mjs');
  fetchModel = cidFetchModel(fetchOverHttp);
  capabilities.cidfetch = true;
} catch (err) {
  capabilities.cidfetch = false;
  console.warn('webaccel: no CID loader bundle; models load over plain HTTP', err);
}

let ws = null;
let attempt = 0;
let heartbeatSeq = 0;
const runtime = new WorkerRuntime({
  ort,
  ortBuild: build,
  fetchModel,
  send: (msg) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(msg);
  },
});

function connect() {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const query = sessionSecret ? '' : `token=${encodeURIComponent(token)}&`;
  const url = `${scheme}://${location.host}/ws?${query}worker=${encodeURIComponent(workerId)}`;
  setStatus(`connecting (attempt ${attempt + 1})`);
  // Browsers cannot set headers on a WebSocket; the session secret rides in
  // Sec-WebSocket-Protocol (the server selects 'webaccel.v1').
  const sock = sessionSecret
    ? new WebSocket(url, ['webaccel.v1', `webaccel.secret.${sessionSecret}`])
    : new WebSocket(url);
  ws = sock;
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    attempt = 0;
    setStatus('connected');
    ws.send(control(`hello-${workerId}`, 'hello', { worker_id: workerId, capabilities, loaded: runtime.loadedKeys() }));
  };
  ws.onmessage = (ev) => runtime.handle(ev.data);
  ws.onclose = (ev) => {
    if (sock !== ws) return; // an older socket of this page, already replaced
    if (ev.code === 1008 || ev.code === 4401) {
      setStatus(`refused by server: ${ev.reason || 'bad token'}`);
      return; // a wrong token will not become right by retrying
    }
    // Exponential backoff with full jitter, capped at 10 s.
    const delay = Math.random() * Math.min(10000, 250 * 2 ** attempt);
    attempt += 1;
    setStatus(`disconnected; retrying in ${Math.round(delay)} ms`);
    setTimeout(connect, delay);
  };
}

setInterval(() => {
  if (ws && ws.readyState === WebSocket.OPEN) {
    heartbeatSeq += 1;
    ws.send(control(`phb${heartbeatSeq}`, 'heartbeat', { busy: runtime.busy, loaded: runtime.loadedKeys() }));
  }
}, 5000);

window.webaccel = { runtime, capabilities, workerId };
connect();
