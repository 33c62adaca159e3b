"""A small coverage-guided mutational fuzzer (the libFuzzer/atheris loop, in Python).

atheris has a wheel for this Python, but it is not among the project's
dependencies and ``atheris.Fuzz()`` hands the process to libFuzzer, which
exits the interpreter when its run ends, so it cannot run inside pytest
without a subprocess per target.  This does its loop in-process: run the target on an input while
``sys.settrace`` records the line-to-line arcs it takes in the modules under
test; keep any input that reaches a new arc; mutate kept inputs (bit flips,
interesting bytes and varints, inserts, deletes, duplications, splices);
report every input that raises something other than the allowed errors.

Runs are short (a time budget, a fixed RNG seed per run: reproducible
enough to debug, different inputs each day only if the seed changes).
Failing inputs are written to ``corpus/<target>/`` when ``WEBACCEL_FUZZ_SAVE``
is set, and every file there is replayed by the tests on every run.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

CORPUS = Path(__file__).parent / "corpus"

INTERESTING = [0x00, 0x01, 0x7F, 0x80, 0xFF, 0x0A, 0x12, 0x08, 0x22, 0x2A, 0x7B, 0x5B, 0x22]
BIG_VARINTS = [
    bytes([0xFF] * 9 + [0x01]),  # 2**64 - 1
    bytes([0x80] * 9 + [0x02]),  # over 64 bits
    bytes([0xFF, 0xFF, 0xFF, 0xFF, 0x0F]),  # 2**32 - 1
    bytes([0x80, 0x00]),  # not minimal
]


@dataclass
class Finding:
    data: bytes
    error: BaseException

    def __str__(self) -> str:
        return f"{type(self.error).__name__}: {self.error} on {self.data[:80]!r}"


@dataclass
class Result:
    runs: int = 0
    arcs: int = 0
    corpus: int = 0
    findings: list[Finding] = field(default_factory=list)


def _tracer(files: frozenset[str], arcs: set[tuple[str, int, int]]):
    def local(frame, event, arg):  # noqa: ANN001
        if event == "line":
            arcs.add((frame.f_code.co_filename, local.last.get(id(frame), 0), frame.f_lineno))
            local.last[id(frame)] = frame.f_lineno
        return local

    local.last = {}  # type: ignore[attr-defined]

    def global_(frame, event, arg):  # noqa: ANN001
        if frame.f_code.co_filename in files:
            return local
        return None

    return global_, local


def _mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        pos = rng.randint(0, len(buf))
        if op == 0 and buf:
            i = rng.randrange(len(buf))
            buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and buf:
            buf[rng.randrange(len(buf))] = rng.choice(INTERESTING)
        elif op == 2:
            buf[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and buf:
            end = min(len(buf), pos + rng.randint(1, 16))
            del buf[pos:end]
        elif op == 4 and buf:
            a = rng.randrange(len(buf))
            piece = buf[a : a + rng.randint(1, 32)]
            buf[pos:pos] = piece
        elif op == 5 and pool:
            other = rng.choice(pool)
            if other:
                a = rng.randrange(len(other))
                buf[pos:] = other[a:]
        elif op == 6:
            buf[pos:pos] = rng.choice(BIG_VARINTS)
        elif op == 7 and buf:
            del buf[rng.randint(0, len(buf) - 1) :]
        elif op == 8 and buf:
            i = rng.randrange(len(buf))
            buf[i] = (buf[i] + rng.choice([-1, 1, 16, -16])) % 256
    return bytes(buf[:4096])


def fuzz(
    target: Callable[[bytes], object],
    seeds: Iterable[bytes],
    *,
    modules: Iterable[object],
    allowed: tuple[type[BaseException], ...],
    seconds: float,
    seed: int = 0,
    max_findings: int = 20,
) -> Result:
    """Fuzz ``target`` for ``seconds``; ``modules`` are traced for coverage."""
    files = frozenset(str(getattr(m, "__file__", m)) for m in modules)
    rng = random.Random(seed)
    arcs: set[tuple[str, int, int]] = set()
    pool: list[bytes] = []
    result = Result()
    seen_errors: set[tuple[str, str]] = set()

    def run(data: bytes) -> bool:
        before = len(arcs)
        tracer, local = _tracer(files, arcs)
        old = sys.gettrace()
        sys.settrace(tracer)
        try:
            target(data)
        except allowed:
            pass
        except RecursionError as exc:
            _record(result, seen_errors, data, exc)
        except Exception as exc:  # noqa: BLE001 - that is what we look for
            _record(result, seen_errors, data, exc)
        finally:
            sys.settrace(old)
        result.runs += 1
        return len(arcs) > before

    for s in list(seeds) + [b""]:
        if run(s):
            pool.append(s)
    pool = pool or [b""]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(result.findings) < max_findings:
        data = _mutate(rng, rng.choice(pool), pool)
        if run(data):
            pool.append(data)
    result.arcs = len(arcs)
    result.corpus = len(pool)
    return result


def _record(result: Result, seen: set[tuple[str, str]], data: bytes, exc: BaseException) -> None:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{tb.tb_frame.f_code.co_filename}:{tb.tb_lineno}" if tb else "?"
    key = (type(exc).__name__, where)
    if key in seen:
        return
    seen.add(key)
    result.findings.append(Finding(data, exc))


def save(name: str, findings: list[Finding]) -> list[Path]:
    """Write failing inputs to ``corpus/<name>/`` (when WEBACCEL_FUZZ_SAVE is set)."""
    if not os.environ.get("WEBACCEL_FUZZ_SAVE") or not findings:
        return []
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for f in findings:
        path = folder / hashlib.sha1(f.data).hexdigest()[:16]
        path.write_bytes(f.data)
        out.append(path)
    return out


def corpus(name: str) -> list[tuple[str, bytes]]:
    folder = CORPUS / name
    if not folder.is_dir():
        return []
    return [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()]
