// The decode loop, run in the page so that no bridge round trip is paid per token.
//
// A `generate` binary frame carries the prompt's token ids (input_ids, int64
// [1, n]) and the options below; the page runs prefill, then one step per
// token with the KV cache kept here (on the GPU when the session was created
// with preferredOutputLocation 'gpu-buffer' for the present.* outputs, i.e. on
// webgpu), streams every token id back as a `stream` control frame as soon as
// it is picked, and ends with a `done` frame carrying the stats.  options also
// carry kv_heads and head_dim (the empty past's shape).  A `cancel`
// for the request id stops it before its next step.
//
// Sampling mirrors webaccel/generation/sampling.py exactly (same order, same
// seeded PRNG, same tie-breaking), so Python can check the page's choices:
// repetition penalty -> temperature (0 = greedy) -> top-k -> top-p -> draw.
//
// The model contract is webaccel/generation/export.py's: inputs input_ids,
// attention_mask, position_ids, past_key_values.{i}.key|value
// [1, kv_heads, past, head_dim]; outputs logits [1, 1, vocab], present.{i}.*.
// Environment-agnostic like runtime.mjs (also runs in Node).
import { control, ProtocolError } from './protocol.mjs';

const now = () => (globalThis.performance ? performance.now() : Date.now());

class GenerateError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

// mulberry32 (Tommy Ettinger): tiny, fast, and bit-exact to reproduce in Python.
export function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Pick the next token from the last position's logits (Float32Array).
// `seen` holds every id of the prompt and output (for the repetition penalty).
export function pick(logits, opts, seen, rng) {
  const n = logits.length;
  const x = new Float64Array(n);
  for (let i = 0; i < n; i += 1) x[i] = logits[i];
  const penalty = opts.repetition_penalty;
  if (penalty !== 1) {
    for (const id of seen) {
      if (id < n) x[id] = x[id] > 0 ? x[id] / penalty : x[id] * penalty;
    }
  }
  if (opts.temperature === 0) {
    let best = 0;
    for (let i = 1; i < n; i += 1) if (x[i] > x[best]) best = i;
    return best;
  }
  const temp = opts.temperature;
  for (let i = 0; i < n; i += 1) x[i] /= temp;
  let order = Array.from({ length: n }, (_, i) => i);
  order.sort((a, b) => (x[b] - x[a]) || (a - b));
  if (opts.top_k > 0) order = order.slice(0, opts.top_k);
  const top = x[order[0]];
  let w = order.map((i) => Math.exp(x[i] - top));
  if (opts.top_p < 1) {
    let total = 0;
    for (const wi of w) total += wi;
    let acc = 0;
    let keep = w.length;
    for (let i = 0; i < w.length; i += 1) {
      acc += w[i];
      if (acc / total >= opts.top_p) { keep = i + 1; break; }
    }
    order = order.slice(0, keep);
    w = w.slice(0, keep);
  }
  let total = 0;
  for (const wi of w) total += wi;
  const u = rng() * total;
  let acc = 0;
  for (let i = 0; i < w.length; i += 1) {
    acc += w[i];
    if (u < acc) return order[i];
  }
  return order[order.length - 1];
}

function checkOptions(o) {
  const num = (v) => typeof v === 'number' && Number.isFinite(v);
  const int = (v) => Number.isInteger(v);
  const opts = {
    max_tokens: o.max_tokens ?? 128,
    temperature: o.temperature ?? 0,
    top_k: o.top_k ?? 0,
    top_p: o.top_p ?? 1,
    seed: o.seed ?? 0,
    repetition_penalty: o.repetition_penalty ?? 1,
    stop_token_ids: o.stop_token_ids ?? [],
  };
  if (!int(opts.max_tokens) || opts.max_tokens < 1) throw new ProtocolError('max_tokens must be a positive integer');
  if (!num(opts.temperature) || opts.temperature < 0) throw new ProtocolError('temperature must be >= 0');
  if (!int(opts.top_k) || opts.top_k < 0) throw new ProtocolError('top_k must be a non-negative integer');
  if (!num(opts.top_p) || opts.top_p <= 0 || opts.top_p > 1) throw new ProtocolError('top_p must be in (0, 1]');
  if (!int(opts.seed)) throw new ProtocolError('seed must be an integer');
  if (!num(opts.repetition_penalty) || opts.repetition_penalty <= 0) throw new ProtocolError('repetition_penalty must be > 0');
  if (!Array.isArray(opts.stop_token_ids) || !opts.stop_token_ids.every(int)) throw new ProtocolError('stop_token_ids must be integers');
  return opts;
}

// Run fn on the runtime's queue: one session.run at a time per page (wasm
// sessions are not re-entrant), so concurrent generations alternate steps.
function enqueue(rt, fn) {
  const job = rt.queue.then(fn, fn);
  rt.queue = job.catch(() => {});
  return job;
}

// Yield to the event loop's task queue.  Every await in the step loop resolves
// through microtasks, which run before any task: without this, a page busy
// generating would not see a WebSocket message (a cancel, another request's
// load) until the whole generation ended.  A MessageChannel task has no
// setTimeout clamp (4 ms once nested); Node has setImmediate.
function yieldToTasks() {
  if (typeof globalThis.setImmediate === 'function') return new Promise((r) => globalThis.setImmediate(r));
  return new Promise((resolve) => {
    const ch = new MessageChannel();
    ch.port1.onmessage = () => { ch.port1.close(); resolve(); };
    ch.port2.postMessage(null);
  });
}

