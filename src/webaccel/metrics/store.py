"""The metrics recorder: every run, worker, model load, inference, fetch,
precision variant and benchmark, batched into DuckDB.

Usage (pool, API, content code)::

    store = MetricsStore()                       # $WEBACCEL_HOME/metrics.duckdb
    run_id = store.record_run_start("server", info={"port": 8700})
    store.record_worker("w1", "chromium", version="156.0", backends=["wasm", "webgpu"],
                        adapter={"vendor": "google", "architecture": "swiftshader"},
                        is_fallback=True)
    store.record_model_load("minilm", ms=812.0, cid="bafy...", variant="fp16",
                            precision="fp16", backend="wasm", worker_id="w1",
                            nbytes=45_700_000, tier="network", rss_delta_bytes=98_000_000)
    store.record_worker_memory("w1", "chromium", rss_bytes=612_000_000,
                               resident=["minilm/fp32/wasm"])
    store.record_recovery(2.4, worker_id="w2", lost_worker_id="w1", browser="chromium")
    store.record_inference("minilm", round_trip_ms=19.2, worker_id="w1", browser="chromium",
                           backend="wasm", precision="fp32", batch=1, queue_wait_ms=0.3,
                           page_ms=17.0, retries=0, error_code=None)
    store.record_generation("smollm2", task="text_generation", worker_id="w1",
                            backend="webgpu", prompt_tokens=12, completion_tokens=32,
                            ttft_ms=140.0, total_ms=910.0, finish_reason="stop")
    store.record_fetch("bafy...", nbytes=262144, ms=3.1, tier="disk", peer=None)
    store.record_variant("minilm", "int8", nbytes=23_000_000, metric="cosine", accuracy=0.988)
    store.record_benchmark(result_dict, better="lower")
    store.get_metrics()          # live figures (see webaccel.metrics.live)
    store.query("SELECT ...")    # list of dicts, after flushing this process's records
    store.close()

``record_*`` never blocks on I/O: it appends to the writer's buffer and
updates the Prometheus metrics (``store.prom``) and live figures
(``store.live``).  ``error_code`` is a :class:`webaccel.errors.ErrorCode`
value (or None for success); ``ok`` is derived from it.  A model load's or
fetch's ``tier`` names where the bytes came from: ``memory``, ``disk``,
``browser-cache`` (local) or ``peer``, ``gateway``, ``network`` (remote; see
:data:`NETWORK_TIERS`).  ``rss_delta_bytes`` of a load and ``rss_bytes`` of a
memory sample are the RSS of the worker's local browser process tree (see
:mod:`webaccel.pool.memory`); None where it has none to measure.

Several processes may use the same file at once (a server, ``webaccel
bench``, ``webaccel report``): see :mod:`webaccel.metrics.db` and
:mod:`webaccel.metrics.writer` for how lock conflicts are waited out or
spooled instead of failing.
"""
from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import os
import socket
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webaccel import __version__, paths
from webaccel.metrics import db
from webaccel.metrics.efficiency import NETWORK_TIERS  # noqa: F401 - re-exported
from webaccel.metrics.live import LiveStats
from webaccel.metrics.prom import PromMetrics
from webaccel.metrics.writer import Writer, spool_dir

DEFAULT_FILENAME = "metrics.duckdb"

_OPEN: weakref.WeakSet[MetricsStore] = weakref.WeakSet()


def default_path() -> Path:
    """``$WEBACCEL_METRICS_DB`` if set, else ``$WEBACCEL_HOME/metrics.duckdb``."""
    env = os.environ.get("WEBACCEL_METRICS_DB")
    return Path(env) if env else paths.home() / DEFAULT_FILENAME


def _code(error_code: Any) -> str | None:
    if error_code is None:
        return None
    code = getattr(error_code, "code", error_code)  # accept an exception with a .code
    return str(code)


def decode_rate(completion_tokens: int, ttft_ms: float | None, total_ms: float) -> float | None:
    """Tokens per second after the first token, or None when there is no decode phase."""
    if ttft_ms is None or completion_tokens < 2 or total_ms <= ttft_ms:
        return None
    return (completion_tokens - 1) / ((total_ms - ttft_ms) / 1000.0)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, default=str)


