"""The README, walked top to bottom on a fresh ``$WEBACCEL_HOME``: every Python
block and every shell line in it, executed as written, in order.

* ```python blocks run one by one, each in a fresh interpreter (so each must be
  complete on its own, as a reader copying one would need), with the README's
  line numbers in tracebacks.
* ```sh / ```bash / ```shell lines run in one long-lived bash (so a variable set
  by one line, ``cid=$(...)``, is there for the next), each must exit 0.
  ```console blocks: lines after ``$ `` are commands, the rest is output.
* Blocks in other languages (```text, ```json, none) are output or diagrams.
* ``<!-- readme-walk: background; ready: URL -->`` right before a shell block:
  its lines are long-running (``webaccel serve``); each starts in the
  background, the walk waits until URL answers 200, and they are stopped at the
  next heading of their section's level or above.
* Lines in :data:`SKIPPED` do not run, each for the reason given there; a
  skipped line the README no longer has fails the walk.
* Where the README shows what to expect, :data:`PYTHON_CHECKS` and
  :data:`SHELL_CHECKS` check it loosely; a ``--json`` line's output must parse,
  and keys its comment quotes (``# {"embedding": [...], "browser", ...}``) must be
  in it.

The working directory is a temporary folder holding the inputs the README
names as the reader's own files (``photo.jpg``, ``speech.wav``).  ``WEBACCEL_HOME``
is a new empty folder, and so is the browsers' profile folder
(``WEBACCEL_PROFILES``; as root the profiles otherwise live in the browser
user's home, shared with every run): block store, names, metrics database,
profiles and their OPFS model caches all start empty.  The one thing shared is
the built ONNX files: ``$WEBACCEL_HOME/models`` is a symlink to the ones built
already (by ``make setup`` and the other tests), since exporting all five
models from their weights takes many minutes; tests/test_openai_api.py does
the same.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# The models the README's examples use, built in the shared cache before the walk.
README_MODELS = ("minilm", "smollm2", "nsfw-cnn", "vit-saliency", "whisper-tiny-en")

# Where the built models are: read at import (collection), before any fixture of
# another test directory points $WEBACCEL_HOME elsewhere for the session.
BUILT_HOME = Path(os.environ.get("WEBACCEL_HOME") or Path.home() / ".cache" / "webaccel")

# The only README lines the walk does not run: the line as written -> why.
SKIPPED = {
    "make demo": "installs apt packages, npm assets, a venv and the models as root: "
    "the environment this test already runs in",
    "make test": "runs the whole test suite, this test included",
}

# Python blocks (found by a piece of their code) -> expressions true in the block's
# namespace afterwards, and patterns its printed output must contain.
PYTHON_CHECKS: dict[str, dict[str, list[str]]] = {
    'acc.accelerate("minilm", ["A man plays guitar."': {
        "true": [
            'out["embeddings"].shape == (2, 384)',
            'out["embeddings"].dtype == "float32"',
            'abs(float((out["embeddings"] ** 2).sum(axis=1).max()) - 1) < 1e-4',  # L2-normalised
            'out["browser"] == "chromium"',
        ],
    },
    'pipeline("feature-extraction")': {"true": ["vectors.shape == (2, 384)"]},
    "ResourcePoolBridgeIntegration(max_connections=2)": {
        "true": [
            'one["embeddings"].shape == (1, 384)',
            "all(isinstance(r, dict) for r in both)",
            '"regions" in both[1]["results"]',
        ],
        "printed": [r"^(wasm|webgpu) "],
    },
    "engine.accelerate(": {"printed": [r"'loaded': \['minilm/", r"'candidates'"]},
    'acc.generate("smollm2"': {"printed": ["Paris"]},
    "split_model(": {"printed": [r"^\(2, 384\)$", r"'model': 'minilm.stage1of2'"]},
    "from openai import OpenAI": {"printed": ["Paris"]},
}

# Shell lines (a regex matched at the start of the command, comment left out, whitespace
# normalised) -> patterns their stdout must contain.
SHELL_CHECKS: dict[str, list[str]] = {
    r'webaccel run smollm2 "What is the capital of France\?"': ["Paris"],
    r"webaccel run whisper-tiny-en speech\.wav$": ["(?i)fail better"],
    r"webaccel run nsfw-cnn photo\.jpg$": [r"^label: (sfw|nsfw|uncertain)$"],
    r"webaccel run vit-saliency photo\.jpg$": ["regions"],
    r"webaccel models split minilm --stages 2$": [r"minilm\.stage1of2: layers 3-5", r"cid \w+"],
    r"webaccel models list$": [r"\bminilm\b.*\byes\b", r"\bwhisper-tiny-en\b.*\byes\b"],
    r"echo hello \| webaccel add$": [r"^added (Qm\w+) \1$"],
    r"webaccel cat \$cid$": [r"^hello$"],
    r"webaccel car import hello\.car$": [r"^Qm\w+$"],
    r"curl -fsS http://127\.0\.0\.1:8700/health$": ['"status":"ok"'],
    r"curl -fsS http://127\.0\.0\.1:8700/v1/embeddings ": ['"object":"embedding"'],
}

RUN_LANGS = {"python", "sh", "bash", "shell", "console"}
TEXT_LANGS = {"", "text", "json"}
LINE_TIMEOUT_S = 240.0
READY_TIMEOUT_S = 180.0


# ---------------------------------------------------------------- the README, parsed
@dataclass
class Heading:
    level: int
    title: str
    line: int


@dataclass
class Block:
    lang: str
    code: str
    line: int  # README line of the block's first code line
    notes: dict[str, str] = field(default_factory=dict)

    def commands(self) -> list[tuple[int, str]]:
        """(README line, command) for each command of a shell block; a line ending
        in a backslash goes on on the next."""
        out: list[tuple[int, str]] = []
        pending, start = "", 0
        for i, raw in enumerate(self.code.splitlines()):
            text = raw
            if self.lang == "console":
                if not raw.startswith("$ ") and not pending:
                    continue  # output
                text = raw[2:] if raw.startswith("$ ") else raw
            if not pending:
                start = self.line + i
                if not text.strip() or text.lstrip().startswith("#"):
                    continue
            if text.endswith("\\"):
                pending += text[:-1] + " "
                continue
            out.append((start, pending + text))
            pending = ""
        assert not pending, f"README.md:{start}: a continued line never ends"
        return out


NOTE = re.compile(r"^\s*<!--\s*readme-walk:(.*?)-->\s*$")  # a line of its own


def parse(text: str) -> list[Heading | Block]:
    items: list[Heading | Block] = []
    lines = text.splitlines()
    notes: dict[str, str] = {}
    i = 0
    while i < len(lines):
        line = lines[i]
        fence = re.match(r"^```(\S*)\s*$", line)
        if fence:
            j = i + 1
            while not lines[j].startswith("```"):
                j += 1
            items.append(Block(fence[1].lower(), "\n".join(lines[i + 1 : j]) + "\n", i + 2, notes))
            notes, i = {}, j + 1
            continue
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        note = NOTE.search(line)
        if heading:
            items.append(Heading(len(heading[1]), heading[2].strip(), i + 1))
        if note:
            notes = {}
            for part in note[1].split(";"):
                key, _, value = part.strip().partition(":")
                notes[key.strip()] = value.strip()
        elif line.strip():
            notes = {}  # a note applies only to the block right after it
        i += 1
    return items


def split_comment(command: str) -> tuple[str, str]:
    """A shell line's command (whitespace normalised) and its ``# comment``."""
    quote = ""
    for i, ch in enumerate(command):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            return " ".join(command[:i].split()), command[i + 1 :].strip()
    return " ".join(command.split()), ""


