// generate.mjs's batch loop against a fake decoder, no browser (run by
// test_batch_loop.py: `node fake_decoder.mjs <generate.mjs URL>`; prints JSON).
const { runGenerate, cancelGeneration } = await import(process.argv[2]);

const V = 50;
class Tensor {
  constructor(type, data, dims) { this.type = type; this.data = data; this.dims = dims; this.location = 'cpu'; }
}
// A fake decoder (kv_heads 1, head_dim 1): the cache holds the token ids; row r's next
// token is a function of its unmasked cache and new ids, their count and its last position.
// Any slip in padding, masks, positions or re-packing changes the tokens.
function fakeSession(failAt) {
  const s = { calls: 0, batches: [] };
  s.inputNames = ['input_ids', 'attention_mask', 'position_ids', 'past_key_values.0.key', 'past_key_values.0.value'];
  s.run = async (f) => {
    s.calls += 1;
    const [B, seq] = f.input_ids.dims;
    const past = f['past_key_values.0.key'];
    const L = past.dims[2];
    s.batches.push(B);
    if (failAt && failAt(s, B)) throw Object.assign(new Error('device lost in step'), { code: 'WORKER_LOST' });
    const T = L + seq;
    const kv = new Float32Array(B * T);
    const logits = new Float32Array(B * V);
    for (let r = 0; r < B; r += 1) {
      let sum = 0;
      let n = 0;
      for (let t = 0; t < T; t += 1) {
        const v = t < L ? past.data[r * L + t] : Number(f.input_ids.data[r * seq + t - L]);
        kv[r * T + t] = v;
        if (f.attention_mask.data[r * T + t] === 1n) { sum += v; n += 1; }
      }
      const pos = Number(f.position_ids.data[r * seq + seq - 1]);
      logits[r * V + ((sum * 7 + pos * 3 + n * n) % V)] = 1;
    }
    return {
      logits: new Tensor('float32', logits, [B, 1, V]),
      'present.0.key': new Tensor('float32', kv, [B, 1, T, 1]),
      'present.0.value': new Tensor('float32', kv.slice(), [B, 1, T, 1]),
    };
  };
  return s;
}

function runtime(session) {
  const frames = [];
  const rt = {
    ort: { Tensor }, sessions: new Map([['m', { session, backend: 'wasm' }]]),
    queue: Promise.resolve(), busy: 0, cancelled: new Set(), frames,
    send: (text) => { const m = JSON.parse(text); frames.push(m); (rt.onFrame || (() => {}))(m); },
  };
  return rt;
}

const frame = (id, prompt, opts) => ({
  header: { id, type: 'generate', model_name: 'm', options: { kv_heads: 1, head_dim: 1, ...opts } },
  tensors: { input_ids: { dtype: 'int64', shape: [1, prompt.length], data: BigInt64Array.from(prompt, BigInt) } },
});
const tokens = (rt, id) => rt.frames.filter((m) => m.id === id && m.type === 'stream').map((m) => m.data.token);
const done = (rt, id) => rt.frames.find((m) => m.id === id && m.type === 'done');

async function solo(prompt, opts) {
  const rt = runtime(fakeSession());
  await runGenerate(rt, frame('x', prompt, opts));
  return tokens(rt, 'x');
}

const out = {};
const P = { a: [[3, 1, 4, 1, 5], { max_tokens: 40 }], b: [[9], { max_tokens: 25 }],
  c: [[2, 7, 1, 8], { max_tokens: 6 }], d: [[6, 6], { max_tokens: 30, temperature: 0.9, seed: 5 }] };
out.solo = {};
for (const [k, [p, o]] of Object.entries(P)) out.solo[k] = await solo(p, o);

// Staggered: a alone; b and c join at a's 5th token; d joins when c is done.
{
  const session = fakeSession();
  const rt = runtime(session);
  const started = {};
  const start = (k) => { started[k] = runGenerate(rt, frame(k, ...P[k])); };
  rt.onFrame = (m) => {
    if (m.id === 'a' && m.type === 'stream' && m.data.index === 4) { start('b'); start('c'); }
    if (m.id === 'c' && m.type === 'done') start('d');
  };
  start('a');
  await started.a;
  await Promise.all(Object.values(started));
  out.staggered = Object.fromEntries(Object.keys(P).map((k) => [k, tokens(rt, k)]));
  out.batch_max = Object.fromEntries(Object.keys(P).map((k) => [k, done(rt, k).data.batch_max]));
  out.batches = session.batches;
}

// Cancel b after its 3rd token; a and c go on.
{
  const rt = runtime(fakeSession());
  rt.onFrame = (m) => { if (m.id === 'b' && m.type === 'stream' && m.data.index === 2) cancelGeneration(rt, 'b'); };
  await Promise.all(['a', 'b', 'c'].map((k) => runGenerate(rt, frame(k, ...P[k]))));
  out.cancel = { a: tokens(rt, 'a'), b: tokens(rt, 'b'), c: tokens(rt, 'c'), b_done: !!done(rt, 'b'),
    busy: rt.busy };
}

// A step of 2 rows fails: both streams fail with that same error, nothing hangs,
// and the next stream on the page runs normally.
{
  const session = fakeSession((s, B) => B === 2 && !s.failed && (s.failed = true));
  const rt = runtime(session);
  const res = await Promise.allSettled(['a', 'b'].map((k) => runGenerate(rt, frame(k, ...P[k]))));
  out.error = res.map((r) => [r.status, r.reason && r.reason.code, r.reason && r.reason.message]);
  out.error_same_object = res[0].reason === res[1].reason;
  await runGenerate(rt, frame('e', ...P.b));
  out.after_error = tokens(rt, 'e');
  out.after_error_busy = rt.busy;
}
process.stdout.write(JSON.stringify(out));
