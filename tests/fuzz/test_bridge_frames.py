"""Structure-aware property fuzzing of the bridge decoder and session.

Byte mutation rarely turns ``"type": "run"`` into ``"type": []``; these
strategies build JSON headers in which every field is either valid or any
JSON value (huge integers included), with random tensor bytes, and send them
as binary and as text frames.  Properties: ``frames.decode`` raises nothing
but ProtocolError, and ``BridgeSession.receive`` raises nothing at all (every
frame is an event; a malformed one is answered with BAD_REQUEST).  The
``@example``s are the frames that once escaped (issue 20), replayed every run.
"""

from __future__ import annotations

import contextlib
import json
import struct

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from webaccel.bridge import frames
from webaccel.bridge.session import BridgeSession, Malformed
from webaccel.errors import ProtocolError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(-(2**130), 2**130)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def either(valid: st.SearchStrategy) -> st.SearchStrategy:
    return st.one_of(valid, valid, json_values)


dims = st.integers(0, 4) | st.sampled_from([0, 2**31 - 1, 2**31, 2**63, 2**64, 2**100])
entries = st.fixed_dictionaries(
    {
        "name": either(st.sampled_from(["x", "y", ""])),
        "dtype": either(st.sampled_from(sorted(frames.DTYPES))),
        "shape": either(st.lists(dims, max_size=9)),
        "offset": either(st.integers(0, 40) | st.just(2**64)),
        "length": either(st.integers(0, 40)),
    }
)
headers = st.fixed_dictionaries(
    {
        "id": either(st.sampled_from(["r1", "h", "x" * 129])),
        "type": either(st.sampled_from(sorted(frames.MESSAGE_TYPES))),
    },
    optional={
        "tensors": either(st.lists(entries, max_size=3)),
        "model_name": either(st.text(max_size=4)),
        "data": either(
            st.fixed_dictionaries(
                {},
                optional={
                    "worker_id": either(st.text(max_size=4)),
                    "capabilities": either(st.dictionaries(st.text(max_size=3), json_values)),
                    "loaded": either(st.lists(st.text(max_size=3), max_size=2)),
                    "code": either(st.sampled_from(["LOAD_FAILED", "NOPE"])),
                    "message": either(st.text(max_size=5)),
                    "details": json_values,
                },
            )
        ),
        "options": either(st.dictionaries(st.text(max_size=3), json_values, max_size=2)),
    },
)


def binary(header: object, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head + body


def shape_frame(shape: list[int]) -> bytes:
    entry = {"name": "x", "dtype": "float32", "shape": shape, "offset": 0, "length": 0}
    return binary({"id": "r1", "type": "result", "tensors": [entry]})


ESCAPED_BINARY = [
    shape_frame([0, 2**100]),
    shape_frame([0] + [2**31 - 1] * 7),
    binary(
        {"id": "h", "type": "hello", "tensors": [], "data": {"worker_id": "w", "capabilities": {}}}
    ),
    binary({"id": "a", "type": [], "tensors": []}),
    binary(
        {
            "id": "a",
            "type": "result",
            "tensors": [{"name": "x", "dtype": [], "shape": [0], "offset": 0, "length": 0}],
        }
    ),
]
ESCAPED_TEXT = ['{"id": "a", "type": []}', '{"id": "a", "type": {}}']


def check_session(message: str | bytes) -> None:
    s = BridgeSession()
    s.request_run("m", {})  # "r1" is pending
    event = s.receive(message)  # must not raise
    if isinstance(event, Malformed):
        answer = json.loads(event.answer())
        assert answer["type"] == "error" and answer["data"]["code"] == "BAD_REQUEST"


def check_decode(message: str | bytes) -> None:
    with contextlib.suppress(ProtocolError):
        frames.decode(message)


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(headers, st.binary(max_size=48))
@example(None, ESCAPED_BINARY[0])
def test_binary_frames_of_any_shape(header: dict | None, body: bytes) -> None:
    message = body if header is None else binary(header, body)
    check_decode(message)
    check_session(message)


@FUZZ
@given(headers)
def test_text_frames_of_any_shape(header: dict) -> None:
    header.pop("tensors", None)
    message = json.dumps(header)
    check_decode(message)
    check_session(message)


def test_frames_that_once_escaped_are_now_events() -> None:
    for message in [*ESCAPED_BINARY, *ESCAPED_TEXT]:
        check_decode(message)
        s = BridgeSession()
        assert isinstance(s.receive(message), Malformed), message