# --------------------------------------------------------------------------- running
class Shell:
    """One bash for the whole walk: each command's output goes to its own files and
    its exit status comes back on bash's stdout."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.logs, self.n = logs, 0
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self.lines.put(line)

    def run(self, command: str, timeout: float) -> tuple[int, str, str]:
        self.n += 1
        out, err = self.logs / f"{self.n}.out", self.logs / f"{self.n}.err"
        assert self.proc.stdin is not None
        self.proc.stdin.write(
            f"{{ {command}\n}} >{shlex.quote(str(out))} 2>{shlex.quote(str(err))} </dev/null\n"
            f"echo __readme_walk__ {self.n} $?\n"
        )
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise TimeoutError(f"{command!r} still running after {timeout:.0f} s") from None
            m = re.match(rf"__readme_walk__ {self.n} (\d+)$", line.strip())
            if m:
                return int(m[1]), out.read_text(errors="replace"), err.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            stop(self.proc)


def stop(proc: subprocess.Popen) -> None:  # type: ignore[type-arg]
    """SIGTERM to the process's whole session, SIGKILL if it is still there after 30 s."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


RUNNER = r"""
import json, sys
src, checks = sys.argv[1], json.loads(sys.argv[2])
code = open(src).read()
scope = {"__name__": "__main__"}
exec(compile(code, sys.argv[3], "exec"), scope)
results = {c: bool(eval(c, scope)) for c in checks}
print("\n__readme_walk__ " + json.dumps(results), flush=True)
"""


