"""Short-lived DuckDB connections to the metrics file.

DuckDB lets one process at a time hold a file that is open for writing, and a
writer excludes even read-only openers in other processes (docs/FACTS.md).  So no
webaccel process keeps the file open: the writer opens it for one batched
transaction (~25 ms) per flush interval and closes it, and readers open it
read-only for one query.  Anyone who meets the lock retries with backoff;
:func:`connect` raises :class:`MetricsLockedError` only after ``timeout``.

Within one process DuckDB shares a database instance per path and refuses a
second opener with a different ``read_only`` setting, so every opener here
takes the per-path lock from :func:`path_lock` first.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb

from webaccel.metrics.errors import MetricsLockedError, MetricsSchemaError, MetricsStoreError
from webaccel.metrics.schema import COLUMNS, LATEST, MIGRATIONS

_LOCKS: dict[str, threading.RLock] = {}
_LOCKS_GUARD = threading.Lock()


def path_lock(path: Path) -> threading.RLock:
    key = str(Path(path).resolve())
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.RLock())


def is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@contextlib.contextmanager
def connect(
    path: Path, *, read_only: bool, timeout: float = 30.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open ``path`` (retrying while another process holds it), yield, close."""
    path = Path(path)
    with path_lock(path):
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            try:
                con = duckdb.connect(str(path), read_only=read_only)
                break
            except duckdb.Error as exc:
                if not is_lock_error(exc):
                    raise MetricsStoreError(
                        f"cannot open metrics file {path}: {exc}", details={"path": str(path)}
                    ) from exc
                if time.monotonic() >= deadline:
                    raise MetricsLockedError(
                        f"metrics file {path} stayed locked by another process for {timeout:.1f} s;"
                        " close the other DuckDB client (a `duckdb` shell?) or retry",
                        details={"path": str(path), "duckdb": str(exc)},
                    ) from exc
                left = max(0.0, deadline - time.monotonic())
                time.sleep(min(delay, left) * random.uniform(0.5, 1))
                delay = min(delay * 2, 0.2)
        try:
            yield con
        finally:
            con.close()


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()
    if not exists or not exists[0]:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply missing migrations, each in its own transaction; return the version."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version"
        " (version INTEGER, description VARCHAR, applied_at TIMESTAMP)"
    )
    current = schema_version(con)
    if current > LATEST:
        raise MetricsSchemaError(
            f"metrics schema version {current} is newer than this webaccel knows ({LATEST});"
            " upgrade webaccel or point it at another file"
        )
    for version, description, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for sql in statements:
                con.execute(sql)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [version, description, utcnow()],
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        current = version
    return current


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples in ``COLUMNS[table]`` order) as one columnar statement.

    ``executemany`` costs ~1 ms a row in DuckDB; one ``unnest`` per column of
    Python lists inserts 2000 rows in ~15 ms.
    """
    if not rows:
        return
    cols = COLUMNS[table]
    names = ", ".join(name for name, _ in cols)
    selects = ", ".join(f"unnest(${i + 1}::{typ}[])" for i, (_, typ) in enumerate(cols))
    columns = [list(c) for c in zip(*rows, strict=True)]
    con.execute(f"INSERT INTO {table} ({names}) SELECT {selects}", columns)


def fetch_dicts(
    con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] | None = None
) -> list[dict[str, Any]]:
    cur = con.execute(sql, list(params) if params is not None else None)
    names = [d[0] for d in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def insert_rows_raw(
    con: duckdb.DuckDBPyConnection,
    table: str,
    names: Sequence[str],
    types: Sequence[str],
    rows: Sequence[Sequence[Any]],
) -> None:
    """Like :func:`insert_rows` for tables outside ``COLUMNS`` (bookkeeping tables)."""
    if not rows:
        return
    selects = ", ".join(f"unnest(${i + 1}::{typ}[])" for i, typ in enumerate(types))
    columns = [list(c) for c in zip(*rows, strict=True)]
    con.execute(f"INSERT INTO {table} ({', '.join(names)}) SELECT {selects}", columns)
