"""How much memory a worker takes on this host: the RSS of its browser's process tree.

A worker the pool launched here (:class:`~webaccel.browsers.worker.BrowserWorker`,
the Node WebGPU worker) has ``.process``, the browser it started; the browser's
helpers (renderers, the GPU process, utilities, a Chromium zygote) are its
descendants.  Their resident set sizes summed are what that worker costs the
host.  Pages two processes share (the browser binary, shared memory between
the browser and its renderer) count once per process, so the sum is an upper
bound; it is what the kernel's OOM killer and ``ps`` see, and it is readable for
a browser that runs as another account (``/proc/PID/statm`` is world-readable,
unlike the ``smaps`` a proportional size needs).

A worker with no local process -- a browser that joined from another host, a
Grid node -- is not measured: :func:`worker_rss` gives None.

These functions block (a few ``/proc`` reads, ~ms): the pool calls them in a
thread, from its heartbeat task and around each model load, never in its actor.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import psutil

MemoryProbe = Callable[[Any], int | None]


def process_tree_rss(pid: int) -> int | None:
    """RSS bytes of ``pid`` and all its descendants, summed; None if ``pid`` is gone."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return None
    total, seen = 0, 0
    for proc in procs:
        with contextlib.suppress(psutil.Error):  # a helper that exited meanwhile
            total += proc.memory_info().rss
            seen += 1
    return total if seen else None


def worker_rss(worker: Any) -> int | None:
    """The RSS of ``worker``'s local browser process tree, or None (nothing local to measure,
    or its browser has exited)."""
    proc = getattr(worker, "process", None)
    pid = getattr(proc, "pid", None)
    if not isinstance(pid, int) or getattr(proc, "returncode", None) is not None:
        return None
    return process_tree_rss(pid)
