"""Bridge frames: encode, decode and validate.  Pure: no I/O, no asyncio.

Two kinds of WebSocket message travel between Python and a page:

* Text frames carry JSON control messages ``{id, type, model_name, platform,
  data, options}`` (hello, capabilities, load_model, loaded, error,
  heartbeat, unload, cancel, stream ...).
* Binary frames carry tensors::

      +-------------------+------------------------+-----------------------+
      | header length (4) | JSON header (UTF-8)    | tensor bytes          |
      | big-endian uint32 | {id, type, ..., tensors}| little-endian, packed |
      +-------------------+------------------------+-----------------------+

  ``tensors`` lists ``{name, dtype, shape, offset, length}`` with offsets
  relative to the start of the tensor bytes; each tensor starts on an 8-byte
  boundary so the page can view it as a typed array without copying.  The
  header may also carry the control fields (``type``, ``model_name``,
  ``options``, ``data``) so one binary frame is a whole ``run`` request or
  ``result``.

Anything malformed raises :class:`webaccel.errors.ProtocolError`
(``BAD_REQUEST``); decoding never raises anything else, whatever the bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webaccel.errors import ProtocolError

# Message types, grouped by who sends them.
SERVER_TYPES = frozenset({"load_model", "run", "unload", "cancel", "heartbeat", "generate"})
PAGE_TYPES = frozenset(
    {
        "hello",
        "capabilities",
        "loaded",
        "result",
        "stream",
        "error",
        "heartbeat",
        "unloaded",
        "done",
    }
)
MESSAGE_TYPES = SERVER_TYPES | PAGE_TYPES

# dtype names as onnxruntime-web spells them -> numpy dtypes (little-endian).
DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "float16": np.dtype("<f2"),
    "float64": np.dtype("<f8"),
    "int8": np.dtype("i1"),
    "uint8": np.dtype("u1"),
    "int16": np.dtype("<i2"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "uint32": np.dtype("<u4"),
    "int64": np.dtype("<i8"),
    "uint64": np.dtype("<u8"),
    "bool": np.dtype("?"),
}
_NAME_OF: dict[np.dtype, str] = {v: k for k, v in DTYPES.items()}

ALIGN = 8
_HEADER_LEN = struct.Struct(">I")


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a hostile or broken peer from exhausting memory."""

    max_frame_bytes: int = 512 * 1024 * 1024
    max_header_bytes: int = 1024 * 1024
    max_tensors: int = 256
    max_rank: int = 8
    max_control_bytes: int = 4 * 1024 * 1024
    # No dimension may exceed this, even in an empty tensor: numpy refuses
    # shapes whose element count overflows ``intp`` ([0, 2**100] has 0
    # elements, yet numpy cannot build it).
    max_dim: int = 2**31 - 1


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class Control:
    """A JSON control message."""

    id: str
    type: str
    model_name: str | None = None
    platform: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self.id, self.type, self.model_name, self.platform, self.data, self.options)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "type": self.type}
        if self.model_name is not None:
            out["model_name"] = self.model_name
        if self.platform is not None:
            out["platform"] = self.platform
        out["data"] = self.data
        out["options"] = self.options
        return out


@dataclass(frozen=True, slots=True)
class TensorFrame:
    """A binary frame: control fields plus named tensors."""

    id: str
    type: str
    tensors: dict[str, np.ndarray]
    model_name: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_fields(self.id, self.type, self.model_name, None, self.data, self.options)


Frame = Control | TensorFrame


def _check_fields(
    id_: Any, type_: Any, model_name: Any, platform: Any, data: Any, options: Any
) -> None:
    if not isinstance(id_, str) or not id_ or len(id_) > 128:
        raise ProtocolError("frame 'id' must be a non-empty string of at most 128 characters")
    # isinstance first: an unhashable JSON value ([] or {}) must not reach the set lookup.
    if not isinstance(type_, str) or type_ not in MESSAGE_TYPES:
        raise ProtocolError(
            f"unknown frame type {type_!r}; expected one of {sorted(MESSAGE_TYPES)}"
        )
    if model_name is not None and not isinstance(model_name, str):
        raise ProtocolError("'model_name' must be a string")
    if platform is not None and not isinstance(platform, str):
        raise ProtocolError("'platform' must be a string")
    if not isinstance(data, dict):
        raise ProtocolError("'data' must be a JSON object")
    if not isinstance(options, dict):
        raise ProtocolError("'options' must be a JSON object")


