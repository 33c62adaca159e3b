"""The background writer: batches records and commits them off the hot path.

Producers call :meth:`Writer.submit` (append to a list under a lock, no I/O).
One daemon thread wakes every ``interval`` seconds (sooner when ``max_batch``
records are waiting or someone calls :meth:`Writer.flush`), opens the DuckDB
file, inserts everything in **one transaction**, and closes the file again
(see :mod:`webaccel.metrics.db` for why nobody keeps it open).

Durability: a commit is all-or-nothing (DuckDB's WAL), so a SIGKILL loses at
most the records of the current interval and never leaves a half-written
batch.  When the file is locked by another process for longer than
``lock_wait`` (a report reading it, another webaccel writing), the batch goes
to a *spool*: a JSON-lines file written to a temporary name, fsynced and
renamed into ``<db>.spool/``.  Whoever next opens the file for writing merges
every spool file in the same transaction as its own batch and records the
file name in ``spool_ingested``, so a crash between commit and unlink never
merges a file twice.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from webaccel.metrics import db
from webaccel.metrics.errors import MetricsLockedError
from webaccel.metrics.schema import COLUMNS, LATEST

log = logging.getLogger(__name__)

Row = tuple[Any, ...]


def spool_dir(path: Path) -> Path:
    return Path(str(path) + ".spool")


class Writer:
    """Owns the pending records of one process for one metrics file."""

    def __init__(
        self,
        path: Path,
        *,
        interval: float = 1.0,
        lock_wait: float = 0.5,
        close_lock_wait: float = 10.0,
        max_batch: int = 5000,
        on_flush: Callable[[int], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.interval = interval
        self.lock_wait = lock_wait
        self.close_lock_wait = close_lock_wait
        self.max_batch = max_batch
        self.on_flush = on_flush
        self._cond = threading.Condition()
        self._buf: list[tuple[str, Row]] = []
        self._seq = 0  # records submitted
        self._durable = 0  # records committed or spooled
        self._flush_wanted = False
        # The first pass runs at once and creates/migrates the file (and merges
        # spools), so a server finds a bad file at start, not at its first record.
        self._force = True
        self._passes_started = 0
        self._passes_done = 0
        self._stop = False
        self._migrated = False
        self.committed_rows = 0
        self.spooled_rows = 0
        self.merged_spool_files = 0
        self.flushes = 0
        self.last_flush_at: float | None = None
        self.last_flush_s: float | None = None
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name=f"metrics-writer:{self.path.name}",
                                        daemon=True)
        self._thread.start()

    # -- producer side (hot path) -------------------------------------------------
    def submit(self, table: str, row: Row) -> None:
        with self._cond:
            if self._stop:
                raise RuntimeError("metrics writer is closed")
            self._buf.append((table, row))
            self._seq += 1
            if len(self._buf) >= self.max_batch:
                self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return self._seq - self._durable

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def flush(self, timeout: float | None = 30.0, *, force: bool = False) -> bool:
        """Block until every record submitted before the call is durable; False on timeout.

        ``force`` runs a full write pass even with nothing buffered: it creates
        or migrates the file and merges spool files.
        """
        with self._cond:
            target = self._seq
            if self._durable >= target and not force:
                return True
            wanted_pass = self._passes_started + 1
            self._flush_wanted = True
            self._force = self._force or force
            self._cond.notify_all()
            return self._cond.wait_for(
                lambda: (self._durable >= target and self._passes_done >= wanted_pass)
                or not self._thread.is_alive(),
                timeout,
            ) and self._durable >= target

    def close(self, timeout: float | None = 60.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- writer thread ------------------------------------------------------------
    def _run(self) -> None:
        next_tick = time.monotonic()  # first pass now
        while True:
            with self._cond:
                while not (self._stop or self._flush_wanted or len(self._buf) >= self.max_batch):
                    left = next_tick - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch, self._buf = self._buf, []
                upto = self._seq
                stop = self._stop
                force = self._force
                self._flush_wanted = self._force = False
                self._passes_started += 1
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.interval
            try:
                self._write(batch, final=stop, force=force)
            except BaseException as exc:  # never let the thread die silently
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("metrics writer failed; %d records lost", len(batch))
            with self._cond:
                self._durable = upto
                self._passes_done += 1
                self._cond.notify_all()
            if self.on_flush is not None and batch:
                try:
                    self.on_flush(upto)
                except Exception:  # a callback must not stop the writer
                    log.exception("metrics on_flush callback failed")
            if stop:
                return

    def _write(self, batch: list[tuple[str, Row]], *, final: bool, force: bool = False) -> None:
        spools = self._spool_files()
        if not batch and not spools and not (force and not self._migrated):
            return
        started = time.perf_counter()
        try:
            self._commit(batch, spools, lock_wait=self.close_lock_wait if final else self.lock_wait)
            self.committed_rows += len(batch)
            self.last_error = None
        except MetricsLockedError as exc:
            self.last_error = exc.message
            self._spool(batch)
        except Exception as exc:
            # Disk full, a newer schema, ...: keep the records in the spool and
            # say so in /healthz rather than dropping them.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("metrics commit failed (%s); spooling %d records", exc, len(batch))
            self._spool(batch)
        self.flushes += 1
        self.last_flush_at = time.time()
        self.last_flush_s = time.perf_counter() - started

    def _commit(self, batch: list[tuple[str, Row]], spools: list[Path], *,
                lock_wait: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with db.connect(self.path, read_only=False, timeout=lock_wait) as con:
            if not self._migrated:
                db.migrate(con)
                self._migrated = True
            done = set()
            if spools:
                names = [p.name for p in spools]
                done = {r[0] for r in con.execute(
                    "SELECT name FROM spool_ingested WHERE name IN (SELECT unnest($1::VARCHAR[]))",
                    [names]).fetchall()}
            by_table: dict[str, list[Row]] = {}
            merged: list[Path] = []
            for spool in spools:
                if spool.name in done:
                    continue
                for table, row in _read_spool(spool):
                    by_table.setdefault(table, []).append(row)
                merged.append(spool)
            for table, row in batch:
                by_table.setdefault(table, []).append(row)
            con.execute("BEGIN TRANSACTION")
            try:
                for table, rows in by_table.items():
                    db.insert_rows(con, table, rows)
                if merged:
                    db.insert_rows_raw(con, "spool_ingested", ["ts", "name"],
                                       ["TIMESTAMP", "VARCHAR"],
                                       [(db.utcnow(), p.name) for p in merged])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        for spool in spools:
            spool.unlink(missing_ok=True)
        self.merged_spool_files += len(merged)

    def _spool_files(self) -> list[Path]:
        d = spool_dir(self.path)
        try:
            return sorted(p for p in d.iterdir() if p.suffix == ".jsonl")
        except FileNotFoundError:
            return []

    def _spool(self, batch: list[tuple[str, Row]]) -> None:
        if not batch:
            return
        write_spool(self.path, batch)
        self.spooled_rows += len(batch)


def write_spool(path: Path, batch: list[tuple[str, Row]]) -> Path:
    """Write ``batch`` atomically as one spool file next to the metrics file ``path``."""
    d = spool_dir(path)
    d.mkdir(parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
    tmp = d / (name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for table, row in batch:
            cols = [c for c, _ in COLUMNS[table]]
            record = dict(zip(cols, row, strict=True))
            fh.write(json.dumps({"t": table, "v": LATEST, "r": record}, default=_json_default))
            fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, d / name)
    return d / name


def _json_default(obj: Any) -> Any:
    if isinstance(obj, dt.datetime):
        return obj.isoformat()
    raise TypeError(f"cannot spool {type(obj).__name__}")


def _read_spool(path: Path) -> list[tuple[str, Row]]:
    out: list[tuple[str, Row]] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            item = json.loads(line)
            table = item["t"]
            if table not in COLUMNS:
                continue
            rec = item["r"]
            row = []
            for col, typ in COLUMNS[table]:
                value = rec.get(col)
                if typ == "TIMESTAMP" and isinstance(value, str):
                    value = dt.datetime.fromisoformat(value)
                row.append(value)
            out.append((table, tuple(row)))
    return out
