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
// On webgpu (JSEP), for a model loaded with session_options.decode_step, the steps run on a captured
// fixed-shape session instead (class CapturedBatch, below).
//
// Concurrent generations of one model on this page are batched continuously
// (class Batch below): they share each decode step as rows of one batch, a
// new one joins between steps after its own prefill, a finished or cancelled
// one leaves.  Each keeps its own options, seeded PRNG, repetition-penalty set
// and stop ids; `done` reports batch_max, the largest batch it decoded in.
//
// Sampling mirrors webaccel/generation/sampling.py exactly (same order, same
// seeded PRNG, same tie-breaking), so Python can check the page's choices:
// repetition penalty -> temperature (0 = greedy) -> top-k -> top-p -> draw.
//
// The model contract is webaccel/generation/export.py's: inputs input_ids,
// attention_mask, position_ids, past_key_values.{i}.key|value
// [batch, kv_heads, past, head_dim]; outputs logits [batch, 1, vocab], present.{i}.*.
// Environment-agnostic like runtime.mjs (also runs in Node).
import { control, ProtocolError } from './protocol.mjs';
import { captureBuffers, padded, releaseCapture } from './capture.mjs';

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
// sessions are not re-entrant); other models' steps and plain runs alternate.
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
// The batch drops the stream's row before its next step.
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

async function cpuData(t) {
  return t.location && t.location !== 'cpu' ? t.getData(true) : t.data;
}

// Continuous batching: every stream of one model on this page decodes in one
// session.run per step.  Row r of the batch holds stream r's KV cache left-padded
// to the common past length L (attention_mask 0 over the padding, position_ids
// the stream's own count), so each row's logits are its solo run's (up to float
// rounding; tests/generation/test_batched_decode.py checks the exported graph).
// While the rows stay the same, a step's present.* outputs are the next step's
// past as they are (on the GPU under webgpu: nothing copied).  A new stream
// prefills alone (batch 1) between steps and joins; a finished, cancelled or
// failed one leaves; either re-packs the cache once (a CPU copy of the valid
// positions, dropping padding no row needs).  Row order is stable.
class Batch {
  constructor(rt, entry, kvHeads, headDim) {
    this.rt = rt;
    this.entry = entry;
    this.session = entry.session;
    this.kvHeads = kvHeads;
    this.headDim = headDim;
    this.pastNames = this.session.inputNames.filter((n) => n.startsWith('past_key_values.'));
    this.presentNames = this.pastNames.map((n) => n.replace('past_key_values.', 'present.'));
    this.rows = []; // streams in the batch, in row order
    this.past = []; // KV tensors [rows, kvHeads, L, headDim], one per past name
    this.len = 0; // L: the common (padded) past length
    this.joining = []; // streams waiting for their prefill
    this.running = false;
  }

  add(s) {
    this.joining.push(s);
    if (this.running) return; // the loop takes it in before its next step
    this.running = true;
    this.loop().catch((err) => {
      // A bug here must not leave streams waiting forever: fail them all.
      for (const r of [...this.rows, ...this.joining]) this.fail(r, err);
      this.joining = [];
      this.reset();
      this.running = false;
    });
  }

  async loop() {
    for (;;) {
      await yieldToTasks();
      for (const s of this.rows) if (s.cancelled && !s.ended) this.finish(s, 'cancelled');
      const keep = this.rows.filter((s) => !s.ended);
      const changed = keep.length !== this.rows.length;
      const joined = [];
      while (this.joining.length && this.canJoin(keep.length + joined.length)) {
        const s = this.joining.shift();
        if (s.cancelled) { this.finish(s, 'cancelled'); continue; }
        const kv = await this.prefill(s);
        if (kv) joined.push({ s, kv });
      }
      if (joined.length || changed) {
        try {
          await this.repack(keep, joined);
        } catch (err) {
          for (const s of [...keep, ...joined.map((j) => j.s)]) this.fail(s, err);
          this.reset();
          continue;
        }
      }
      if (!this.rows.length) {
        if (!this.joining.length) {
          this.running = false; // no await since the check: add() cannot slip in between
          return;
        }
        continue;
      }
      await this.step();
    }
  }

  canJoin() {
    return true; // rows grow as needed: every joiner prefills before the next step
  }

  reset() {
    dispose(this.past);
    this.past = [];
    this.rows = [];
    this.len = 0;
  }

