// The worker runtime: a thin tensor executor over onnxruntime-web.
//
// Environment-agnostic on purpose: the browser page (page.mjs) and the Node
// WebGPU worker give it an `ort` module, a `send` function and a way to fetch
// model bytes; everything else (frames, sessions, error codes, timing) lives
// here, so both kinds of worker behave the same.
import { decodeBinary, encodeBinary, control, ProtocolError } from './protocol.mjs';
import { runGenerate, cancelGeneration, createDecodeStep } from './generate.mjs';
import { captureBuffers, checkCaptureShapes, runCaptured, releaseCapture } from './capture.mjs';

// Map onnxruntime-web / fetch failures to the bridge's stable error codes.
export function errorCode(err, fallback = 'INTERNAL') {
  if (err && typeof err.code === 'string' && /^[A-Z_]+$/.test(err.code)) return err.code;
  const msg = String((err && err.message) || err);
  if (/out of memory|allocation failed|OOM|RangeError: Array buffer allocation/i.test(msg)) return 'OUT_OF_MEMORY';
  if (/no available backend|backend not found|not supported|WebNN is not|webgpu is not|adapter/i.test(msg)) return 'BACKEND_UNAVAILABLE';
  if (/invalid dimensions|invalid rank|missing in 'feeds'|input '.*' is missing|Unexpected input data type|unexpected input|invalid input|expected shape/i.test(msg)) return 'BAD_REQUEST';
  return fallback;
}

export class RuntimeError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const now = () => (globalThis.performance ? performance.now() : Date.now());

export class WorkerRuntime {
  // ort: the onnxruntime-web module; send(text|ArrayBuffer); fetchModel(url, opts) -> Promise<Uint8Array>
  constructor({ ort, send, fetchModel, ortBuild = 'all', log = () => {} }) {
    this.ort = ort;
    this.ortBuild = ortBuild; // which onnxruntime-web bundle: all (JSEP WebGPU) | webgpu (WebGPU EP) | wasm
    this.send = send;
    this.fetchModel = fetchModel;
    this.log = log;
    this.sessions = new Map(); // key -> {session, backend, inputs, outputs}
    this.cancelled = new Set();
    this.queue = Promise.resolve(); // one session.run at a time: wasm sessions are not re-entrant
    this.busy = 0;
  }

  loadedKeys() {
    return [...this.sessions.keys()];
  }

  async handle(message) {
    let id = '?';
    try {
      if (typeof message === 'string') {
        let msg;
        try {
          msg = JSON.parse(message);
        } catch (e) {
          throw new ProtocolError(`control frame is not JSON: ${e.message}`);
        }
        id = msg.id ?? '?';
        await this.onControl(msg);
      } else {
        const frame = decodeBinary(message);
        id = frame.header.id ?? '?';
        await this.onBinary(frame);
      }
    } catch (err) {
      const code = errorCode(err);
      this.log('error', id, code, err && err.message);
      this.send(control(id, 'error', { code, message: String((err && err.message) || err) }));
    }
  }

  async onControl(msg) {
    switch (msg.type) {
      case 'load_model':
        return this.load(msg);
      case 'unload': {
        const entry = this.sessions.get(msg.model_name);
        if (entry) {
          this.sessions.delete(msg.model_name);
          await entry.session.release();
          releaseCapture(entry.io);
          if (entry.step) {
            await releaseStep(entry.step);
            if (entry.captured) entry.captured.release();
          }
        }
        return this.send(control(msg.id, 'unloaded', { key: msg.model_name }));
      }
      case 'cancel':
        if (cancelGeneration(this, msg.id)) return undefined;
        this.cancelled.add(msg.id);
        return undefined;
      case 'heartbeat':
        return this.send(control(msg.id, 'heartbeat', { busy: this.busy, loaded: this.loadedKeys() }));
      default:
        throw new ProtocolError(`unsupported control type ${msg.type}`);
    }
  }