# ---------------------------------------------------------------- control frames


def encode_control(msg: Control) -> str:
    return json.dumps(msg.to_json(), separators=(",", ":"), allow_nan=False)


def decode_control(text: str | bytes, limits: Limits = DEFAULT_LIMITS) -> Control:
    if len(text) > limits.max_control_bytes:
        raise ProtocolError(
            f"control frame of {len(text)} bytes exceeds {limits.max_control_bytes}"
        )
    obj = _loads(text, "control frame")
    if not isinstance(obj, dict):
        raise ProtocolError("control frame must be a JSON object")
    unknown = set(obj) - {"id", "type", "model_name", "platform", "data", "options"}
    if unknown:
        raise ProtocolError(f"unknown control frame fields {sorted(unknown)}")
    return Control(
        # Validated in __post_init__ (a non-string id or type is a ProtocolError there).
        id=obj.get("id"),  # type: ignore[arg-type]
        type=obj.get("type"),  # type: ignore[arg-type]
        model_name=obj.get("model_name"),
        platform=obj.get("platform"),
        data=obj.get("data", {}),
        options=obj.get("options", {}),
    )


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and bad UTF-8 are ValueErrors
        raise ProtocolError(f"{what} is not valid JSON: {exc}") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed in bridge JSON")


# ---------------------------------------------------------------- tensor frames


def dtype_name(dtype: Any) -> str:
    dt = np.dtype(dtype)
    # Big-endian input is fine: encode_tensors converts it; the wire is little-endian.
    key = dt.newbyteorder("<") if dt.byteorder == ">" else dt
    try:
        return _NAME_OF[key]
    except KeyError:
        raise ProtocolError(
            f"dtype {dt} cannot travel over the bridge; use one of {sorted(DTYPES)}"
        ) from None


def encode_tensors(frame: TensorFrame) -> bytes:
    """Pack ``frame`` into one binary message (header length, JSON header, aligned tensor bytes)."""
    table: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    offset = 0
    for name, array in frame.tensors.items():
        arr = np.asarray(array)
        name_of_dtype = dtype_name(arr.dtype)
        raw = np.ascontiguousarray(arr, dtype=DTYPES[name_of_dtype]).tobytes()
        pad = (-offset) % ALIGN
        if pad:
            chunks.append(b"\0" * pad)
            offset += pad
        table.append(
            {
                "name": name,
                "dtype": name_of_dtype,
                "shape": list(arr.shape),
                "offset": offset,
                "length": len(raw),
            }
        )
        chunks.append(raw)
        offset += len(raw)
    header: dict[str, Any] = {"id": frame.id, "type": frame.type, "tensors": table}
    if frame.model_name is not None:
        header["model_name"] = frame.model_name
    if frame.data:
        header["data"] = frame.data
    if frame.options:
        header["options"] = frame.options
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    # Pad the header so tensor bytes start 8-aligned within the message, too.
    head += b" " * ((-(_HEADER_LEN.size + len(head))) % ALIGN)
    return b"".join([_HEADER_LEN.pack(len(head)), head, *chunks])


