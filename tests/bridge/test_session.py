"""The pure bridge session: request ids, replies, failures, stale replies."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from webaccel.bridge import frames
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.bridge.session import (
    BridgeSession,
    Failure,
    Hello,
    Malformed,
    Reply,
    Stale,
    StreamStep,
)
from webaccel.errors import ErrorCode, LoadFailedError, ModelNotFoundError, ProtocolError


def page_says(msg: Control | TensorFrame) -> str | bytes:
    return frames.encode(msg)


def test_hello_carries_capabilities_and_loaded_sessions():
    s = BridgeSession()
    ev = s.receive(
        page_says(
            Control(
                id="h",
                type="hello",
                data={
                    "worker_id": "w1",
                    "capabilities": {"wasm": {"simd": True}},
                    "loaded": ["m/fp32/wasm"],
                },
            )
        )
    )
    assert ev == Hello("w1", {"wasm": {"simd": True}}, ("m/fp32/wasm",))


def test_hello_without_worker_id_is_malformed():
    ev = BridgeSession().receive(page_says(Control(id="h", type="hello", data={})))
    assert isinstance(ev, Malformed) and isinstance(ev.error, ProtocolError)
    assert "worker_id" in ev.error.message


def test_run_reply_matches_its_request_once():
    s = BridgeSession()
    rid, blob = s.request_run("m", {"x": np.ones(2, np.float32)})
    sent = frames.decode(blob)
    assert sent.type == "run" and sent.model_name == "m" and sent.id == rid
    reply = TensorFrame(
        id=rid, type="result", tensors={"y": np.zeros(1, np.float32)}, data={"page_ms": 2.0}
    )
    ev = s.receive(page_says(reply))
    assert isinstance(ev, Reply) and ev.request_id == rid
    assert s.pending == {}
    assert s.receive(page_says(reply)) == Stale(rid)  # a duplicate is not delivered twice


def test_error_reply_becomes_typed_error():
    s = BridgeSession()
    rid, _ = s.request("load_model", model_name="m", data={"key": "m", "url": "/x"})
    ev = s.receive(
        page_says(
            Control(id=rid, type="error", data={"code": "LOAD_FAILED", "message": "bad onnx"})
        )
    )
    assert isinstance(ev, Failure) and isinstance(ev.error, LoadFailedError)
    assert ev.error.message == "bad onnx"


def test_unknown_error_code_maps_to_internal_and_known_codes_keep_type():
    s = BridgeSession()
    rid, _ = s.request("load_model")
    ev = s.receive(
        page_says(Control(id=rid, type="error", data={"code": "MODEL_NOT_FOUND", "message": "m"}))
    )
    assert isinstance(ev.error, ModelNotFoundError)


def test_cancelled_request_reply_is_stale_and_cancel_frame_sent_once():
    s = BridgeSession()
    rid, _ = s.request_run("m", {})
    cancel = s.cancel(rid)
    assert frames.decode(cancel) == Control(id=rid, type="cancel")
    assert s.cancel(rid) is None
    ev = s.receive(page_says(TensorFrame(id=rid, type="result", tensors={})))
    assert ev == Stale(rid)


def test_stream_steps_do_not_finish_the_request():
    s = BridgeSession()
    rid, _ = s.request_run("m", {}, kind="generate")
    ev = s.receive(page_says(Control(id=rid, type="stream", data={"token": 5})))
    assert ev == StreamStep(rid, {"token": 5}) and rid in s.pending


def test_page_may_not_send_server_types():
    s = BridgeSession()
    rid, _ = s.request_run("m", {})
    ev = s.receive(page_says(TensorFrame(id=rid, type="run", tensors={})))
    # The frame named a pending request: that request fails now, not at its timeout.
    assert isinstance(ev, Malformed) and ev.request_id == rid and s.pending == {}


def _binary(header: object) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack(">I", len(head)) + head


# Frames that once escaped the decoder as TypeError/ValueError/AssertionError
# (and so closed the socket with no code); each must become BAD_REQUEST.
ESCAPED = {
    "absurd shape [0, 2**100]": _binary(
        {
            "id": "a",
            "type": "result",
            "tensors": [
                {"name": "x", "dtype": "float32", "shape": [0, 2**100], "offset": 0, "length": 0}
            ],
        }
    ),
    "empty tensor, dims over intp": _binary(
        {
            "id": "a",
            "type": "result",
            "tensors": [
                {
                    "name": "x",
                    "dtype": "float32",
                    "shape": [0] + [2**31 - 1] * 7,
                    "offset": 0,
                    "length": 0,
                }
            ],
        }
    ),
    "binary hello": _binary(
        {"id": "h", "type": "hello", "tensors": [], "data": {"worker_id": "w", "capabilities": {}}}
    ),
    "type is a list (text)": '{"id": "a", "type": []}',
    "type is an object (text)": '{"id": "a", "type": {}}',
    "type is a list (binary)": _binary({"id": "a", "type": [], "tensors": []}),
    "dtype is a list": _binary(
        {
            "id": "a",
            "type": "result",
            "tensors": [{"name": "x", "dtype": [], "shape": [0], "offset": 0, "length": 0}],
        }
    ),
}


@pytest.mark.parametrize("message", ESCAPED.values(), ids=ESCAPED.keys())
def test_frames_that_used_to_escape_are_bad_request_events(message):
    s = BridgeSession()
    ev = s.receive(message)
    assert isinstance(ev, Malformed)
    assert ev.error.code == ErrorCode.BAD_REQUEST
    answer = json.loads(ev.answer())
    assert answer["type"] == "error" and answer["data"]["code"] == "BAD_REQUEST"
    assert answer["id"] == "invalid" and answer["data"]["message"] == ev.error.message


def test_error_details_that_are_not_an_object_are_dropped():
    s = BridgeSession()
    rid, _ = s.request("load_model")
    ev = s.receive(
        json.dumps({"id": rid, "type": "error", "data": {"code": "LOAD_FAILED", "details": [1]}})
    )
    assert isinstance(ev, Failure) and isinstance(ev.error, LoadFailedError)


def test_malformed_reply_to_a_pending_request_fails_it_and_answers_with_its_id():
    s = BridgeSession()
    rid, _ = s.request_run("m", {"x": np.ones(1, np.float32)})
    bad = _binary(
        {
            "id": rid,
            "type": "result",
            "tensors": [{"name": "y", "dtype": "float32", "shape": [2], "offset": 0, "length": 8}],
        }
    )  # promises 8 bytes, carries none
    ev = s.receive(bad)
    assert isinstance(ev, Malformed) and ev.request_id == rid and rid not in s.pending
    assert json.loads(ev.answer())["id"] == rid


def test_error_fields_must_be_strings_and_loaded_keys_too():
    s = BridgeSession()
    rid, _ = s.request("load_model")
    ev = s.receive(json.dumps({"id": rid, "type": "error", "data": {"code": [1], "message": {}}}))
    assert isinstance(ev, Failure) and ev.error.code == ErrorCode.INTERNAL
    assert ev.error.message == "the page reported an error without a message"
    hello = {"id": "h", "type": "hello", "data": {"worker_id": "w", "capabilities": {}}}
    hello["data"]["loaded"] = [["m"]]
    assert isinstance(s.receive(json.dumps(hello)), Malformed)