  async load(msg) {
    const { key, url, backend = 'wasm', session_options: extra = {} } = msg.data || {};
    if (!key || !url) throw new ProtocolError('load_model needs data.key and data.url');
    if (this.sessions.has(key)) {
      const s = this.sessions.get(key);
      return this.send(control(msg.id, 'loaded', { key, backend: s.backend, load_ms: 0, fetch_ms: 0,
        inputs: s.session.inputNames, outputs: s.session.outputNames, source: 'memory' }));
    }
    const t0 = now();
    let bytes, source;
    try {
      ({ bytes, source } = await this.fetchModel(url, msg.data));
    } catch (err) {
      throw new RuntimeError(err.code || 'LOAD_FAILED', `could not fetch model bytes from ${url}: ${err.message}`);
    }
    const t1 = now();
    if (backend === 'webgpu' && this.ortBuild === 'all'
        && (hasAscii(bytes, 'GatherBlockQuantized') || hasAscii(bytes, 'MatMulNBits'))) {
      // JSEP computes GatherBlockQuantized wrongly (cosine 0.03-0.25 against the
      // CPU on MiniLM's int4 embedding tables, any block size) and its MatMulNBits
      // fails on common shapes (packed zero points of 6 bytes a column); still so
      // in onnxruntime-web 1.31.1 (results/gpu/2026-12-07-run11): refuse
      // 4-bit weights here rather than fail mid-run or return wrong numbers.
      throw new RuntimeError('BACKEND_UNAVAILABLE', `${key} has 4-bit weights (MatMulNBits / `
        + 'GatherBlockQuantized), which this WebGPU build (JSEP) does not run correctly; use the '
        + 'wasm backend, the int8/fp16 variants on webgpu, or a Node worker with the WebGPU EP build');
    }
    const ep = backend === 'webnn' ? { name: 'webnn', deviceType: extra.deviceType || 'gpu' } : backend;
    // A generator's decode step as a second, captured session (generate.mjs), made
    // first: JSEP only, like all capture here.  If it cannot be made the model still
    // loads and decodes step by step; `decode_step` in the reply says which and why.
    let step = null;
    let decodeStep;
    if (extra.decode_step && backend === 'webgpu') {
      if (this.ortBuild !== 'all') {
        decodeStep = `not captured: graph capture needs the JSEP build, this worker loaded "${this.ortBuild}"`;
      } else {
        try {
          step = await createDecodeStep(this.ort, bytes, extra.decode_step, JSEP_SESSION_CONFIG);
          decodeStep = 'captured';
        } catch (err) {
          decodeStep = `not captured: ${(err && err.message) || err}`;
          this.log('warn', msg.id, 'decode step', decodeStep);
        }
      }
    }
    let ortOptions = extra.ort || {};
    if (step) {
      // Beside a captured session, this one must take no GPU-buffer inputs: onnxruntime-web
      // (1.30, 1.31.1) registers a run's GPU inputs before it switches to the run's session, so a
      // run right after a replay fails ("Registering a different external buffer under
      // graph capture mode").  Its KV (prefill, and requests too long for the step) stays
      // on the CPU; the step keeps its own cache on the GPU.
      const { preferredOutputLocation, ...rest } = ortOptions;
      ortOptions = rest;
    }
    const create = (options) => this.ort.InferenceSession.create(bytes, {
      executionProviders: [ep],
      graphOptimizationLevel: 'all',
      ...(backend === 'webgpu' && this.ortBuild === 'all' ? { extra: JSEP_SESSION_CONFIG } : {}),
      ...options,
    });
    let session;
    try {
      try {
        session = await create(ortOptions);
      } catch (err) {
        if (!step) throw err;
        // The step holds a second copy of the weights: when the plain session does
        // not fit beside it, the model loads without the step rather than not at all.
        await releaseStep(step);
        step = null;
        decodeStep = `not captured: the plain session did not fit beside the step (${err.message})`;
        this.log('warn', msg.id, 'decode step', decodeStep);
        session = await create(extra.ort || {});
      }
    } catch (err) {
      const hint = extra.ort && extra.ort.enableGraphCapture
        ? ' (graph capture needs every free dimension fixed with freeDimensionOverrides and every node on the GPU)' : '';
      throw new RuntimeError(errorCode(err, 'LOAD_FAILED'), `${backend} session for ${key} failed: ${err.message}${hint}`);
    }
    // Graph capture (onnxruntime-web records the GPU commands of one run and
    // replays them): every input and output lives in a GPU buffer of its own,
    // written and read in place, so shapes must be fixed (freeDimensionOverrides).
    let io = null;
    if (backend === 'webgpu' && extra.ort && extra.ort.enableGraphCapture) {
      if (this.ortBuild !== 'all') {
        // The WebGPU EP build replays wrong results (max abs 0.2 on MiniLM here;
        // onnxruntime issue 29594) or fails in dawn.node; JSEP replays exactly.
        await session.release();
        if (step) await releaseStep(step);
        throw new RuntimeError('BACKEND_UNAVAILABLE', `graph capture is only trusted with the JSEP build `
          + `(ort=all in pages, build "all" for Node workers); this worker loaded "${this.ortBuild}", whose `
          + 'replays return wrong outputs. Load without enableGraphCapture, or on a JSEP worker');
      }
      try {
        io = await captureBuffers(this.ort, session);
      } catch (err) {
        await session.release();
        if (step) await releaseStep(step);
        throw err;
      }
    }
    const t2 = now();
    this.sessions.set(key, { session, backend, io, step });
    this.send(control(msg.id, 'loaded', {
      key, backend, fetch_ms: t1 - t0, create_ms: t2 - t1, load_ms: t2 - t0, bytes: bytes.byteLength,
      source, inputs: session.inputNames, outputs: session.outputNames,
      ...(decodeStep ? { decode_step: decodeStep } : {}),
    }));
  }