class MetricsStore:
    """Recorder and query front of one DuckDB metrics file (see module docstring)."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        interval: float = 1.0,
        lock_wait: float = 0.5,
        read_timeout: float = 30.0,
        prom: PromMetrics | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.read_timeout = read_timeout
        self.prom = prom or PromMetrics()
        self.live = LiveStats()
        self.run_id = uuid.uuid4().hex[:16]
        self._writer = Writer(self.path, interval=interval, lock_wait=lock_wait)
        self.prom.store_stats = self.stats
        self._closed = False
        _OPEN.add(self)

    # -- recording (hot path: no I/O) ---------------------------------------------
    def _submit(self, table: str, *values: Any) -> None:
        """Queue one row of ``table`` (``COLUMNS`` order after ``ts`` and ``run_id``)."""
        self._writer.submit(table, (db.utcnow(), self.run_id, *values))

    def record_run_start(self, kind: str, info: Mapping[str, Any] | None = None) -> str:
        """Start a new run (``server``, ``bench``, ``api``, ...); later records carry its id."""
        self.run_id = uuid.uuid4().hex[:16]
        self._submit("runs", kind, socket.gethostname(), os.getpid(), __version__,
                     _json(dict(info or {})))
        return self.run_id

    def record_worker(
        self,
        worker_id: str,
        browser: str,
        *,
        version: str | None = None,
        backends: Sequence[str] = (),
        adapter: Mapping[str, Any] | None = None,
        is_fallback: bool | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self._submit("workers", worker_id, browser, version, _json(list(backends)),
                     _json(adapter), is_fallback, _json(info))
        self.live.worker(worker_id=worker_id, browser=browser)

    def record_worker_memory(
        self,
        worker_id: str,
        browser: str | None,
        *,
        rss_bytes: int | None,
        resident: Sequence[str] = (),
        trigger: str = "interval",
    ) -> None:
        """One memory sample of a worker (``rss_bytes`` None: it has no local process to
        measure); ``resident``: the session keys its page held; ``trigger``: "interval"
        or "load"."""
        self._submit("worker_memory", worker_id, browser,
                     None if rss_bytes is None else int(rss_bytes), _json(list(resident)),
                     trigger)
        self.live.memory(worker_id=worker_id, browser=browser, rss_bytes=rss_bytes)

    def record_recovery(
        self,
        seconds: float,
        *,
        worker_id: str | None = None,
        lost_worker_id: str | None = None,
        browser: str | None = None,
        reason: str | None = None,
    ) -> None:
        """A lost worker replaced: ``seconds`` from the loss to ``worker_id`` ready."""
        self._submit("recoveries", lost_worker_id, worker_id, browser, float(seconds), reason)
        self.live.recovery(seconds)

    def record_quarantine(self, worker_id: str, browser: str, *, reason: str) -> None:
        """A worker failed an answer check and left service (a workers row says why)."""
        self.record_worker(worker_id, browser, info={"quarantined": reason})
        self.prom.quarantine(browser=browser)

    def record_model_load(
        self,
        model: str,
        *,
        ms: float,
        cid: str | None = None,
        variant: str | None = None,
        precision: str | None = None,
        backend: str | None = None,
        worker_id: str | None = None,
        nbytes: int | None = None,
        tier: str | None = None,
        error_code: Any = None,
        rss_delta_bytes: int | None = None,
    ) -> None:
        code = _code(error_code)
        delta = None if rss_delta_bytes is None else int(rss_delta_bytes)
        self._submit("model_loads", model, cid, variant, precision, backend, worker_id, nbytes,
                     tier, float(ms), code is None, code, delta)
        self.prom.model_load(model=model, tier=tier, ms=ms, nbytes=nbytes, error_code=code)
        self.live.load(tier=tier, nbytes=nbytes, ms=ms, ok=code is None, model=model,
                       rss_delta_bytes=delta)

    def record_inference(
        self,
        model: str,
        *,
        round_trip_ms: float,
        worker_id: str | None = None,
        browser: str | None = None,
        backend: str | None = None,
        precision: str | None = None,
        batch: int = 1,
        queue_wait_ms: float | None = None,
        page_ms: float | None = None,
        retries: int = 0,
        error_code: Any = None,
    ) -> None:
        code = _code(error_code)
        self._submit("inferences", model, worker_id, browser, backend, precision, int(batch),
                     queue_wait_ms, page_ms, float(round_trip_ms), int(retries), code is None,
                     code)
        self.prom.inference(model=model, backend=backend, round_trip_ms=round_trip_ms,
                            queue_wait_ms=queue_wait_ms, page_ms=page_ms, error_code=code)
        self.live.inference(end=time.time(), model=model, worker_id=worker_id, browser=browser,
                            backend=backend, precision=precision, batch=int(batch),
                            round_trip_ms=float(round_trip_ms), queue_wait_ms=queue_wait_ms,
                            page_ms=page_ms, retries=int(retries), error_code=code)

    def record_generation(
        self,
        model: str,
        *,
        task: str,
        worker_id: str | None = None,
        browser: str | None = None,
        backend: str | None = None,
        precision: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        ttft_ms: float | None = None,
        total_ms: float = 0.0,
        tokens_per_s: float | None = None,
        queue_wait_ms: float | None = None,
        failovers: int = 0,
        finish_reason: str | None = None,
        error_code: Any = None,
    ) -> None:
        """One generation stream or multi-step session (a Whisper transcription), at its end.

        ``task``: ``text_generation``, ``speech_to_text``, ...; ``completion_tokens``:
        tokens generated (decoded tokens for speech); ``ttft_ms``: submit to first token;
        ``tokens_per_s``: decode rate, the completion tokens after the first over the
        time after the first (derived from ``ttft_ms`` and ``total_ms`` when not given);
        ``failovers``: times the stream was replayed on another worker;
        ``finish_reason``: ``stop``, ``length``, ``cancelled`` or None.
        """
        code = _code(error_code)
        prompt_tokens, completion_tokens = int(prompt_tokens), int(completion_tokens)
        total_ms, failovers = float(total_ms), int(failovers)
        if tokens_per_s is None:
            tokens_per_s = decode_rate(completion_tokens, ttft_ms, total_ms)
        self._submit("generations", model, task, worker_id, browser, backend, precision,
                     prompt_tokens, completion_tokens, ttft_ms, total_ms, tokens_per_s,
                     queue_wait_ms, failovers, finish_reason, code is None, code)
        self.prom.generation(model=model, backend=backend, prompt_tokens=prompt_tokens,
                             completion_tokens=completion_tokens, ttft_ms=ttft_ms,
                             total_ms=total_ms, tokens_per_s=tokens_per_s,
                             queue_wait_ms=queue_wait_ms, failovers=failovers,
                             finish_reason=finish_reason, error_code=code)
        self.live.generation(model=model, task=task, backend=backend, prompt_tokens=prompt_tokens,
                             completion_tokens=completion_tokens, ttft_ms=ttft_ms,
                             total_ms=total_ms, tokens_per_s=tokens_per_s, failovers=failovers,
                             finish_reason=finish_reason, error_code=code)

    def record_fetch(
        self,
        cid: str,
        *,
        nbytes: int | None,
        ms: float,
        tier: str | None = None,
        peer: str | None = None,
        error_code: Any = None,
    ) -> None:
        code = _code(error_code)
        self._submit("fetches", cid, peer, nbytes, float(ms), tier, code is None, code)
        self.prom.fetch(tier=tier, nbytes=nbytes, error_code=code)
        self.live.fetch(tier=tier, nbytes=nbytes, ms=ms, ok=code is None)

    def record_variant(
        self,
        model: str,
        variant: str,
        *,
        nbytes: int,
        precision: str | None = None,
        metric: str | None = None,
        accuracy: float | None = None,
        latency_ms: float | None = None,
        cid: str | None = None,
    ) -> None:
        """A precision variant's size and its accuracy against fp32 (``metric``: e.g. cosine)."""
        self._submit("variants", model, variant, precision or variant, nbytes, metric, accuracy,
                     latency_ms, cid)

    def record_benchmark(self, result: Mapping[str, Any], *, better: str | None = None) -> None:
        """Store one benchmark line as printed by ``webaccel bench`` (see webaccel.bench.runner)."""
        at = result.get("at")
        ts = db.utcnow()
        if isinstance(at, str):
            try:
                parsed = dt.datetime.fromisoformat(at)
                ts = parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed
            except ValueError:
                pass
        ratio = result.get("ratio")
        self._writer.submit("benchmarks", (
            ts, self.run_id, str(result["benchmark"]),
            float(ratio) if isinstance(ratio, int | float) else None,
            result.get("ratio_is"), better or result.get("better"), result.get("unavailable"),
            result.get("error"), _json(result.get("figures")), _json(result.get("hardware")),
            _json(result.get("versions")), _json(dict(result)),
        ))

    # -- durability ---------------------------------------------------------------
    def flush(self, timeout: float | None = 30.0) -> bool:
        """Make every record so far durable (committed, or spooled if the file is locked)."""
        return self._writer.flush(timeout)

    def close(self) -> None:
        """Flush and stop the writer thread (waits up to ~10 s for a locked file, then spools)."""
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        _OPEN.discard(self)

    def __enter__(self) -> MetricsStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        w = self._writer
        return {
            "path": str(self.path),
            "pending": w.pending,
            "committed_rows": w.committed_rows,
            "spooled_rows": w.spooled_rows,
            "merged_spool_files": w.merged_spool_files,
            "flushes": w.flushes,
            "last_flush_at": w.last_flush_at,
            "last_flush_s": w.last_flush_s,
            "last_error": w.last_error,
            "writer_alive": w.alive and not self._closed,
            "spool_files": len(list(spool_dir(self.path).glob("*.jsonl")))
            if spool_dir(self.path).exists() else 0,
        }

    # -- reading ------------------------------------------------------------------
    def get_metrics(self) -> dict[str, Any]:
        """This process's live figures: ``aggregate`` / ``models`` / ``workers`` / ``loads`` ..."""
        return self.live.snapshot()

    def recent(self, n: int = 100) -> list[dict[str, Any]]:
        return self.live.recent(n)

    def query(self, sql: str, params: Sequence[Any] | None = None, *,
              flush: bool = True) -> list[dict[str, Any]]:
        """Run a read-only query on the file (after making this process's records durable)."""
        if flush and not self._closed:
            self.flush()
        return read_query(self.path, sql, params, timeout=self.read_timeout)

    def tables(self) -> dict[str, list[dict[str, Any]]]:
        """Every row of every record table (for tests and small exports)."""
        from webaccel.metrics.schema import RECORD_TABLES

        return {t: self.query(f"SELECT * FROM {t} ORDER BY ts") for t in RECORD_TABLES}