def json_keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in json_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in json_keys(v)}
    return set()


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# -------------------------------------------------------------------------- fixtures
@pytest.fixture
def walk_env(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    from PIL import Image

    from webaccel.models import whisper

    # The built models, shared (see the module docstring); built here if missing.
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from webaccel.models import registry\n"
            f"for n in {README_MODELS!r}: registry.get(n).ensure_parts('fp32')\n"
            "registry.get('minilm').ensure_parts('int8')",
        ],
        env={**os.environ, "WEBACCEL_HOME": str(BUILT_HOME)},
        check=True,
        timeout=3600,
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(BUILT_HOME / "models", target_is_directory=True)
    # Fresh browser profiles, in a folder the browser user (as root) can enter.
    profiles = Path(tempfile.mkdtemp(prefix="webaccel-walk-profiles-"))
    profiles.chmod(profiles.stat().st_mode | stat.S_IRWXU | stat.S_IXGRP | stat.S_IXOTH)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    # The reader's own files that the README names.
    pixels = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype("uint8")
    Image.fromarray(pixels).save(cwd / "photo.jpg")
    shutil.copy(whisper.beckett_wav(), cwd / "speech.wav")
    # `webaccel` as installed: the console script's entry point, on this tree's code.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "webaccel"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m webaccel.cli "$@"\n')
    shim.chmod(0o755)
    env = {
        **os.environ,
        "WEBACCEL_HOME": str(home),
        "WEBACCEL_PROFILES": str(profiles),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p
        ),
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("WEBACCEL_METRICS_DB", "WEBACCEL_API_KEY", "COLUMNS"):
        env.pop(key, None)
    try:
        yield cwd, env
    finally:
        # The models page caches (GBs) and blocks go; the logs stay in tmp_path.
        shutil.rmtree(profiles, ignore_errors=True)
        shutil.rmtree(home / "blocks", ignore_errors=True)