  async onBinary(frame) {
    const tRecv = now();
    const { header, tensors } = frame;
    if (header.type === 'generate') return runGenerate(this, frame);
    if (header.type !== 'run') throw new ProtocolError(`binary frames from the server must be runs, got ${header.type}`);
    const entry = this.sessions.get(header.model_name);
    if (!entry) throw new RuntimeError('MODEL_NOT_FOUND', `model ${header.model_name} is not loaded in this page; send load_model first`);
    const { session } = entry;
    // Inputs kept from an earlier run of this session (options.reuse) are not
    // sent again: a decoder loop's fixed inputs (Whisper's cross-attention
    // keys and values, ~18 MB) would otherwise cross the bridge every step.
    const opts = header.options || {};
    for (const name of opts.reuse || []) {
      const kept = entry.kept && entry.kept.get(name);
      if (!kept) throw new RuntimeError('BAD_REQUEST', `input ${name} was not kept in this page; send it again`);
      tensors[name] = kept;
    }
    if (opts.keep && opts.keep.length) {
      entry.kept = entry.kept || new Map();
      for (const name of opts.keep) if (tensors[name]) entry.kept.set(name, tensors[name]);
    }
    const missing = session.inputNames.filter((n) => !(n in tensors));
    const unknown = Object.keys(tensors).filter((n) => !session.inputNames.includes(n));
    if (missing.length || unknown.length) {
      throw new RuntimeError('BAD_REQUEST', `inputs do not match the model: missing [${missing}] unknown [${unknown}]; the model takes [${session.inputNames}]`);
    }
    const { io } = entry;
    const feeds = {};
    if (io) checkCaptureShapes(io, tensors);
    else for (const [name, t] of Object.entries(tensors)) feeds[name] = new this.ort.Tensor(t.dtype, t.data, t.shape);
    const wanted = header.data && header.data.output_names;
    const run = async () => {
      if (this.cancelled.delete(header.id)) throw new RuntimeError('CANCELLED', 'cancelled before it ran');
      this.busy += 1;
      try {
        const t0 = now();
        if (io) return { result: await runCaptured(session, io, tensors), pageMs: now() - t0 };
        const out = wanted ? await session.run(feeds, wanted) : await session.run(feeds);
        const result = {};
        for (const [name, tensor] of Object.entries(out)) {
          const data = tensor.location && tensor.location !== 'cpu' ? await tensor.getData(true) : tensor.data;
          // fp16 may come back as Float16Array where the engine has one: ship the raw bits.
          const raw = tensor.type === 'float16' && !(data instanceof Uint16Array)
            ? new Uint16Array(data.buffer, data.byteOffset, data.length) : data;
          result[name] = { dtype: tensor.type, shape: tensor.dims, data: raw };
        }
        // After the downloads: with GPU-resident outputs (preferredOutputLocation)
        // session.run returns before the data is on the CPU; page_ms counts both.
        const pageMs = now() - t0;
        return { pageMs, result };
      } finally {
        this.busy -= 1;
      }
    };
    const job = this.queue.then(run, run);
    this.queue = job.catch(() => {});
    const { pageMs, result } = await job;
    if (this.cancelled.delete(header.id)) return;
    const wire = encodeBinary({ id: header.id, type: 'result', model_name: header.model_name,
      data: { page_ms: pageMs, handle_ms: now() - tRecv, backend: entry.backend } }, result);
    this.send(wire);
  }
}

async function releaseStep(step) {
  await step.session.release();
  releaseCapture(step.io);
}

// Whether the ASCII string occurs in bytes (an op type in an ONNX file's
// NodeProtos: cheaper than parsing the protobuf for one question).
function hasAscii(bytes, text) {
  const first = text.charCodeAt(0);
  for (let i = bytes.indexOf(first); i !== -1 && i + text.length <= bytes.length; i = bytes.indexOf(first, i + 1)) {
    let j = 1;
    while (j < text.length && bytes[i + j] === text.charCodeAt(j)) j++;
    if (j === text.length) return true;
  }
  return false;
}

// JSEP (the build pages load) runs Gemm with a naive kernel, ~3x slower than
// its tiled MatMul: onnxruntime's MatMulAddFusion turned MiniLM's MatMul + bias
// Add into Gemm and cost 2.4 of 10.7 ms at 32x128 (H100, graph capture;
// 128x128 39.7 -> 30.0 ms without it).  The WebGPU EP build's Gemm is fine
// (there it is faster with the fusion), so this is for JSEP only.
const JSEP_SESSION_CONFIG = { optimization: { disable_specified_optimizers: 'MatMulAddFusion' } };
