"""The metrics schema and its migrations.

``schema_version`` holds one row per applied migration.  Migrations are
append-only: never edit a shipped one, add the next number.  ``COLUMNS`` is the
current shape of every record table, in insert order, with the DuckDB type used
to cast the columnar batch (see :mod:`webaccel.metrics.db`).

Record tables have no keys or constraints on purpose: a constraint violation
would fail a whole batched flush.  ``ts`` is UTC (naive ``TIMESTAMP``).
JSON-valued columns are ``VARCHAR`` holding JSON text.
"""
from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "initial record tables",
        [
            """CREATE TABLE runs (
                ts TIMESTAMP, run_id VARCHAR, kind VARCHAR, host VARCHAR, pid INTEGER,
                version VARCHAR, info VARCHAR)""",
            """CREATE TABLE workers (
                ts TIMESTAMP, run_id VARCHAR, worker_id VARCHAR, browser VARCHAR,
                browser_version VARCHAR, backends VARCHAR, adapter VARCHAR,
                is_fallback BOOLEAN, info VARCHAR)""",
            """CREATE TABLE model_loads (
                ts TIMESTAMP, run_id VARCHAR, model VARCHAR, cid VARCHAR, variant VARCHAR,
                precision VARCHAR, backend VARCHAR, worker_id VARCHAR, bytes BIGINT,
                tier VARCHAR, ms DOUBLE, ok BOOLEAN, error_code VARCHAR)""",
            """CREATE TABLE inferences (
                ts TIMESTAMP, run_id VARCHAR, model VARCHAR, worker_id VARCHAR,
                browser VARCHAR, backend VARCHAR, precision VARCHAR, batch INTEGER,
                queue_wait_ms DOUBLE, page_ms DOUBLE, round_trip_ms DOUBLE,
                retries INTEGER, ok BOOLEAN, error_code VARCHAR)""",
            """CREATE TABLE fetches (
                ts TIMESTAMP, run_id VARCHAR, cid VARCHAR, peer VARCHAR, bytes BIGINT,
                ms DOUBLE, tier VARCHAR, ok BOOLEAN, error_code VARCHAR)""",
            """CREATE TABLE variants (
                ts TIMESTAMP, run_id VARCHAR, model VARCHAR, variant VARCHAR,
                precision VARCHAR, bytes BIGINT, metric VARCHAR, accuracy DOUBLE,
                latency_ms DOUBLE, cid VARCHAR)""",
            """CREATE TABLE benchmarks (
                ts TIMESTAMP, run_id VARCHAR, benchmark VARCHAR, ratio DOUBLE,
                ratio_is VARCHAR, better VARCHAR, unavailable VARCHAR, error VARCHAR,
                figures VARCHAR, hardware VARCHAR, versions VARCHAR, record VARCHAR)""",
            # Spool files already merged, so a crash between commit and unlink
            # never ingests one twice (see webaccel.metrics.writer).
            "CREATE TABLE spool_ingested (ts TIMESTAMP, name VARCHAR)",
        ],
    ),
    (
        2,
        "generations: one row per generation stream or multi-step session",
        [
            # A chat/completions stream or a Whisper transcription, recorded once when it
            # ends (MetricsStore.record_generation); ttft_ms counts from submit.
            """CREATE TABLE generations (
                ts TIMESTAMP, run_id VARCHAR, model VARCHAR, task VARCHAR, worker_id VARCHAR,
                browser VARCHAR, backend VARCHAR, precision VARCHAR, prompt_tokens INTEGER,
                completion_tokens INTEGER, ttft_ms DOUBLE, total_ms DOUBLE,
                tokens_per_s DOUBLE, queue_wait_ms DOUBLE, failovers INTEGER,
                finish_reason VARCHAR, ok BOOLEAN, error_code VARCHAR)""",
        ],
    ),
    (
        3,
        "resource efficiency: worker memory samples, a load's RSS growth, recoveries",
        [
            # The RSS of a local worker's browser process tree (the browser and every
            # helper: renderers, GPU, utility), summed; NULL for a worker with no local
            # process to measure (a remote or joined browser), recorded once for it.
            # ``trigger``: "interval" (the pool's periodic sample) or "load" (right after
            # a model load and warm-up); ``resident``: JSON list of the session keys
            # the page held then.
            """CREATE TABLE worker_memory (
                ts TIMESTAMP, run_id VARCHAR, worker_id VARCHAR, browser VARCHAR,
                rss_bytes BIGINT, resident VARCHAR, trigger VARCHAR)""",
            # That RSS after the load and warm-up minus before it (NULL: not measured).
            "ALTER TABLE model_loads ADD COLUMN rss_delta_bytes BIGINT",
            # A lost worker replaced: ``seconds`` from the loss to the next worker ready.
            """CREATE TABLE recoveries (
                ts TIMESTAMP, run_id VARCHAR, lost_worker_id VARCHAR, worker_id VARCHAR,
                browser VARCHAR, seconds DOUBLE, reason VARCHAR)""",
        ],
    ),
]

