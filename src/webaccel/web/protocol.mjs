// Bridge frames, the JS twin of webaccel/bridge/frames.py.  Pure: no I/O.
//
// Binary frame: [u32 big-endian header length][JSON header][tensor bytes].
// header = {id, type, model_name?, data?, options?, tensors: [{name, dtype, shape, offset, length}]}
// Offsets are relative to the tensor bytes and 8-aligned, and the Python side
// pads the header so the tensor bytes start 8-aligned in the message: every
// tensor can be viewed as a typed array without a copy.

const TYPED = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array, // onnxruntime-web takes raw fp16 bits in a Uint16Array
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  int64: BigInt64Array,
  uint64: BigUint64Array,
  bool: Uint8Array,
};

export const DTYPES = Object.keys(TYPED);

export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.code = 'BAD_REQUEST';
  }
}

export function decodeBinary(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.byteLength < 4) throw new ProtocolError('binary frame shorter than its header length');
  const headLen = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, false);
  if (4 + headLen > bytes.byteLength) throw new ProtocolError('binary frame truncated');
  let header;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headLen)));
  } catch (e) {
    throw new ProtocolError(`binary frame header is not JSON: ${e.message}`);
  }
  if (!header || !Array.isArray(header.tensors)) throw new ProtocolError('binary frame header needs tensors');
  const bodyStart = bytes.byteOffset + 4 + headLen;
  const bodyLen = bytes.byteLength - 4 - headLen;
  const tensors = {};
  for (const t of header.tensors) {
    const Typed = TYPED[t.dtype];
    if (!Typed) throw new ProtocolError(`unknown dtype ${t.dtype}`);
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count * Typed.BYTES_PER_ELEMENT !== t.length || t.offset + t.length > bodyLen) {
      throw new ProtocolError(`tensor ${t.name}: length does not match shape or runs past the frame`);
    }
    const start = bodyStart + t.offset;
    // Aligned views avoid a copy; fall back to a copy if a peer sent unaligned bytes.
    const data = start % Typed.BYTES_PER_ELEMENT === 0
      ? new Typed(bytes.buffer, start, count)
      : new Typed(bytes.buffer.slice(start, start + t.length));
    tensors[t.name] = { dtype: t.dtype, shape: t.shape, data };
  }
  return { header, tensors };
}

// tensors: {name: {dtype, shape, data: TypedArray}}
export function encodeBinary(fields, tensors) {
  const table = [];
  let offset = 0;
  const parts = [];
  for (const [name, t] of Object.entries(tensors)) {
    const pad = (8 - (offset % 8)) % 8;
    offset += pad;
    const view = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    table.push({ name, dtype: t.dtype, shape: Array.from(t.shape), offset, length: view.byteLength });
    parts.push([offset, view]);
    offset += view.byteLength;
  }
  let head = new TextEncoder().encode(JSON.stringify({ ...fields, tensors: table }));
  const headPad = (8 - ((4 + head.byteLength) % 8)) % 8;
  if (headPad) {
    const padded = new Uint8Array(head.byteLength + headPad).fill(0x20);
    padded.set(head);
    head = padded;
  }
  const out = new Uint8Array(4 + head.byteLength + offset);
  new DataView(out.buffer).setUint32(0, head.byteLength, false);
  out.set(head, 4);
  const base = 4 + head.byteLength;
  for (const [off, view] of parts) out.set(view, base + off);
  return out.buffer;
}

export function control(id, type, data = {}, extra = {}) {
  return JSON.stringify({ id, type, data, options: {}, ...extra });
}
