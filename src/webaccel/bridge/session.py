"""One bridge connection's state, seen from the server.  Pure: no I/O.

Like ``websockets``' sans-I/O protocol: the driver feeds every received
message to :meth:`BridgeSession.receive`, gets back one event, and sends
what the ``request_*`` methods return.  Request ids are minted here and a
reply is matched to its request, so a late or unknown reply is reported as
:class:`Stale` instead of being delivered to the wrong caller.

:meth:`BridgeSession.receive` never raises for what a peer sends: whatever
the bytes, a malformed frame becomes a :class:`Malformed` event carrying a
``BAD_REQUEST`` error and the text frame to answer with
(:meth:`Malformed.answer`); the driver sends it and keeps the socket.  If the
bad frame names a pending request (a reply whose tensors do not parse), that
request fails with the same error instead of waiting for its timeout.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from webaccel.bridge import frames
from webaccel.bridge.frames import Control, TensorFrame
from webaccel.errors import ProtocolError, WebAccelError, error_from_code


@dataclass(frozen=True)
class Hello:
    worker_id: str
    capabilities: dict[str, Any]
    loaded: tuple[str, ...]  # sessions still loaded in the page (after a reconnect)


@dataclass(frozen=True)
class Reply:
    request_id: str
    frame: frames.Frame


@dataclass(frozen=True)
class Failure:
    request_id: str
    error: WebAccelError


@dataclass(frozen=True)
class StreamStep:
    request_id: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    data: dict[str, Any]


@dataclass(frozen=True)
class Malformed:
    """A frame that does not parse or is not allowed from a page (``BAD_REQUEST``).

    ``request_id`` is the pending request it claimed to answer (now failed
    with ``error``), else None.
    """

    error: ProtocolError
    request_id: str | None = None

    def answer(self) -> str:
        """The error frame to send back to the page."""
        rid = self.request_id or "invalid"
        return frames.encode_control(
            frames.error_frame(rid, str(self.error.code), self.error.message)
        )


@dataclass(frozen=True)
class Stale:
    """A reply for a request that is no longer pending (timed out or cancelled)."""

    request_id: str


Event = Hello | Reply | Failure | StreamStep | Heartbeat | Stale | Malformed

_FINAL_TYPES = frozenset({"loaded", "result", "unloaded", "done", "capabilities"})


@dataclass
class BridgeSession:
    limits: frames.Limits = frames.DEFAULT_LIMITS
    pending: dict[str, str] = field(default_factory=dict)  # request id -> request type
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def _new_id(self, kind: str) -> str:
        request_id = f"{kind[0]}{next(self._ids)}"
        self.pending[request_id] = kind
        return request_id

    # ------------------------------------------------------------- requests
    def request(
        self,
        kind: str,
        *,
        model_name: str | None = None,
        data: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        """A JSON request (load_model, unload, capabilities refresh ...): ``(id, text frame)``."""
        request_id = self._new_id(kind)
        msg = Control(
            id=request_id, type=kind, model_name=model_name, data=data or {}, options=options or {}
        )
        return request_id, frames.encode_control(msg)

    def request_run(
        self,
        key: str,
        inputs: dict[str, np.ndarray],
        *,
        output_names: list[str] | None = None,
        kind: str = "run",
        options: dict[str, Any] | None = None,
    ) -> tuple[str, bytes]:
        request_id = self._new_id(kind)
        data = {"output_names": output_names} if output_names else {}
        frame = TensorFrame(
            id=request_id,
            type=kind,
            tensors=inputs,
            model_name=key,
            data=data,
            options=options or {},
        )
        return request_id, frames.encode_tensors(frame)

    def cancel(self, request_id: str) -> str | None:
        """Forget ``request_id``; returns the cancel frame to send if it was pending."""
        if self.pending.pop(request_id, None) is None:
            return None
        return frames.encode_control(Control(id=request_id, type="cancel"))

    @staticmethod
    def heartbeat(seq: int) -> str:
        return frames.encode_control(Control(id=f"hb{seq}", type="heartbeat"))

    # ------------------------------------------------------------- receiving
    def receive(self, message: str | bytes | bytearray | memoryview) -> Event:
        """Decode one message from the page; a malformed one becomes :class:`Malformed`."""
        try:
            try:
                return self._receive(message)
            except RecursionError:
                # JSON nested just under the parser's limit can still overflow the
                # stack of a caller that is itself deep (the asyncio driver).
                raise ProtocolError("frame nests too deeply") from None
        except ProtocolError as exc:
            request_id = frames.peek_id(message, self.limits)
            if request_id is not None and self.pending.pop(request_id, None) is not None:
                return Malformed(exc, request_id)
            return Malformed(exc)

    def _receive(self, message: str | bytes | bytearray | memoryview) -> Event:
        frame = frames.decode(message, self.limits)
        if frame.type == "hello":
            if not isinstance(frame, Control):
                raise ProtocolError("hello must be a JSON text frame, not a binary frame")
            worker_id = frame.data.get("worker_id")
            caps = frame.data.get("capabilities", {})
            loaded = frame.data.get("loaded", [])
            if (
                not isinstance(worker_id, str)
                or not isinstance(caps, dict)
                or not isinstance(loaded, list)
                or not all(isinstance(k, str) for k in loaded)
            ):
                raise ProtocolError(
                    "hello needs data.worker_id (string), data.capabilities (object) "
                    "and data.loaded (list of strings)"
                )
            return Hello(worker_id, caps, tuple(loaded))
        if frame.type == "heartbeat":
            return Heartbeat(frame.data)
        if frame.id not in self.pending:
            return Stale(frame.id)
        if frame.type == "stream":
            return StreamStep(frame.id, frame.data)
        if frame.type == "error":
            self.pending.pop(frame.id)
            # Only strings are taken: str() of a deeply nested value could
            # overflow the stack (and tell the caller nothing).
            code = frame.data.get("code")
            message_text = frame.data.get("message")
            details = frame.data.get("details")
            return Failure(
                frame.id,
                error_from_code(
                    code if isinstance(code, str) else "INTERNAL",
                    message_text
                    if isinstance(message_text, str)
                    else "the page reported an error without a message",
                    details if isinstance(details, dict) else None,
                ),
            )
        if frame.type in _FINAL_TYPES:
            self.pending.pop(frame.id)
            return Reply(frame.id, frame)
        raise ProtocolError(f"a page may not send frames of type {frame.type!r}")
