"""Shared fixtures.  Browser tests reuse one accelerator per module to save start-ups."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def accelerator():
    from webaccel.api import WebAccelerator

    acc = WebAccelerator(max_connections=1)
    yield acc
    acc.shutdown()


@pytest.fixture(scope="session")
def software_gpu_accelerator():
    """Pages that load the WebGPU build even on a software adapter (SwiftShader here):
    WebGPU correctness runs on machines without a GPU."""
    from webaccel.api import WebAccelerator

    acc = WebAccelerator(max_connections=1, allow_software=True)
    yield acc
    acc.shutdown()


@pytest.fixture
def record_frames():
    """``record_frames(conn)`` -> a list that gets (time, event name) for every
    event the page's protocol session parses; the wrapping is undone after the test."""
    import time

    patched = []

    def record(conn):
        seen = []
        orig = conn.session.receive

        def receive(message):
            event = orig(message)
            seen.append((time.perf_counter(), type(event).__name__))
            return event

        conn.session.receive = receive
        patched.append((conn.session, orig))
        return seen

    yield record
    for session, orig in patched:
        session.receive = orig
