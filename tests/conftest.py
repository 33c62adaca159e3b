"""Shared fixtures.  Browser tests reuse one accelerator per module to save start-ups."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def accelerator():
    from webaccel.api import WebAccelerator

    acc = WebAccelerator(max_connections=1)
    yield acc
    acc.shutdown()


@pytest.fixture(scope="module")  # not session: pool tests check no browser outlives them
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


class ServeProcess:
    """A real ``webaccel serve`` in a subprocess, with its own WEBACCEL_HOME; it is up
    once its state file (``serve.json``: URL and master key) exists."""

    def __init__(self, home, args, env=None):
        import os
        import subprocess
        import sys

        self.home = home
        self.state_file = home / "serve.json"
        self.log = home / "serve.log"
        self.env = {**os.environ, "WEBACCEL_HOME": str(home),
                    "WEBACCEL_METRICS_DB": str(home / "metrics.duckdb"), **(env or {})}
        self.env.pop("WEBACCEL_MASTER_KEY", None)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "webaccel.cli", "serve", "--port", "0", *args],
                stdout=log, stderr=subprocess.STDOUT, env=self.env,
            )

    def wait_ready(self, timeout: float = 60.0) -> dict:
        import json
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"webaccel serve exited {self.proc.returncode}:\n"
                                     + self.output())
            if self.state_file.exists():
                self.state = json.loads(self.state_file.read_text())
                self.url, self.master_key = self.state["url"], self.state["master_key"]
                return self.state
            time.sleep(0.05)
        raise AssertionError("webaccel serve did not write its state file in time:\n"
                             + self.output())

    def wait_output(self, text: str, timeout: float = 10.0) -> str:
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if text in out:
                return out
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in the output of webaccel serve:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig=None, timeout: float = 30.0) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        return self.proc.wait(timeout)


@pytest.fixture(scope="module")
def serve_process(tmp_path_factory):
    """``serve_process(*args, env=None)`` -> a started :class:`ServeProcess` (each
    stopped with SIGTERM at the end of the module)."""
    started: list[ServeProcess] = []

    def start(*args: str, env: dict[str, str] | None = None,
              built_models: bool = False) -> ServeProcess:
        """``built_models``: the new home shares the models built already (a symlink)."""
        from webaccel import paths

        home = tmp_path_factory.mktemp("serve-home")
        if built_models:
            (home / "models").symlink_to(paths.subdir("models"))
        proc = ServeProcess(home, args, env)
        started.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in started:
        try:
            proc.stop()
        except Exception:  # noqa: BLE001 - a hung server: kill it, never leave it behind
            proc.proc.kill()
            proc.proc.wait(10)