  // The prompt alone (batch 1): the first token, and the stream's KV cache to join with.
  async prefill(s) {
    const ort = this.rt.ort;
    const ids = s.promptIds;
    const n = ids.length;
    const feeds = {
      input_ids: new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), [1, n]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, n]),
    };
    for (const name of this.pastNames) {
      feeds[name] = new ort.Tensor('float32', new Float32Array(0), [1, this.kvHeads, 0, this.headDim]);
    }
    let kv = [];
    try {
      const tStep = now();
      const result = await enqueue(this.rt, () => this.session.run(feeds));
      s.prefillMs = now() - tStep;
      kv = this.presentNames.map((name) => result[name]);
      s.kvLocation = kv[0] ? (kv[0].location || 'cpu') : null;
      const logits = result.logits;
      const data = await cpuData(logits);
      const vocab = logits.dims[logits.dims.length - 1];
      s.len = n;
      if (this.accept(s, data.subarray(data.length - vocab))) return kv;
    } catch (err) {
      this.fail(s, err);
    }
    dispose(kv);
    return null;
  }

  // Lay out kept rows (in order) then joiners, each left-padded to the longest.
  async repack(keep, joined) {
    const ort = this.rt.ort;
    const rows = [...keep, ...joined.map((j) => j.s)];
    if (!rows.length) { this.reset(); return; }
    if (!keep.length && joined.length === 1) {
      // One stream alone: its prefill's present.* are the past as they are.
      dispose(this.past);
      this.past = joined[0].kv;
      this.rows = rows;
      this.len = rows[0].len;
      return;
    }
    const L = rows.reduce((m, s) => Math.max(m, s.len), 0);
    const H = this.kvHeads;
    const D = this.headDim;
    const oldRows = this.rows;
    const oldL = this.len;
    const oldIndex = new Map(oldRows.map((s, i) => [s, i]));
    const next = [];
    try {
      for (let k = 0; k < this.pastNames.length; k += 1) {
        const dst = new Float32Array(rows.length * H * L * D);
        const old = keep.length ? await cpuData(this.past[k]) : null;
        const joinData = [];
        for (const j of joined) joinData.push(await cpuData(j.kv[k]));
        rows.forEach((s, r) => {
          let src;
          let srcRow;
          let srcL;
          if (r < keep.length) {
            src = old; srcRow = oldIndex.get(s); srcL = oldL;
          } else {
            src = joinData[r - keep.length]; srcRow = 0; srcL = s.len;
          }
          for (let h = 0; h < H; h += 1) {
            const from = ((srcRow * H + h) * srcL + (srcL - s.len)) * D;
            const to = ((r * H + h) * L + (L - s.len)) * D;
            dst.set(src.subarray(from, from + s.len * D), to);
          }
        });
        next.push(new ort.Tensor('float32', dst, [rows.length, H, L, D]));
      }
    } finally {
      dispose(this.past);
      for (const j of joined) dispose(j.kv);
    }
    this.past = next;
    this.rows = rows;
    this.len = L;
  }

  // One decode step of every row.
  async step() {
    const ort = this.rt.ort;
    const rows = this.rows;
    const B = rows.length;
    const L = this.len;
    const mask = new BigInt64Array(B * (L + 1));
    const ids = new BigInt64Array(B);
    const pos = new BigInt64Array(B);
    rows.forEach((s, r) => {
      mask.fill(1n, r * (L + 1) + (L - s.len), (r + 1) * (L + 1));
      ids[r] = BigInt(s.out[s.out.length - 1]);
      pos[r] = BigInt(s.len);
      if (B > s.batchMax) s.batchMax = B;
    });
    const feeds = {
      input_ids: new ort.Tensor('int64', ids, [B, 1]),
      attention_mask: new ort.Tensor('int64', mask, [B, L + 1]),
      position_ids: new ort.Tensor('int64', pos, [B, 1]),
    };
    this.pastNames.forEach((name, i) => { feeds[name] = this.past[i]; });
    let result;
    let data;
    try {
      result = await enqueue(this.rt, () => this.session.run(feeds));
      data = await cpuData(result.logits);
    } catch (err) {
      // Every stream of the step fails with the same error; streams still
      // waiting to join go on in a fresh batch.
      for (const s of rows) this.fail(s, err);
      if (result) dispose(this.presentNames.map((n) => result[n]));
      this.reset();
      return;
    }
    dispose(this.past); // the previous step's KV tensors (GPU buffers) are no longer needed
    this.past = this.presentNames.map((n) => result[n]);
    this.len = L + 1;
    const vocab = result.logits.dims[result.logits.dims.length - 1];
    rows.forEach((s, r) => {
      s.len += 1;
      this.accept(s, data.subarray(r * vocab, (r + 1) * vocab));
    });
    // Rows that ended leave before the next step (loop() re-packs the others).
  }

  // Pick the stream's next token from its row's logits and report it; false
  // once the stream has ended (finished, or failed to send).
  accept(s, logits) {
    return this.record(s, pick(logits, s.opts, s.seen, s.rng));
  }

  record(s, token) {
    s.seen.add(token);
    s.out.push(token);
    s.tLast = now();
    if (s.tFirst === null) s.tFirst = s.tLast;
    if (s.cancelled) { this.finish(s, 'cancelled'); return false; }
    this.rt.send(control(s.id, 'stream', { token, index: s.out.length - 1 }));
    if (s.stops.has(token)) { this.finish(s, 'stop'); return false; }
    if (s.out.length >= s.opts.max_tokens) { this.finish(s, 'length'); return false; }
    return true;
  }

  finish(s, reason) {
    if (s.ended) return;
    s.ended = true;
    s.finish = reason;
    s.resolve();
  }

  fail(s, err) {
    if (s.ended) return;
    s.ended = true;
    s.reject(err);
  }
}