# ------------------------------------------------------------------------------ walk
class Walk:
    """Runs the README's items in order and collects what went wrong, to report it all."""

    def __init__(self, cwd: Path, env: dict[str, str], logs: Path) -> None:
        self.cwd, self.env, self.logs = cwd, env, logs
        self.shell = Shell(cwd, env, logs)
        self.background: list[tuple[int, subprocess.Popen]] = []  # type: ignore[type-arg]
        self.level = 1  # the level of the section the walk is in
        self.failures: list[str] = []
        self.timings: list[tuple[float, str]] = []

    def failed(self, line: int, what: str, why: str, out: str = "", err: str = "") -> None:
        tail = "".join(
            f"\n  {name}: ...{text[-1500:]}"
            for name, text in (("stdout", out), ("stderr", err))
            if text
        )
        self.failures.append(f"README.md:{line}: {what}\n  {why}{tail}")

    def heading(self, heading: Heading) -> None:
        """Background processes end with their section."""
        for entry in [e for e in self.background if e[0] >= heading.level]:
            stop(entry[1])
            self.background.remove(entry)
        self.level = heading.level

    def python(self, block: Block) -> None:
        checks = next((v for k, v in PYTHON_CHECKS.items() if k in block.code), {})
        src = self.logs / f"block-{block.line}.py"
        # Blank lines ahead of the code: tracebacks name the README's lines.
        src.write_text("\n" * (block.line - 1) + block.code)
        argv = [sys.executable, "-c", RUNNER, str(src), json.dumps(checks.get("true", []))]
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                [*argv, str(README)],
                cwd=self.cwd,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=LINE_TIMEOUT_S,
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            self.failed(block.line, "python block", f"still running after {LINE_TIMEOUT_S} s")
            return
        finally:
            self.timings.append((time.monotonic() - t0, f"python block at line {block.line}"))
        out, _, result = proc.stdout.rpartition("__readme_walk__ ")
        if proc.returncode != 0 or not result:
            self.failed(block.line, "python block", f"exit {proc.returncode}", out, proc.stderr)
            return
        false = [c for c, ok in json.loads(result).items() if not ok]
        missing = [p for p in checks.get("printed", []) if not re.search(p, out, re.M)]
        if false or missing:
            why = f"not true: {false}; not printed: {missing}"
            self.failed(block.line, "python block", why, out, proc.stderr)

    def start_background(self, line: int, command: str, url: str) -> None:
        log = self.logs / f"background-{line}.log"
        t0 = time.monotonic()
        with open(log, "wb") as sink:
            proc = subprocess.Popen(
                ["bash", "-c", command],
                cwd=self.cwd,
                env=self.env,
                stdout=sink,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.background.append((self.level, proc))
        deadline = t0 + READY_TIMEOUT_S
        why = None
        while why is None:
            if proc.poll() is not None:
                why = f"exited {proc.returncode} while starting"
                break
            try:
                if httpx.get(url, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                why = f"{url} not 200 after {READY_TIMEOUT_S:.0f} s"
            time.sleep(0.5)
        self.timings.append((time.monotonic() - t0, f"{command} (until {url} answers)"))
        if why:
            self.failed(line, command, why, log.read_text(errors="replace"))

    def shell_line(self, line: int, command: str) -> None:
        bare, comment = split_comment(command)
        t0 = time.monotonic()
        rc, out, err = self.shell.run(command, LINE_TIMEOUT_S)
        self.timings.append((time.monotonic() - t0, command))
        if rc != 0:
            self.failed(line, command, f"exit {rc}", out, err)
            return
        problems = [
            f"no match for {p!r}"
            for k, patterns in SHELL_CHECKS.items()
            if re.match(k, bare)
            for p in patterns
            if not re.search(p, out, re.M)
        ]
        if "--json" in bare.split():
            try:
                docs = [json.loads(x) for x in out.splitlines() if x.strip()]
            except ValueError as exc:
                problems.append(f"--json output is not JSON lines: {exc}")
            else:
                keys = set().union(*map(json_keys, docs)) if docs else set()
                named = re.findall(r'"(\w+)"', comment)  # the keys the comment promises
                problems += [f"no {k!r} in the JSON" for k in named if k not in keys]
        if problems:
            self.failed(line, command, "; ".join(problems), out, err)

    def walk(self, items: list[Heading | Block]) -> None:
        for item in items:
            if isinstance(item, Heading):
                self.heading(item)
            elif item.lang == "python":
                self.python(item)
            elif item.lang in RUN_LANGS:
                for line, command in item.commands():
                    bare = split_comment(command)[0]
                    if bare in SKIPPED:
                        self.timings.append((0.0, f"skipped: {bare} ({SKIPPED[bare]})"))
                    elif "background" in item.notes:
                        url = item.notes.get("ready")
                        assert url, f"README.md:{line}: a background block needs ready: URL"
                        self.start_background(line, command, url)
                    else:
                        self.shell_line(line, command)

    def close(self) -> None:
        for _, proc in self.background:
            stop(proc)
        self.shell.close()


def check_tables(items: list[Heading | Block]) -> None:
    """The test's own lists name only what the README has, and every block's language
    is one the walk knows."""
    blocks = [b for b in items if isinstance(b, Block)]
    unknown = {b.lang for b in blocks} - RUN_LANGS - TEXT_LANGS
    assert not unknown, f"README blocks in languages the walk does not know: {unknown}"
    commands = [
        split_comment(c)[0]
        for b in blocks
        if b.lang in RUN_LANGS - {"python"}
        for _, c in b.commands()
    ]
    for key in SKIPPED:
        assert key in commands, f"SKIPPED names {key!r}, which the README no longer has"
    for key in SHELL_CHECKS:
        found = sum(bool(re.match(key, c)) for c in commands)
        assert found == 1, f"SHELL_CHECKS key {key!r} matches {found} README lines"
    for key in PYTHON_CHECKS:
        found = sum(key in b.code for b in blocks if b.lang == "python")
        assert found == 1, f"PYTHON_CHECKS key {key!r} is in {found} Python blocks"


def test_readme_runs_top_to_bottom(walk_env: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    cwd, env = walk_env
    items = parse(README.read_text())
    check_tables(items)
    if port_taken(8700):
        pytest.fail("127.0.0.1:8700 is in use, and the README serves on it: stop that server")
    logs = tmp_path / "logs"
    logs.mkdir()
    walk = Walk(cwd, env, logs)
    started = time.monotonic()
    try:
        walk.walk(items)
    except TimeoutError as exc:  # the shell is gone: the walk cannot go on
        walk.failures.append(f"the walk stopped: {exc}")
    finally:
        walk.close()
        total = time.monotonic() - started
        report = "\n".join(f"{s:7.1f} s  {what}" for s, what in walk.timings)
        (tmp_path / "walk.txt").write_text(f"{report}\n{total:7.1f} s  in all\n")
        print(f"\nREADME walk, {total:.0f} s in all:\n{report}")
    failures = walk.failures
    assert not failures, f"{len(failures)} README step(s) failed:\n\n" + "\n\n".join(failures)
