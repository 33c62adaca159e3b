"""The in-page CID loader (``web/cidfetch.mjs``) and its browser bundle.

``cidfetch.mjs`` imports multiformats, @ipld/dag-pb and ipfs-unixfs by bare
name: Node resolves them from the repo's ``node_modules``; a browser needs one
file, built at set-up by esbuild (``build_bundle``), never fetched from a CDN.
The worker page can use ``cidFetchModel(fallback)`` as its ``fetchModel``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from webaccel.errors import BackendUnavailableError

WEB_DIR = Path(__file__).with_name("web")
SOURCE = WEB_DIR / "cidfetch.mjs"
BUNDLE_NAME = "cidfetch.bundle.mjs"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def esbuild_command(root: Path | None = None) -> list[str]:
    root = root or repo_root()
    for cand in (root / "node_modules" / ".bin" / "esbuild",
                 root / "node_modules" / "esbuild" / "bin" / "esbuild"):
        if cand.exists() and os.access(cand, os.X_OK):
            return [str(cand)]  # a native binary or a node script with a shebang
    found = shutil.which("esbuild")
    if found:
        return [found]
    raise BackendUnavailableError(
        "esbuild is missing: run `npm install --no-audit --no-fund` at the repo root")


def build_bundle(out_dir: str | Path, *, minify: bool = True) -> Path:
    """Bundle ``cidfetch.mjs`` and its npm dependencies into one browser ES module."""
    out = Path(out_dir) / BUNDLE_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*esbuild_command(), str(SOURCE), "--bundle", "--format=esm", "--platform=browser",
           "--target=es2022", f"--outfile={out}", "--log-level=warning"]
    if minify:
        cmd.append("--minify")
    r = subprocess.run(cmd, cwd=repo_root(), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise BackendUnavailableError(f"esbuild failed: {r.stderr[-2000:]}")
    return out