// ----------------------------------------------------- the captured decode step
//
// On webgpu a plain decode step is hundreds of small dispatches issued from JS
// (30 layers of SmolLM2: ~80 ms a token on an H100, slower than one CPU thread),
// so the step is a second session of the same graph with every dimension fixed
// (`batch` rows, a KV cache of `max_len` positions) and graph capture: a step
// is one replay of recorded GPU commands.  The cache is that session's
// past_key_values.* input buffers, kept across steps.  Row r holds its stream's
// positions 0..len-1 (each row its own length: no padding, nothing re-packed
// when streams join or leave).  A step attends over the max_len cache slots and
// the new token's own key (the export's present = Concat(past, new), as it is),
// attention_mask 0 over the slots a row does not use, position_ids the row's
// length; afterwards a small shader moves the new key/value (present's last
// slot) into slot len of the row's cache.  Only next_token (the graph's ArgMax) is
// read back, or the logits when a row samples or penalizes repetition.
// Prefill stays on the dynamic session (batch 1, the prompt's length); its
// present.* are written into the joining row's cache.
export async function createDecodeStep(ort, bytes, opts, sessionExtra) {
  const batch = opts.batch;
  const maxLen = opts.max_len;
  if (!int32(batch) || !int32(maxLen)) throw new ProtocolError('decode_step needs integer batch and max_len > 0');
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: ['webgpu'],
    graphOptimizationLevel: 'all',
    extra: sessionExtra,
    freeDimensionOverrides: { batch, sequence: 1, past_sequence: maxLen, total_sequence: maxLen + 1 },
    enableGraphCapture: true,
  });
  let io;
  try {
    io = await captureBuffers(ort, session);
    if (!io.outputs.some((o) => o.name === 'next_token')) {
      throw new Error('the model has no next_token output (exports before revision 4): re-export it');
    }
    const other = [...io.inputs.values(), ...io.outputs].find((m) => /^(past_key_values|present)\.|^logits$/.test(m.name) && m.type !== 'float32');
    if (other) throw new Error(`the captured step takes float32 KV caches and logits; ${other.name} is ${other.type}`);
  } catch (err) {
    releaseCapture(io);
    await session.release();
    throw err;
  }
  return { session, io, batch, maxLen };
}

// A step's new key/value of every row, from present's last slot to the row's
// next cache slot: one small dispatch per KV tensor (60 for SmolLM2), 0.24-0.46 ms
// to encode and submit whatever the rows; buffer copies per row and head took
// 0.65 ms for one row and 3.6 ms for 8 (1,440 copies; Dawn on this 2-core
// machine, 2026-12-07).  rows: [n, (row, len) x n].
const scatterWgsl = (H, D, M) => `
@group(0) @binding(0) var<storage, read> rows: array<u32>;
@group(0) @binding(1) var<storage, read> present: array<f32>;
@group(0) @binding(2) var<storage, read_write> cache: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let i = gid.x;
  if (i >= rows[0] * ${H * D}u) { return; }
  let k = i / ${H * D}u;
  let h = (i % ${H * D}u) / ${D}u;
  let d = i % ${D}u;
  let rh = rows[1u + 2u * k] * ${H}u + h;
  cache[(rh * ${M}u + rows[2u + 2u * k]) * ${D}u + d] = present[(rh * ${M + 1}u + ${M}u) * ${D}u + d];
}`;

