"""Progress of first-use waits, and quiet third-party libraries.

First use of a model can take from seconds to minutes: exporting it to ONNX,
quantizing, starting a browser, loading the model into the page (which fetches
its blocks and verifies each against its CID).  Each such wait is a
:func:`stage`: one line when it starts and one when it ends, on the
``webaccel.progress`` logger.  The library only logs; the ``webaccel`` command
shows them on stderr (:func:`show_on_stderr`): plain lines when stderr is a
pipe or a log file, a rich spinner with the elapsed time when it is a terminal.

The libraries those stages call print their own progress (tqdm bars from
transformers/gguf, torch's ``TracerWarning`` per traced branch, onnxruntime's
quantizer, which configures the root logger at INFO on import and then logs
every node).  :func:`quiet_third_party` turns that off: the stage line says
what is happening instead.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("webaccel.progress")

# Loggers of libraries that narrate at INFO what our stage line already says.
NOISY_LOGGERS = (
    "onnxruntime",
    "onnxruntime.quantization",
    "onnxruntime.quantization.matmul_nbits_quantizer",
    "transformers",
    "torch.onnx",
    "onnxscript",
    "onnx_ir",
    "accelerate",
    "huggingface_hub",
)


@contextlib.contextmanager
def stage(what: str, *, after_s: float = 0.0) -> Iterator[None]:
    """Log ``what ...`` and, when it ends, ``what: done in X s`` (or ``failed``).

    ``after_s``: say nothing unless the stage is still running after that long
    (for steps that are only slow the first time, e.g. a build that may be cached).
    """
    start = time.perf_counter()
    announced = threading.Event()
    lock = threading.Lock()

    def announce() -> None:
        with lock:
            if not announced.is_set():
                announced.set()
                log.info("%s ...", what, extra={"stage": what, "stage_event": "start"})

    timer: threading.Timer | None = None
    if after_s <= 0:
        announce()
    else:
        timer = threading.Timer(after_s, announce)
        timer.daemon = True
        timer.start()
    ok = False
    try:
        yield
        ok = True
    finally:
        if timer is not None:
            timer.cancel()
        with lock:
            shown = announced.is_set()
            announced.set()  # a late timer must not announce a finished stage
        if shown:
            log.info(
                "%s: %s %.1f s",
                what,
                "done in" if ok else "failed after",
                time.perf_counter() - start,
                extra={"stage": what, "stage_event": "end"},
            )


_quiet_lock = threading.Lock()


def silence_loggers() -> None:
    """Raise the noisy libraries' loggers to WARNING (idempotent)."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    hf_logging = sys.modules.get("transformers.utils.logging")
    if hf_logging is None:
        # Not imported (importing transformers takes ~2 s, which every `webaccel`
        # command paid for nothing): it reads these when it is.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        return
    with contextlib.suppress(Exception):
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


@contextlib.contextmanager
def quiet_third_party() -> Iterator[None]:
    """No tqdm bars, tracer/export warnings or quantizer logs from what runs inside."""
    with _quiet_lock:
        saved = {k: os.environ.get(k) for k in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    silence_loggers()
    # TQDM_DISABLE is read when tqdm is imported; if something imported it already,
    # its bars are turned off by default for the duration instead.
    std = sys.modules.get("tqdm.std")
    init = std.tqdm.__init__ if std is not None else None
    if std is not None:
        std.tqdm.__init__ = functools.partialmethod(init, disable=True)  # type: ignore[assignment,arg-type]
    try:
        with warnings.catch_warnings():
            # torch.jit.TracerWarning, torch.onnx's and transformers' UserWarnings
            # about traced branches: the exported graphs are checked by tests instead.
            warnings.simplefilter("ignore")
            yield
    finally:
        if std is not None:
            std.tqdm.__init__ = init  # type: ignore[method-assign]
        silence_loggers()  # the quantizer's import reconfigures logging at INFO
        with _quiet_lock:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


class _StderrProgress(logging.Handler):
    """Stage lines on stderr: plain lines, or a rich spinner per open stage on a terminal."""

    def __init__(self, console: Any) -> None:
        super().__init__(logging.INFO)
        self.console = console
        self.live = console.is_terminal
        self.open: list[tuple[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stage_name = getattr(record, "stage", None)
            event = getattr(record, "stage_event", None)
            message = record.getMessage()
            if not self.live or stage_name is None:
                self.console.print(message, highlight=False, markup=False)
                return
            if event == "start":
                status = self.console.status(message)
                status.start()
                self.open.append((stage_name, status))
                return
            for i in range(len(self.open) - 1, -1, -1):
                if self.open[i][0] == stage_name:
                    self.open.pop(i)[1].stop()
                    break
            self.console.print(message, highlight=False, markup=False)
            if self.open:  # an outer stage is still running: show its spinner again
                self.open[-1][1].start()
        except Exception:  # noqa: BLE001 - progress must never break the work
            self.handleError(record)


_handler: _StderrProgress | None = None


def show_on_stderr(console: Any | None = None) -> None:
    """Show :func:`stage` lines on stderr (the CLI calls this once)."""
    global _handler
    if _handler is not None:
        return
    if console is None:
        from webaccel.terminal import make_console

        console = make_console(stderr=True)
    _handler = _StderrProgress(console)
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    silence_loggers()


def is_terminal() -> bool:
    return sys.stderr.isatty()
