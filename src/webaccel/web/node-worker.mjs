#!/usr/bin/env node
// The headless WebGPU worker: a Node process that runs the page's own runtime
// (runtime.mjs, protocol.mjs, capabilities.mjs, unchanged) on Dawn's
// navigator.gpu (npm `webgpu`, dawn.node) instead of in a browser, and joins
// the bridge exactly as worker.html does: /ws?token=..&worker=.., hello with
// capabilities, heartbeats, reconnect with exponential backoff and jitter.
//
//   node node-worker.mjs --server http://127.0.0.1:8700 --worker ID [--build all|webgpu|wasm]
//        [--threads N] [--dawn-flag F]... [--f16] [--dawn PATH] [--ort-dir DIR]
//
// The token comes from $WEBACCEL_TOKEN (argv is visible to every user in ps).
// Exit codes: 0 on SIGTERM/SIGINT, 2 bad arguments, 3 the server refused the
// token, 4 set-up failed (no dawn.node, onnxruntime-web failed to load).
import { parseArgs } from 'node:util';

import { DEFAULT_ORT_DIR, F16_FLAG, ORT_BUILDS, setupNodeEnv } from './node-env.mjs';
import { WorkerRuntime } from './runtime.mjs';
import { control } from './protocol.mjs';

const log = (...args) => process.stderr.write(`[node-worker] ${args.join(' ')}\n`);

function fail(code, message) {
  log(message);
  process.exit(code);
}

let opts;
try {
  ({ values: opts } = parseArgs({
    options: {
      server: { type: 'string', default: 'http://127.0.0.1:8700' },
      worker: { type: 'string' },
      build: { type: 'string', default: 'all' },
      threads: { type: 'string', default: '1' },
      'dawn-flag': { type: 'string', multiple: true, default: [] },
      f16: { type: 'boolean', default: false },
      dawn: { type: 'string' },
      'ort-dir': { type: 'string', default: DEFAULT_ORT_DIR },
      'heartbeat-ms': { type: 'string', default: '5000' },
    },
  }));
} catch (err) {
  fail(2, `bad arguments: ${err.message}`);
}
if (!ORT_BUILDS[opts.build]) fail(2, `--build must be one of ${Object.keys(ORT_BUILDS)}`);
const token = process.env.WEBACCEL_TOKEN || '';
const workerId = opts.worker || `node-${Math.random().toString(36).slice(2, 10)}`;
const threads = Math.max(1, Number(opts.threads) || 1);
const serverBase = new URL(opts.server);
const dawnFlags = [...opts['dawn-flag']];
if (opts.f16 && !dawnFlags.includes(F16_FLAG)) dawnFlags.push(F16_FLAG);

let ort, capabilities;
try {
  ({ ort, capabilities } = await setupNodeEnv({ build: opts.build, threads, dawnFlags, dawn: opts.dawn,
    ortDir: opts['ort-dir'], log }));
} catch (err) {
  fail(4, `set-up failed: ${err.message}; run \`make setup\``);
}
const gpuInfo = capabilities.webgpu;
log(`ready: ${opts.build}, webgpu ${gpuInfo.available ? `${gpuInfo.vendor} ${gpuInfo.architecture} ${gpuInfo.device}` : `unavailable (${gpuInfo.reason})`}`);

// --- the bridge ----------------------------------------------------------------
async function fetchModel(url) {
  const target = new URL(url, serverBase);
  const resp = await fetch(target, { headers: { authorization: `Bearer ${token}` } });
  if (!resp.ok) {
    const err = new Error(`HTTP ${resp.status} for ${target.pathname}`);
    err.code = resp.status === 404 ? 'MODEL_NOT_FOUND' : 'LOAD_FAILED';
    throw err;
  }
  return { bytes: new Uint8Array(await resp.arrayBuffer()), source: 'network' };
}

async function tokenRejected() {
  try {
    const resp = await fetch(new URL('/models/-', serverBase), { headers: { authorization: `Bearer ${token}` } });
    return resp.status === 401;
  } catch {
    return false; // server unreachable: keep retrying
  }
}

let ws = null;
let attempt = 0;
let heartbeatSeq = 0;
let stopping = false;
const runtime = new WorkerRuntime({
  ort,
  ortBuild: opts.build,
  fetchModel,
  send: (msg) => {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(msg);
  },
  log: (...a) => log(...a),
});

function connect() {
  const scheme = serverBase.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${serverBase.host}/ws?token=${encodeURIComponent(token)}&worker=${encodeURIComponent(workerId)}`;
  ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    attempt = 0;
    ws.send(control(`hello-${workerId}`, 'hello', { worker_id: workerId, capabilities, loaded: runtime.loadedKeys() }));
  };
  ws.onmessage = (ev) => runtime.handle(ev.data);
  let opened = false;
  let handled = false;
  ws.addEventListener('open', () => { opened = true; });
  const lost = async (code, reason) => {
    if (handled || stopping) return;
    handled = true;
    if (code === 1008 || code === 4401) {
      fail(3, `refused by server: ${reason || 'bad token'}`); // retrying will not fix a token
    }
    // A handshake the server refuses (HTTP 403) reaches us as a bare network
    // error: ask an authenticated route whether it is the token (401).
    if (!opened && (await tokenRejected())) fail(3, 'refused by server: missing or wrong token');
    // Exponential backoff with full jitter, capped at 10 s (as page.mjs).
    const delay = Math.random() * Math.min(10000, 250 * 2 ** attempt);
    attempt += 1;
    log(`disconnected (${code}${reason ? ` ${reason}` : ''}); retrying in ${Math.round(delay)} ms`);
    setTimeout(connect, delay);
  };
  // Node 22's WebSocket (undici) fires only 'error', never 'close', when the
  // handshake fails: treat an error before 'open' as the end of this socket.
  ws.onerror = () => {
    if (!opened) lost(1006, 'connection failed');
  };
  ws.onclose = (ev) => lost(ev.code, ev.reason);
}

setInterval(() => {
  if (ws && ws.readyState === WebSocket.OPEN) {
    heartbeatSeq += 1;
    ws.send(control(`nhb${heartbeatSeq}`, 'heartbeat', { busy: runtime.busy, loaded: runtime.loadedKeys() }));
  }
}, Math.max(100, Number(opts['heartbeat-ms']) || 5000));

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    stopping = true;
    try {
      ws?.close(1001, 'worker stopping');
    } catch {}
    process.exit(0);
  });
}

connect();
