"""Byte-level tests of the bridge frames: round trips and malformed input."""

from __future__ import annotations

import contextlib
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from webaccel.bridge import frames
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.errors import ErrorCode, ProtocolError

DTYPES = sorted(frames.DTYPES)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)


@st.composite
def tensor_dicts(draw):
    count = draw(st.integers(0, 4))
    out = {}
    for name in draw(st.lists(names, min_size=count, max_size=count, unique=True)):
        dtype = frames.DTYPES[draw(st.sampled_from(DTYPES))]
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
        out[name] = draw(hnp.arrays(dtype, shape))
    return out


@settings(max_examples=200, deadline=None)
@given(tensor_dicts(), st.sampled_from(["run", "result"]), st.text(min_size=1, max_size=30))
def test_tensor_frame_round_trip(tensors, kind, request_id):
    frame = TensorFrame(
        id=request_id,
        type=kind,
        tensors=tensors,
        model_name="m/fp32/wasm",
        data={"page_ms": 1.5},
        options={"k": [1, 2]},
    )
    decoded = frames.decode(frames.encode(frame))
    assert isinstance(decoded, TensorFrame)
    assert (decoded.id, decoded.type, decoded.model_name) == (request_id, kind, "m/fp32/wasm")
    assert decoded.data == {"page_ms": 1.5} and decoded.options == {"k": [1, 2]}
    assert list(decoded.tensors) == list(tensors)
    for name, arr in tensors.items():
        got = decoded.tensors[name]
        assert got.dtype == frames.DTYPES[frames.dtype_name(arr.dtype)]
        assert got.shape == arr.shape
        np.testing.assert_array_equal(got, arr)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(sorted(frames.MESSAGE_TYPES)),
    st.text(min_size=1, max_size=20),
    st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_control_round_trip(kind, request_id, data):
    msg = Control(id=request_id, type=kind, model_name="minilm", platform="wasm", data=data)
    assert frames.decode(frames.encode(msg)) == msg


def test_layout_is_header_length_json_then_aligned_bytes():
    arr = np.array([1, 2, 3], dtype=np.int64)
    blob = frames.encode_tensors(TensorFrame(id="r1", type="run", tensors={"x": arr}))
    (head_len,) = struct.unpack(">I", blob[:4])
    header = json.loads(blob[4 : 4 + head_len])
    assert header["tensors"] == [
        {"name": "x", "dtype": "int64", "shape": [3], "offset": 0, "length": 24}
    ]
    assert (4 + head_len) % 8 == 0  # tensor bytes start 8-aligned in the message
    assert blob[4 + head_len :] == arr.astype("<i8").tobytes()


def test_big_endian_input_goes_out_little_endian():
    arr = np.array([1.5, -2.0], dtype=">f4")
    decoded = frames.decode(frames.encode(TensorFrame(id="a", type="run", tensors={"x": arr})))
    np.testing.assert_array_equal(decoded.tensors["x"], arr)
    assert decoded.tensors["x"].dtype == np.dtype("<f4")


def _binary(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + body


GOOD_ENTRY = {"name": "x", "dtype": "float32", "shape": [2], "offset": 0, "length": 8}

MALFORMED = {
    "empty": b"",
    "short length": b"\x00\x00",
    "truncated header": struct.pack(">I", 100) + b'{"id":',
    "bad json": struct.pack(">I", 5) + b"{nope",
    "header not object": _binary([1, 2]),  # type: ignore[arg-type]
    "no tensors": _binary({"id": "a", "type": "run"}),
    "unknown dtype": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "dtype": "complex"}]}, b"\0" * 8
    ),
    "wrong length": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "length": 4}]}, b"\0" * 8
    ),
    "past the end": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "offset": 4}]}, b"\0" * 8
    ),
    "huge shape": _binary(
        {
            "id": "a",
            "type": "run",
            "tensors": [{**GOOD_ENTRY, "shape": [2**62, 2**62], "length": 8}],
        },
        b"\0" * 8,
    ),
    "negative dim": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "shape": [-2], "length": 8}]},
        b"\0" * 8,
    ),
    "bool dim": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "shape": [True, 2]}]}, b"\0" * 8
    ),
    "rank too high": _binary(
        {"id": "a", "type": "run", "tensors": [{**GOOD_ENTRY, "shape": [1] * 9 + [2]}]}, b"\0" * 8
    ),
    "duplicate name": _binary(
        {"id": "a", "type": "run", "tensors": [GOOD_ENTRY, GOOD_ENTRY]}, b"\0" * 8
    ),
    "missing id": _binary({"type": "run", "tensors": []}),
    "unknown type": _binary({"id": "a", "type": "explode", "tensors": []}),
    "NaN in json": struct.pack(">I", 3) + b"NaN",
}


@pytest.mark.parametrize("blob", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_binary_frames_are_bad_request(blob):
    with pytest.raises(ProtocolError) as info:
        frames.decode(blob)
    assert info.value.code == ErrorCode.BAD_REQUEST


@pytest.mark.parametrize(
    "text",
    [
        "",
        "nope",
        "[]",
        '{"type": "run"}',
        '{"id": "", "type": "run"}',
        '{"id": "a", "type": "boom"}',
        '{"id": "a", "type": "run", "data": []}',
        '{"id": "a", "type": "run", "extra": 1}',
        '{"id": 5, "type": "run"}',
        "[" * 100000,
    ],
)
def test_malformed_control_frames_are_bad_request(text):
    with pytest.raises(ProtocolError):
        frames.decode(text)


def test_frame_size_limits():
    limits = frames.Limits(max_frame_bytes=64, max_header_bytes=32)
    big = frames.encode(TensorFrame(id="a", type="run", tensors={"x": np.zeros(100, np.float32)}))
    with pytest.raises(ProtocolError, match="exceeds"):
        frames.decode(big, limits)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_protocol_error(blob):
    with contextlib.suppress(ProtocolError):
        frames.decode(blob)


@settings(max_examples=200, deadline=None)
@given(tensor_dicts(), st.data())
def test_truncated_frames_are_rejected(tensors, data):
    blob = frames.encode(TensorFrame(id="a", type="run", tensors=tensors))
    cut = data.draw(st.integers(0, len(blob) - 1))
    try:
        frames.decode(blob[:cut])
    except ProtocolError:
        return
    # Only trailing padding/zero-size tensors may be cut without losing data.
    assert all(a.nbytes == 0 for a in tensors.values()) or cut >= len(blob) - 7


def test_unsendable_dtype_is_a_clear_error():
    with pytest.raises(ProtocolError, match="cannot travel"):
        frames.encode(TensorFrame(id="a", type="run", tensors={"x": np.array(["s"])}))
