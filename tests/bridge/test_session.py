"""The pure bridge session: request ids, replies, failures, stale replies."""

from __future__ import annotations

import numpy as np
import pytest

from webaccel.bridge import frames
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.bridge.session import BridgeSession, Failure, Hello, Reply, Stale, StreamStep
from webaccel.errors import LoadFailedError, ModelNotFoundError, ProtocolError


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


def test_hello_without_worker_id_is_protocol_error():
    with pytest.raises(ProtocolError):
        BridgeSession().receive(page_says(Control(id="h", type="hello", data={})))


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
    with pytest.raises(ProtocolError):
        s.receive(page_says(TensorFrame(id=rid, type="run", tensors={})))