function generations(rt) {
  if (!rt.generations) rt.generations = new Map();
  return rt.generations;
}

// Called by runtime.mjs for a `cancel` control frame; true if it named a generation.
export function cancelGeneration(rt, id) {
  const g = generations(rt).get(id);
  if (!g) return false;
  g.cancelled = true;
  return true;
}

function dispose(tensors) {
  for (const t of tensors) {
    if (t && t.location && t.location !== 'cpu' && typeof t.dispose === 'function') t.dispose();
  }
}

export async function runGenerate(rt, frame) {
  const { header, tensors } = frame;
  const id = header.id;
  const entry = rt.sessions.get(header.model_name);
  if (!entry) throw new GenerateError('MODEL_NOT_FOUND', `model ${header.model_name} is not loaded in this page; send load_model first`);
  const { session } = entry;
  const prompt = tensors.input_ids;
  if (!prompt || prompt.dtype !== 'int64' || prompt.shape.length !== 2 || prompt.shape[0] !== 1 || prompt.shape[1] < 1) {
    throw new ProtocolError('generate needs input_ids: int64 [1, n] with n >= 1');
  }
  const opts = checkOptions(header.options || {});
  const pastNames = session.inputNames.filter((n) => n.startsWith('past_key_values.'));
  const presentNames = pastNames.map((n) => n.replace('past_key_values.', 'present.'));
  const kvHeads = header.options && header.options.kv_heads;
  const headDim = header.options && header.options.head_dim;
  if (!pastNames.length || !int32(kvHeads) || !int32(headDim)) {
    throw new ProtocolError('generate needs a model with past_key_values inputs and options.kv_heads / options.head_dim');
  }
  const ort = rt.ort;
  const stops = new Set(opts.stop_token_ids);
  const rng = mulberry32(opts.seed);
  const promptIds = Array.from(prompt.data, Number);
  const seen = new Set(promptIds);
  const state = { cancelled: false };
  generations(rt).set(id, state);
  if (rt.cancelled && rt.cancelled.delete(id)) state.cancelled = true; // cancel raced ahead

  const t0 = now();
  let feeds = {
    input_ids: new ort.Tensor('int64', BigInt64Array.from(promptIds, BigInt), [1, promptIds.length]),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(promptIds.length).fill(1n), [1, promptIds.length]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from(promptIds.map((_, i) => BigInt(i))), [1, promptIds.length]),
  };
  for (const name of pastNames) feeds[name] = new ort.Tensor('float32', new Float32Array(0), [1, kvHeads, 0, headDim]);
  let past = [];
  let total = promptIds.length;
  const out = [];
  let tFirst = null;
  let tLast = t0;
  let prefillMs = 0;
  let finish = 'length';
  let kvLocation = null;
  rt.busy += 1;
  try {
    while (out.length < opts.max_tokens) {
      if (out.length) await yieldToTasks();
      if (state.cancelled) { finish = 'cancelled'; break; }
      const f = feeds;
      const tStep = now();
      const result = await enqueue(rt, () => session.run(f));
      if (out.length === 0) prefillMs = now() - tStep;
      dispose(past); // the previous step's KV tensors (GPU buffers) are no longer needed
      past = presentNames.map((n) => result[n]);
      kvLocation = past[0] ? (past[0].location || 'cpu') : null;
      const logits = result.logits;
      const data = logits.location && logits.location !== 'cpu' ? await logits.getData(true) : logits.data;
      const token = pick(data.subarray(data.length - (logits.dims[logits.dims.length - 1])), opts, seen, rng);
      seen.add(token);
      out.push(token);
      tLast = now();
      if (tFirst === null) tFirst = tLast;
      if (state.cancelled) { finish = 'cancelled'; break; }
      rt.send(control(id, 'stream', { token, index: out.length - 1 }));
      if (stops.has(token)) { finish = 'stop'; break; }
      if (out.length >= opts.max_tokens) break;
      total += 1;
      feeds = {
        input_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(token)), [1, 1]),
        attention_mask: new ort.Tensor('int64', new BigInt64Array(total).fill(1n), [1, total]),
        position_ids: new ort.Tensor('int64', BigInt64Array.of(BigInt(total - 1)), [1, 1]),
      };
      pastNames.forEach((name, i) => { feeds[name] = past[i]; });
    }
  } finally {
    rt.busy -= 1;
    dispose(past);
    generations(rt).delete(id);
  }
  if (finish === 'cancelled') return; // Python stopped listening: nothing to send
  const decodeMs = tFirst === null ? 0 : tLast - tFirst;
  rt.send(control(id, 'done', {
    tokens: out.length,
    prompt_tokens: promptIds.length,
    finish_reason: finish,
    ttft_ms: tFirst === null ? null : tFirst - t0,
    prefill_ms: prefillMs,
    decode_ms: decodeMs,
    total_ms: tLast - t0,
    decode_tokens_per_s: out.length > 1 && decodeMs > 0 ? (out.length - 1) / (decodeMs / 1000) : null,
    tokens_per_s: tLast > t0 ? out.length / ((tLast - t0) / 1000) : null,
    backend: entry.backend,
    kv_location: kvLocation,
    // what this loop sampled with, after defaults: callers check it (the OpenAI
    // server fills a request's gaps from the model's generation config)
    sampling: {
      temperature: opts.temperature, top_k: opts.top_k, top_p: opts.top_p,
      repetition_penalty: opts.repetition_penalty,
    },
  }));
}

function int32(v) {
  return Number.isInteger(v) && v > 0;
}