def read_query(path: str | Path, sql: str, params: Sequence[Any] | None = None, *,
               timeout: float = 30.0) -> list[dict[str, Any]]:
    """Read-only query on a metrics file another process may be writing.

    Merges pending spool files first when the file can be opened for writing
    within a moment, so records spooled by a process that met a lock are seen.
    An empty or missing file reads as empty tables (the schema is created).
    """
    path = Path(path)
    ensure_schema(path, timeout=timeout)
    with db.connect(path, read_only=True, timeout=timeout) as con:
        return db.fetch_dicts(con, sql, params)


def ensure_schema(path: Path, *, timeout: float = 30.0) -> None:
    """Create/migrate the file and merge spooled records, if it needs either.

    Merging spools is best effort (one second): a reader then sees what is
    committed so far rather than waiting on a busy writer.
    """
    from webaccel.metrics.schema import LATEST

    needs_spool = spool_dir(path).exists() and any(spool_dir(path).glob("*.jsonl"))
    migrated = False
    if path.exists():
        with db.connect(path, read_only=True, timeout=timeout) as con:
            migrated = db.schema_version(con) >= LATEST
    if migrated and not needs_spool:
        return
    wait = min(timeout, 1.0) if migrated else timeout
    # A writer with nothing of its own: its first pass creates, migrates and merges.
    Writer(path, interval=3600, lock_wait=wait, close_lock_wait=wait).close()


def iter_rows(path: str | Path, tables: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    return {t: read_query(path, f"SELECT * FROM {t} ORDER BY ts") for t in tables}


@atexit.register
def _close_all() -> None:
    for store in list(_OPEN):
        with contextlib.suppress(Exception):
            store.close()