def decode_tensors(
    message: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> TensorFrame:
    """Parse and validate a binary frame; arrays are copies (safe to keep)."""
    buf = memoryview(message).cast("B")
    if len(buf) > limits.max_frame_bytes:
        raise ProtocolError(f"binary frame of {len(buf)} bytes exceeds {limits.max_frame_bytes}")
    if len(buf) < _HEADER_LEN.size:
        raise ProtocolError("binary frame is shorter than its 4-byte header length")
    (head_len,) = _HEADER_LEN.unpack_from(buf, 0)
    if head_len > limits.max_header_bytes:
        raise ProtocolError(
            f"binary frame header of {head_len} bytes exceeds {limits.max_header_bytes}"
        )
    body_start = _HEADER_LEN.size + head_len
    if body_start > len(buf):
        raise ProtocolError(
            f"binary frame truncated: header says {head_len} bytes, {len(buf) - 4} present"
        )
    header = _loads(bytes(buf[_HEADER_LEN.size : body_start]), "binary frame header")
    if not isinstance(header, dict):
        raise ProtocolError("binary frame header must be a JSON object")
    table = header.get("tensors")
    if not isinstance(table, list):
        raise ProtocolError("binary frame header needs a 'tensors' list")
    if len(table) > limits.max_tensors:
        raise ProtocolError(f"{len(table)} tensors exceed the limit of {limits.max_tensors}")
    body = buf[body_start:]
    tensors: dict[str, np.ndarray] = {}
    for entry in table:
        name, array = _decode_entry(entry, body, limits)
        if name in tensors:
            raise ProtocolError(f"tensor {name!r} appears twice")
        tensors[name] = array
    return TensorFrame(
        id=header.get("id"),  # type: ignore[arg-type]
        type=header.get("type"),  # type: ignore[arg-type]
        tensors=tensors,
        model_name=header.get("model_name"),
        data=header.get("data", {}),
        options=header.get("options", {}),
    )


def _decode_entry(entry: Any, body: memoryview, limits: Limits) -> tuple[str, np.ndarray]:
    if not isinstance(entry, dict):
        raise ProtocolError("each tensor entry must be a JSON object")
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    offset, length = entry.get("offset"), entry.get("length")
    if not isinstance(name, str) or not name:
        raise ProtocolError("tensor 'name' must be a non-empty string")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise ProtocolError(
            f"tensor {name!r}: unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}"
        )
    if (
        not isinstance(shape, list)
        or len(shape) > limits.max_rank
        or not all(
            isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= limits.max_dim
            for d in shape
        )
    ):
        raise ProtocolError(
            f"tensor {name!r}: shape must be a list of at most {limits.max_rank} "
            f"integers in [0, {limits.max_dim}]"
        )
    # The element count ignoring zero dimensions must also be one numpy can
    # index, or reshape() fails even for an empty tensor ([0, 2**31-1, ...]).
    if math.prod(d for d in shape if d) > limits.max_frame_bytes:
        raise ProtocolError(
            f"tensor {name!r}: shape {shape} is larger than any frame "
            f"({limits.max_frame_bytes} bytes) can carry"
        )
    for label, value in (("offset", offset), ("length", length)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ProtocolError(f"tensor {name!r}: '{label}' must be a non-negative integer")
    itemsize = DTYPES[dtype].itemsize
    # math.prod on Python ints cannot overflow, so a "huge shape" is caught here, not in numpy.
    expected = math.prod(shape) * itemsize
    if expected != length:
        raise ProtocolError(
            f"tensor {name!r}: shape {shape} of {dtype} needs {expected} bytes, "
            f"header says {length}"
        )
    if offset + length > len(body):
        raise ProtocolError(
            f"tensor {name!r}: bytes [{offset}, {offset + length}) run past the "
            f"frame's {len(body)} bytes"
        )
    array = np.frombuffer(body[offset : offset + length], dtype=DTYPES[dtype]).reshape(shape).copy()
    return name, array


def decode(message: str | bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Frame:
    """Decode either kind of WebSocket message (text -> Control, binary -> TensorFrame)."""
    if isinstance(message, str):
        return decode_control(message, limits)
    return decode_tensors(message, limits)


def peek_id(
    message: str | bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS
) -> str | None:
    """The ``id`` a (possibly malformed) frame claims, or None.  Never raises.

    Lets the session fail the request a broken reply was meant for at once,
    instead of leaving it to its timeout.
    """
    try:
        if isinstance(message, str):
            if len(message) > limits.max_control_bytes:
                return None
            obj = _loads(message, "control frame")
        else:
            buf = memoryview(message).cast("B")
            if len(buf) < _HEADER_LEN.size:
                return None
            (head_len,) = _HEADER_LEN.unpack_from(buf, 0)
            if head_len > limits.max_header_bytes or _HEADER_LEN.size + head_len > len(buf):
                return None
            obj = _loads(bytes(buf[_HEADER_LEN.size : _HEADER_LEN.size + head_len]), "header")
    except (ProtocolError, TypeError, ValueError):
        return None
    rid = obj.get("id") if isinstance(obj, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= 128 else None


def encode(frame: Frame) -> str | bytes:
    return encode_control(frame) if isinstance(frame, Control) else encode_tensors(frame)


def error_frame(request_id: str, code: str, message: str) -> Control:
    return Control(id=request_id, type="error", data={"code": code, "message": message})
