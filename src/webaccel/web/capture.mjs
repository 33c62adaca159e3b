// Graph capture: onnxruntime-web (JSEP) records the GPU commands of one
// session.run and replays them.  Every input and output lives in a GPU buffer
// of its own, allocated here once at a fixed shape (freeDimensionOverrides)
// and written or read in place around each replay.  Used by runtime.mjs for
// captured shape buckets and by generate.mjs for the captured decode step.

// An error with one of the bridge's codes (runtime.mjs's errorCode keeps it).
function coded(code, message) {
  const err = new Error(message);
  err.code = code;
  return err;
}

export function releaseCapture(io) {
  if (io) for (const slot of [...io.inputs.values(), ...io.outputs]) slot.buffer.destroy();
}

export const BYTES_PER = { float32: 4, float16: 2, int64: 8, uint64: 8, int32: 4, uint32: 4, int8: 1, uint8: 1, bool: 1 };
export const TYPED = { float32: Float32Array, float16: Uint16Array, int64: BigInt64Array, uint64: BigUint64Array,
  int32: Int32Array, uint32: Uint32Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };
export const padded = (n) => Math.ceil(n / 16) * 16;

export async function captureBuffers(ort, session) {
  const device = await ort.env.webgpu.device;
  const slot = (m) => {
    if (!m.isTensor || !BYTES_PER[m.type] || !m.shape.every((d) => Number.isInteger(d) && d > 0)) {
      throw coded('LOAD_FAILED', `graph capture needs every input and output at a fixed shape `
        + `(set freeDimensionOverrides for each free dimension); ${m.name} is ${m.type} [${m.shape}]`);
    }
    const bytes = m.shape.reduce((a, b) => a * b, 1) * BYTES_PER[m.type];
    const buffer = device.createBuffer({ size: padded(bytes),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    return { name: m.name, type: m.type, shape: m.shape, bytes, buffer,
      tensor: ort.Tensor.fromGpuBuffer(buffer, { dataType: m.type, dims: m.shape }) };
  };
  const inputs = new Map(session.inputMetadata.map((m) => [m.name, slot(m)]));
  const outputs = session.outputMetadata.map(slot);
  // session.run's feeds and fetches: the same tensors on every run
  const feeds = Object.fromEntries([...inputs].map(([n, s]) => [n, s.tensor]));
  const fetches = Object.fromEntries(outputs.map((s) => [s.name, s.tensor]));
  return { device, inputs, outputs, feeds, fetches };
}

export function checkCaptureShapes(io, tensors) {
  for (const [name, t] of Object.entries(tensors)) {
    const s = io.inputs.get(name);
    if (t.dtype !== s.type || t.shape.join() !== s.shape.join()) {
      throw coded('BAD_REQUEST', `this session was captured for ${name} ${s.type} [${s.shape}], `
        + `got ${t.dtype} [${t.shape}]; pad the request to that shape or load a session for this one`);
    }
  }
}

export async function runCaptured(session, io, tensors) {
  for (const [name, t] of Object.entries(tensors)) {
    const s = io.inputs.get(name);
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    let words = bytes;
    if (bytes.byteLength % 4) {  // writeBuffer takes whole 4-byte words
      words = new Uint8Array(padded(bytes.byteLength));
      words.set(bytes);
    }
    io.device.queue.writeBuffer(s.buffer, 0, words.buffer, words.byteOffset, words.byteLength);
  }
  await session.run(io.feeds, io.fetches);
  const encoder = io.device.createCommandEncoder();
  const staging = io.outputs.map((s) => {
    const b = io.device.createBuffer({ size: padded(s.bytes), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    encoder.copyBufferToBuffer(s.buffer, 0, b, 0, padded(s.bytes));
    return b;
  });
  io.device.queue.submit([encoder.finish()]);
  await Promise.all(staging.map((b) => b.mapAsync(GPUMapMode.READ)));
  const result = {};
  io.outputs.forEach((s, i) => {
    const copy = staging[i].getMappedRange(0, padded(s.bytes)).slice(0, s.bytes);
    staging[i].destroy();
    result[s.name] = { dtype: s.type, shape: s.shape, data: new TYPED[s.type](copy) };
  });
  return result;
}