LATEST = MIGRATIONS[-1][0]

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "runs": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("kind", "VARCHAR"),
             ("host", "VARCHAR"), ("pid", "INTEGER"), ("version", "VARCHAR"),
             ("info", "VARCHAR")],
    "workers": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("worker_id", "VARCHAR"),
                ("browser", "VARCHAR"), ("browser_version", "VARCHAR"), ("backends", "VARCHAR"),
                ("adapter", "VARCHAR"), ("is_fallback", "BOOLEAN"), ("info", "VARCHAR")],
    "model_loads": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("model", "VARCHAR"),
                    ("cid", "VARCHAR"), ("variant", "VARCHAR"), ("precision", "VARCHAR"),
                    ("backend", "VARCHAR"), ("worker_id", "VARCHAR"), ("bytes", "BIGINT"),
                    ("tier", "VARCHAR"), ("ms", "DOUBLE"), ("ok", "BOOLEAN"),
                    ("error_code", "VARCHAR"), ("rss_delta_bytes", "BIGINT")],
    "inferences": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("model", "VARCHAR"),
                   ("worker_id", "VARCHAR"), ("browser", "VARCHAR"), ("backend", "VARCHAR"),
                   ("precision", "VARCHAR"), ("batch", "INTEGER"), ("queue_wait_ms", "DOUBLE"),
                   ("page_ms", "DOUBLE"), ("round_trip_ms", "DOUBLE"), ("retries", "INTEGER"),
                   ("ok", "BOOLEAN"), ("error_code", "VARCHAR")],
    "generations": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("model", "VARCHAR"),
                    ("task", "VARCHAR"), ("worker_id", "VARCHAR"), ("browser", "VARCHAR"),
                    ("backend", "VARCHAR"), ("precision", "VARCHAR"),
                    ("prompt_tokens", "INTEGER"), ("completion_tokens", "INTEGER"),
                    ("ttft_ms", "DOUBLE"), ("total_ms", "DOUBLE"), ("tokens_per_s", "DOUBLE"),
                    ("queue_wait_ms", "DOUBLE"), ("failovers", "INTEGER"),
                    ("finish_reason", "VARCHAR"), ("ok", "BOOLEAN"), ("error_code", "VARCHAR")],
    "fetches": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("cid", "VARCHAR"),
                ("peer", "VARCHAR"), ("bytes", "BIGINT"), ("ms", "DOUBLE"), ("tier", "VARCHAR"),
                ("ok", "BOOLEAN"), ("error_code", "VARCHAR")],
    "variants": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("model", "VARCHAR"),
                 ("variant", "VARCHAR"), ("precision", "VARCHAR"), ("bytes", "BIGINT"),
                 ("metric", "VARCHAR"), ("accuracy", "DOUBLE"), ("latency_ms", "DOUBLE"),
                 ("cid", "VARCHAR")],
    "worker_memory": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("worker_id", "VARCHAR"),
                      ("browser", "VARCHAR"), ("rss_bytes", "BIGINT"), ("resident", "VARCHAR"),
                      ("trigger", "VARCHAR")],
    "recoveries": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("lost_worker_id", "VARCHAR"),
                   ("worker_id", "VARCHAR"), ("browser", "VARCHAR"), ("seconds", "DOUBLE"),
                   ("reason", "VARCHAR")],
    "benchmarks": [("ts", "TIMESTAMP"), ("run_id", "VARCHAR"), ("benchmark", "VARCHAR"),
                   ("ratio", "DOUBLE"), ("ratio_is", "VARCHAR"), ("better", "VARCHAR"),
                   ("unavailable", "VARCHAR"), ("error", "VARCHAR"), ("figures", "VARCHAR"),
                   ("hardware", "VARCHAR"), ("versions", "VARCHAR"), ("record", "VARCHAR")],
}

RECORD_TABLES = tuple(COLUMNS)