class CapturedBatch extends Batch {
  constructor(rt, entry, kvHeads, headDim) {
    super(rt, entry, kvHeads, headDim);
    const { io, batch, maxLen } = entry.step;
    this.stepSession = entry.step.session;
    this.io = io;
    this.device = io.device;
    this.B = batch;
    this.M = maxLen;
    const out = (name) => io.outputs.find((o) => o.name === name);
    this.cache = this.pastNames.map((n) => io.inputs.get(n));
    this.present = this.presentNames.map(out);
    this.tokens = out('next_token');
    this.logits = out('logits');
    this.vocab = this.logits.shape[this.logits.shape.length - 1];
    this.ids = new BigInt64Array(batch);
    this.pos = new BigInt64Array(batch);
    this.mask = new BigInt64Array(batch * (maxLen + 1));
    this.readback = new Map(); // output slot -> MAP_READ buffer, made once
    this.reset();
    const dev = this.device;
    const module = dev.createShaderModule({ code: scatterWgsl(kvHeads, headDim, maxLen) });
    this.scatter = dev.createComputePipeline({ layout: 'auto', compute: { module, entryPoint: 'main' } });
    this.rowInfo = new Uint32Array(1 + 2 * batch);
    this.rowInfoBuffer = dev.createBuffer({ size: padded(this.rowInfo.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
    this.scatterGroups = this.present.map((p, k) => dev.createBindGroup({
      layout: this.scatter.getBindGroupLayout(0),
      entries: [this.rowInfoBuffer, p.buffer, this.cache[k].buffer].map((buffer, binding) => ({ binding, resource: { buffer } })),
    }));
    this.workgroups = Math.ceil((batch * kvHeads * headDim) / 64);
  }

  // Whether a stream fits the cache: its last step writes slot prompt + max_tokens - 2.
  fits(promptTokens, maxTokens) {
    return promptTokens + maxTokens - 1 <= this.M;
  }

  canJoin(rows) {
    return rows < this.B;
  }

  reset() {
    this.rows = [];
    this.free = Array.from({ length: this.B }, (_, r) => this.B - 1 - r); // pop() gives row 0 first
  }

  release() {
    this.rowInfoBuffer.destroy();
    for (const buf of this.readback.values()) buf.destroy();
  }

  // Leavers free their rows; each joiner takes one and its prefill's KV (on the
  // CPU: runtime.mjs says why) is written into the row's first slots.
  async repack(keep, joined) {
    for (const s of this.rows) if (!keep.includes(s)) this.free.push(s.row);
    const H = this.kvHeads;
    const D = this.headDim;
    try {
      for (const { s, kv } of joined) {
        s.row = this.free.pop();
        for (let k = 0; k < kv.length; k += 1) {
          const data = await cpuData(kv[k]); // [1, H, len, D]
          for (let h = 0; h < H; h += 1) {
            this.device.queue.writeBuffer(this.cache[k].buffer, (s.row * H + h) * this.M * D * 4,
              data.subarray(h * s.len * D, (h + 1) * s.len * D));
          }
        }
      }
    } finally {
      for (const j of joined) dispose(j.kv);
    }
    this.rows = [...keep, ...joined.map((j) => j.s)];
  }

  readbackBuffer(slot) {
    let buf = this.readback.get(slot);
    if (!buf) {
      buf = this.device.createBuffer({ size: padded(slot.bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      this.readback.set(slot, buf);
    }
    return buf;
  }

  async step() {
    const { B, M, rows, io } = this;
    this.ids.fill(0n);
    this.pos.fill(0n);
    this.mask.fill(0n);
    for (let r = 0; r < B; r += 1) this.mask[r * (M + 1) + M] = 1n; // a free row attends to itself: finite
    for (const s of rows) {
      this.ids[s.row] = BigInt(s.out[s.out.length - 1]);
      this.pos[s.row] = BigInt(s.len);
      this.mask.fill(1n, s.row * (M + 1), s.row * (M + 1) + s.len);
      if (rows.length > s.batchMax) s.batchMax = rows.length;
    }
    const greedy = rows.every((s) => s.opts.temperature === 0 && s.opts.repetition_penalty === 1);
    const wanted = greedy ? this.tokens : this.logits;
    let data;
    try {
      const q = this.device.queue;
      q.writeBuffer(io.inputs.get('input_ids').buffer, 0, this.ids);
      q.writeBuffer(io.inputs.get('position_ids').buffer, 0, this.pos);
      q.writeBuffer(io.inputs.get('attention_mask').buffer, 0, this.mask);
      await enqueue(this.rt, () => this.stepSession.run(io.feeds, io.fetches));
      this.rowInfo[0] = rows.length;
      rows.forEach((s, i) => { this.rowInfo[1 + 2 * i] = s.row; this.rowInfo[2 + 2 * i] = s.len; });
      q.writeBuffer(this.rowInfoBuffer, 0, this.rowInfo);
      const enc = this.device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(this.scatter);
      for (const group of this.scatterGroups) {
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(this.workgroups);
      }
      pass.end();
      const staging = this.readbackBuffer(wanted);
      enc.copyBufferToBuffer(wanted.buffer, 0, staging, 0, padded(wanted.bytes));
      q.submit([enc.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      const bytes = staging.getMappedRange(0, padded(wanted.bytes)).slice(0, wanted.bytes);
      staging.unmap();
      data = greedy ? new BigInt64Array(bytes) : new Float32Array(bytes);
    } catch (err) {
      for (const s of rows) this.fail(s, err);
      this.reset();
      return;
    }
    const V = this.vocab;
    for (const s of rows) {
      s.len += 1;
      s.decode = 'captured';
      if (greedy) this.record(s, Number(data[s.row]));
      else this.accept(s, data.subarray(s.row * V, (s.row + 1) * V));
    }
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
  const hasPast = session.inputNames.some((n) => n.startsWith('past_key_values.'));
  const kvHeads = header.options && header.options.kv_heads;
  const headDim = header.options && header.options.head_dim;
  if (!hasPast || !int32(kvHeads) || !int32(headDim)) {
    throw new ProtocolError('generate needs a model with past_key_values inputs and options.kv_heads / options.head_dim');
  }
  const running = entry.batch || entry.captured;
  if (running && (running.kvHeads !== kvHeads || running.headDim !== headDim)) {
    throw new ProtocolError(`options.kv_heads / options.head_dim (${kvHeads}, ${headDim}) differ from the running streams' `
      + `(${running.kvHeads}, ${running.headDim})`);
  }
  const promptIds = Array.from(prompt.data, Number);
  const s = {
    id,
    opts,
    promptIds,
    stops: new Set(opts.stop_token_ids),
    rng: mulberry32(opts.seed),
    seen: new Set(promptIds),
    out: [],
    len: 0, // KV positions this stream holds
    cancelled: false,
    ended: false,
    finish: 'length',
    t0: now(),
    tFirst: null,
    tLast: 0,
    prefillMs: 0,
    kvLocation: null,
    batchMax: 1,
    decode: 'dynamic', // 'captured' once a step ran on the captured session
  };
  s.tLast = s.t0;
  const ended = new Promise((resolve, reject) => { s.resolve = resolve; s.reject = reject; });
  generations(rt).set(id, s);
  if (rt.cancelled && rt.cancelled.delete(id)) s.cancelled = true; // cancel raced ahead
  // The captured step takes every stream that fits its cache; longer ones decode
  // step by step on the dynamic session (both batches share the page's run queue).
  let batch;
  if (entry.step) {
    if (!entry.captured) entry.captured = new CapturedBatch(rt, entry, kvHeads, headDim);
    if (entry.captured.fits(promptIds.length, opts.max_tokens)) batch = entry.captured;
  }
  if (!batch) {
    if (!entry.batch) entry.batch = new Batch(rt, entry, kvHeads, headDim);
    batch = entry.batch;
  }
  rt.busy += 1;
  try {
    batch.add(s);
    await ended;
  } finally {
    rt.busy -= 1;
    generations(rt).delete(id);
  }
  if (s.finish === 'cancelled') return; // Python stopped listening: nothing to send
  const { out, t0, tFirst, tLast } = s;
  const decodeMs = tFirst === null ? 0 : tLast - tFirst;
  rt.send(control(id, 'done', {
    tokens: out.length,
    prompt_tokens: promptIds.length,
    finish_reason: s.finish,
    ttft_ms: tFirst === null ? null : tFirst - t0,
    prefill_ms: s.prefillMs,
    decode_ms: decodeMs,
    total_ms: tLast - t0,
    decode_tokens_per_s: out.length > 1 && decodeMs > 0 ? (out.length - 1) / (decodeMs / 1000) : null,
    tokens_per_s: tLast > t0 ? out.length / ((tLast - t0) / 1000) : null,
    backend: entry.backend,
    kv_location: s.kvLocation,
    decode: s.decode,
    // the most streams this one decoded beside (itself included) in one step
    batch_max: s.batchMax,
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
