"""``webaccel report``: Markdown and static HTML, with PNG plots, from the store.

    report = build_report(path_or_store, out_dir)
    report.markdown, report.html, report.plots  # paths

Sections (each says "no data yet" when its tables are empty): benchmarks
(latest result of each, with a ratio chart), latency by backend and
precision, generation (text generation streams and Whisper transcriptions:
tokens, time to first token, decode rate, failovers), throughput vs workers,
model load time by cache tier, accuracy vs
size per precision variant, resource efficiency (peak memory per worker and
per model, connection reuse, cache hit rate per tier and the network bytes it
saved, error rate, recovery time; see :mod:`webaccel.metrics.efficiency`), and
workers seen.

The report reads the file read-only, so it runs beside a server that is
writing it (see :mod:`webaccel.metrics.db`).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import html
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from webaccel.metrics import efficiency as eff
from webaccel.metrics import plots
from webaccel.metrics.store import NETWORK_TIERS, MetricsStore, read_query

NO_DATA = "no data yet"


@dataclass
class Table:
    """A further table of a section, under its own caption."""

    caption: str
    headers: list[str]
    rows: list[list[Any]]


@dataclass
class Section:
    title: str
    intro: str = ""
    plot: Path | None = None
    headers: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    key: str = ""
    tables: list[Table] = field(default_factory=list)


@dataclass
class Report:
    out_dir: Path
    markdown: Path
    html: Path
    plots: dict[str, Path]
    sections: list[Section]
    data: dict[str, Any]


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, dt.datetime):
        return v.strftime("%Y-%m-%d %H:%M:%S")
    return str(v)


def _mb(n: Any) -> float | None:
    return None if n is None else n / 1e6


class _Reader:
    def __init__(self, source: MetricsStore | str | Path) -> None:
        self.store = source if isinstance(source, MetricsStore) else None
        self.path = source.path if isinstance(source, MetricsStore) else Path(source)
        if self.store is not None:
            self.store.flush()

    def q(self, sql: str, params: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        return read_query(self.path, sql, params)


def _latest_benchmarks(r: _Reader) -> list[dict[str, Any]]:
    return r.q("""SELECT * FROM benchmarks
                  QUALIFY row_number() OVER (PARTITION BY benchmark ORDER BY ts DESC) = 1
                  ORDER BY benchmark""")


def _figure_summary(figures: dict[str, Any], limit: int = 6) -> str:
    parts = []
    for k, v in figures.items():
        if isinstance(v, dict) and "median" in v:
            parts.append(f"{k}: {_fmt(v['median'])} (p10 {_fmt(v.get('p10'))}, "
                         f"p90 {_fmt(v.get('p90'))}, n={v.get('n')})")
        elif isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{k}: {_fmt(v)}")
        elif isinstance(v, str):
            parts.append(f"{k}: {v if len(v) <= 40 else v[:37] + '...'}")
        if len(parts) >= limit:
            break
    return "; ".join(parts)


def _corpus_rows(bench: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The systems of the latest ``corpus`` result, with their settings and versions."""
    row = next((b for b in bench if b["benchmark"] == "corpus" and b["ratio"] is not None), None)
    if row is None:
        return []
    figs = json.loads(row["figures"] or "{}")
    versions = json.loads(row["versions"] or "{}")
    out = []
    for system in ("webaccel", "transformers.js", "sentence-transformers"):
        f = figs.get(system) or {}
        rate = f.get("embeddings_per_s") or {}
        if "median" not in rate:
            continue
        if system == "webaccel":
            setting = (f"{f.get('workers')} workers x {f.get('threads_per_worker')} thread, "
                       f"{f.get('slots_per_worker')} in flight, {f.get('backend')}")
        elif system == "transformers.js":
            setting = (f"{f.get('threads')} threads, {f.get('device')}, "
                       f"{versions.get('transformers.js', '?')}")
        else:
            setting = (f"{f.get('threads')} threads, torch {versions.get('torch', '?')}, "
                       f"{versions.get('sentence-transformers', '?')}")
        out.append({"system": system, "median": rate["median"], "p10": rate.get("p10"),
                    "p90": rate.get("p90"), "setting": setting,
                    "cosine": f.get("worst_cosine_vs_sentence_transformers", 1.0
                                    if system == "sentence-transformers" else None)})
    return out


def build_report(source: MetricsStore | str | Path | None, out_dir: str | Path) -> Report:
    from webaccel.metrics.store import default_path

    r = _Reader(source if source is not None else default_path())
    out = Path(out_dir)
    plot_dir = out / "plots"
    if plot_dir.exists():
        shutil.rmtree(plot_dir)  # no stale plot may survive a report without its data
    plot_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Path] = {}
    sections: list[Section] = []
    data: dict[str, Any] = {}

    def plot(key: str, p: Path | None) -> Path | None:
        if p is not None:
            made[key] = p
        return p

    # -- benchmarks -------------------------------------------------------------------
    bench = _latest_benchmarks(r)
    data["benchmarks"] = bench
    s = Section("Benchmarks", "Latest result of each benchmark (`webaccel bench`); ratio is "
                "measured against a baseline in the same run.", key="benchmarks")
    s.plot = plot("benchmarks", plots.benchmark_ratios(bench, plot_dir / "benchmarks.png"))
    s.headers = ["benchmark", "ratio", "ratio is", "better", "figures", "at"]
    for b in bench:
        if b["ratio"] is not None:
            figs = json.loads(b["figures"] or "{}")
            s.rows.append([b["benchmark"], b["ratio"], b["ratio_is"], b["better"],
                           _figure_summary(figs), b["ts"]])
        else:
            why = f"unavailable: {b['unavailable']}" if b["unavailable"] else f"error: {b['error']}"
            s.rows.append([b["benchmark"], None, b["ratio_is"], b["better"], why, b["ts"]])
    sections.append(s)
    corpus = _corpus_rows(bench)
    if corpus:  # the systems side by side (only once `webaccel bench corpus` has run)
        data["corpus"] = corpus
        s = Section("Embedding a corpus", "`webaccel bench corpus`: the same 2,000 real "
                    "sentences embedded by each system in one run (MiniLM fp32, this "
                    "machine's cores).", key="corpus")
        s.plot = plot("corpus", plots.corpus_systems(corpus, plot_dir / "corpus.png"))
        s.headers = ["system", "embeddings/s (median)", "p10", "p90", "setting",
                     "worst cosine vs sentence-transformers"]
        s.rows = [[c["system"], c["median"], c["p10"], c["p90"], c["setting"], c["cosine"]]
                  for c in corpus]
        sections.append(s)

    soak = next((b for b in bench if b["benchmark"] == "soak" and b["ratio"] is not None), None)
    if soak is not None:  # the latest `webaccel bench soak`
        figs = json.loads(soak["figures"] or "{}")
        data["soak"] = figs
        s = Section("Soak", "`webaccel bench soak`: requests through `webaccel serve` while "
                    "browsers are killed and one worker lies; every answer compared with "
                    "native onnxruntime.", key="soak")
        s.plot = plot("soak", plots.soak_memory(figs, plot_dir / "soak_memory.png"))
        s.headers = ["minutes", "sent", "correct", "lost", "wrong", "kills",
                     "recovery s (max)", "p99 ms (embeddings)", "p99 ms (chat)", "peak MB"]
        p99 = {k: ((figs.get("by_kind") or {}).get(k) or {}).get("latency_ms") or {}
               for k in ("embedding", "chat")}
        s.rows = [[figs.get("minutes"), figs.get("sent"), figs.get("correct"), figs.get("lost"),
                   figs.get("wrong"), len(figs.get("kills_at_s") or []),
                   max(figs.get("recovery_s") or [0.0]), p99["embedding"].get("p99"),
                   p99["chat"].get("p99"), figs.get("peak_rss_mb")]]
        sections.append(s)

    # -- latency by backend and precision ---------------------------------------------------
    lat = r.q("""SELECT coalesce(model, '?') AS model, coalesce(backend, '?') AS backend,
                        coalesce(precision, '?') AS precision, count(*) AS n,
                        quantile_cont(round_trip_ms, 0.1) AS p10, median(round_trip_ms) AS p50,
                        quantile_cont(round_trip_ms, 0.9) AS p90, avg(page_ms) AS page_ms,
                        avg(queue_wait_ms) AS queue_wait_ms, sum(batch) AS items
                 FROM inferences WHERE ok GROUP BY ALL ORDER BY model, backend, precision""")
    errs = r.q("""SELECT error_code, count(*) AS n FROM inferences WHERE NOT ok
                  GROUP BY ALL ORDER BY n DESC""")
    data["latency"], data["inference_errors"] = lat, errs
    s = Section("Latency by backend and precision", "Round trip as seen by the SDK, per "
                "successful inference; page time is measured inside the page.", key="latency")
    s.plot = plot("latency", plots.latency_by_backend(lat, plot_dir / "latency_by_backend.png"))
    s.headers = ["model", "backend", "precision", "n", "p10 ms", "median ms", "p90 ms",
                 "page ms (avg)", "queue wait ms (avg)"]
    s.rows = [[x["model"], x["backend"], x["precision"], x["n"], x["p10"], x["p50"], x["p90"],
               x["page_ms"], x["queue_wait_ms"]] for x in lat]
    s.notes = [f"failed inferences: {e['error_code']} × {e['n']}" for e in errs]
    sections.append(s)

    # -- generation -------------------------------------------------------------------------
    gen = r.q("""SELECT coalesce(model, '?') AS model, coalesce(backend, '?') AS backend,
                        string_agg(DISTINCT task, ', ' ORDER BY task) AS task, count(*) AS n,
                        count(*) FILTER (WHERE NOT ok) AS errors,
                        sum(prompt_tokens) AS prompt_tokens,
                        sum(completion_tokens) AS completion_tokens,
                        quantile_cont(ttft_ms, 0.5) FILTER (WHERE ok) AS ttft_p50,
                        quantile_cont(ttft_ms, 0.95) FILTER (WHERE ok) AS ttft_p95,
                        median(tokens_per_s) FILTER (WHERE ok) AS tps_p50,
                        sum(failovers) AS failovers
                 FROM generations GROUP BY model, backend ORDER BY model, backend""")
    gen_errs = r.q("""SELECT error_code, count(*) AS n FROM generations WHERE NOT ok
                      GROUP BY ALL ORDER BY n DESC, error_code""")
    finish = r.q("""SELECT model, coalesce(finish_reason, 'unknown') AS reason, count(*) AS n
                    FROM generations GROUP BY ALL ORDER BY model, n DESC, reason""")
    data["generation"], data["generation_errors"] = gen, gen_errs
    s = Section("Generation", "Text generation streams and multi-step sessions (Whisper "
                "transcription), one record each when it ends. Time to first token counts from "
                "submit; the decode rate is the tokens after the first over the time after the "
                "first; both over successful streams only. A failover is a stream replayed on "
                "another worker.", key="generation")
    s.plot = plot("generation", plots.generation_speed(gen, plot_dir / "generation.png"))
    s.headers = ["model", "backend", "task", "requests", "prompt tokens", "completion tokens",
                 "TTFT p50 ms", "TTFT p95 ms", "tokens/s (median)", "failovers", "errors"]
    s.rows = [[x["model"], x["backend"], x["task"], x["n"], x["prompt_tokens"],
               x["completion_tokens"], x["ttft_p50"], x["ttft_p95"], x["tps_p50"],
               x["failovers"], x["errors"]] for x in gen]
    by_model: dict[str, list[str]] = {}
    for f in finish:
        by_model.setdefault(f["model"], []).append(f"{f['reason']} × {f['n']}")
    s.notes = [f"{m} finished: {', '.join(parts)}" for m, parts in by_model.items()]
    s.notes += [f"failed generations: {e['error_code']} × {e['n']}" for e in gen_errs]
    sections.append(s)

    # -- throughput vs workers --------------------------------------------------------------
    runs = r.q("""SELECT run_id, count(DISTINCT worker_id) AS workers, sum(batch) AS items,
                         count(*) AS n, min(epoch_ms(ts) - round_trip_ms) AS start_ms,
                         max(epoch_ms(ts)) AS end_ms
                  FROM inferences WHERE ok AND worker_id IS NOT NULL
                  GROUP BY run_id HAVING count(*) >= 2 ORDER BY workers""")
    tput = []
    for x in runs:
        span = (x["end_ms"] - x["start_ms"]) / 1000.0
        if span > 0:
            tput.append({"run_id": x["run_id"], "workers": x["workers"], "items": x["items"],
                         "seconds": span, "throughput": x["items"] / span})
    series: dict[str, dict[int, float]] = {}
    for b in bench:
        figs = json.loads(b["figures"] or "{}")
        tvw = figs.get("throughput_vs_workers")
        if isinstance(tvw, dict):
            with contextlib.suppress(TypeError, ValueError):
                series[b["benchmark"]] = {int(k): float(v) for k, v in tvw.items()}
        elif isinstance(figs.get("workers"), int) and isinstance(
                figs.get("throughput_per_s"), int | float):
            series[b["benchmark"]] = {figs["workers"]: float(figs["throughput_per_s"])}
    data["throughput"], data["throughput_series"] = tput, series
    s = Section("Throughput vs workers", "Items per second over each run's busy window "
                "(first request start to last completion), against the workers that served it; "
                "benchmark points come from `throughput_vs_workers` ({workers: items/s}) or "
                "`workers` + `throughput_per_s` in their figures.",
                key="throughput")
    s.plot = plot("throughput",
                  plots.throughput_vs_workers(tput, series, plot_dir / "throughput_vs_workers.png"))
    s.headers = ["source", "workers", "items", "seconds", "items/s"]
    s.rows = [[f"run {x['run_id']}", x["workers"], x["items"], x["seconds"], x["throughput"]]
              for x in tput]
    s.rows += [[name, w, None, None, v] for name, pts in sorted(series.items())
               for w, v in sorted(pts.items())]
    sections.append(s)

    # -- load time by cache tier ------------------------------------------------------------
    loads = r.q("""SELECT coalesce(tier, 'unknown') AS tier, count(*) AS n,
                          quantile_cont(ms, 0.1) AS p10, median(ms) AS p50,
                          quantile_cont(ms, 0.9) AS p90, sum(bytes) AS bytes
                   FROM model_loads WHERE ok GROUP BY ALL ORDER BY p50""")
    data["loads"] = loads
    s = Section("Model load time by cache tier", "Time from load request to a ready session, "
                "by where the model bytes came from.", key="loads")
    s.plot = plot("loads", plots.load_time_by_tier(loads, plot_dir / "load_time_by_tier.png"))
    s.headers = ["tier", "loads", "p10 ms", "median ms", "p90 ms", "MB"]
    s.rows = [[x["tier"], x["n"], x["p10"], x["p50"], x["p90"], _mb(x["bytes"])] for x in loads]
    sections.append(s)

    # -- accuracy vs size -------------------------------------------------------------------
    variants = r.q("""SELECT model, variant, precision, bytes, metric, accuracy, latency_ms
                      FROM variants
                      QUALIFY row_number() OVER (PARTITION BY model, variant ORDER BY ts DESC) = 1
                      ORDER BY model, bytes DESC""")
    for b in bench:  # a precision benchmark may carry its variants in its figures
        figs = json.loads(b["figures"] or "{}")
        vs = figs.get("variants")
        if isinstance(vs, dict):
            for name, v in vs.items():
                if not (isinstance(v, dict) and v.get("bytes")):
                    continue
                lat_raw = v.get("latency_ms", v.get("native_latency_ms"))
                lat_ms = lat_raw.get("median") if isinstance(lat_raw, dict) else lat_raw
                for metric in ("accuracy", "cosine_mean", "cosine_worst"):
                    if isinstance(v.get(metric), int | float):
                        label = v.get("metric") if metric == "accuracy" else metric
                        variants.append({"model": f"{b['benchmark']} benchmark ({metric})",
                                         "variant": name, "precision": name, "bytes": v["bytes"],
                                         "metric": label, "accuracy": float(v[metric]),
                                         "latency_ms": lat_ms})
    data["variants"] = variants
    s = Section("Accuracy vs size per variant", "Each precision variant's size and its "
                "accuracy against the fp32 model's outputs.", key="variants")
    s.plot = plot("variants", plots.accuracy_vs_size(variants, plot_dir / "accuracy_vs_size.png"))
    s.headers = ["model", "variant", "MB", "metric", "accuracy", "latency ms"]
    variants.sort(key=lambda v: (v["model"], -(v["bytes"] or 0)))
    s.rows = [[v["model"], v["variant"], _mb(v["bytes"]), v["metric"],
               None if v["accuracy"] is None else f"{v['accuracy']:.6f}", v["latency_ms"]]
              for v in variants]
    sections.append(s)

    # -- resource efficiency --------------------------------------------------------------------
    s, data["efficiency"], eff_plot = _resource_efficiency(r, plot_dir)
    s.plot = plot("efficiency", eff_plot)
    sections.append(s)

    # -- workers -------------------------------------------------------------------------------
    workers = r.q("""SELECT browser, browser_version, is_fallback, adapter, backends,
                            count(*) AS n FROM workers GROUP BY ALL ORDER BY n DESC""")
    data["workers"] = workers
    s = Section("Workers seen", "Browsers that joined, with their WebGPU adapter; a fallback "
                "(software) adapter is not a GPU.", key="workers")
    s.headers = ["browser", "version", "backends", "adapter", "fallback adapter", "times"]
    s.rows = [[w["browser"], w["browser_version"], ", ".join(json.loads(w["backends"] or "[]")),
               _adapter(w["adapter"]), w["is_fallback"], w["n"]] for w in workers]
    sections.append(s)

    counts = r.q("""SELECT 'inferences' AS t, count(*) AS n FROM inferences UNION ALL
                    SELECT 'generations', count(*) FROM generations UNION ALL
                    SELECT 'model_loads', count(*) FROM model_loads UNION ALL
                    SELECT 'fetches', count(*) FROM fetches UNION ALL
                    SELECT 'benchmarks', count(*) FROM benchmarks UNION ALL
                    SELECT 'workers', count(*) FROM workers UNION ALL
                    SELECT 'runs', count(*) FROM runs""")
    data["counts"] = {c["t"]: c["n"] for c in counts}
    md = out / "report.md"
    page = out / "report.html"
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    md.write_text(_markdown(sections, r.path, generated, data["counts"], out), encoding="utf-8")
    page.write_text(_html(sections, r.path, generated, data["counts"], out), encoding="utf-8")
    return Report(out, md, page, made, sections, data)


WORKERS_SHOWN = 12  # the report's memory table and plot: the workers of highest peak


def _pct(part: float | None, whole: float | None = 1.0) -> str | None:
    if part is None or not whole:
        return None
    return f"{100.0 * part / whole:.1f} %"


def _resource_efficiency(r: _Reader, plot_dir: Path) -> tuple[Section, dict[str, Any],
                                                                 Path | None]:
    """The "Resource efficiency" section: memory, connection reuse, cache hits, errors,
    recoveries -- the figures ``get_metrics()["efficiency"]`` gives for one process, here
    over every run in the file (see :mod:`webaccel.metrics.efficiency`)."""
    mem = r.q("""WITH seen AS (SELECT run_id, worker_id, any_value(browser) AS browser,
                                      min(ts) AS ts FROM workers GROUP BY ALL),
                      mem AS (SELECT run_id, worker_id, any_value(browser) AS browser,
                                     max(rss_bytes) AS peak, count(rss_bytes) AS samples,
                                     count(*) FILTER (WHERE rss_bytes IS NULL) AS unmeasurable,
                                     max(ts) AS ts FROM worker_memory GROUP BY ALL)
                 SELECT coalesce(m.run_id, s.run_id) AS run_id,
                        coalesce(m.worker_id, s.worker_id) AS worker_id,
                        coalesce(m.browser, s.browser) AS browser, m.peak,
                        coalesce(m.samples, 0) AS samples,
                        coalesce(m.unmeasurable, 0) AS unmeasurable,
                        coalesce(m.ts, s.ts) AS ts
                 FROM seen s FULL OUTER JOIN mem m
                   ON s.run_id = m.run_id AND s.worker_id = m.worker_id
                 ORDER BY m.peak DESC NULLS LAST, ts DESC, worker_id""")
    growth = r.q("""SELECT model, count(*) AS n, median(rss_delta_bytes) AS median,
                           max(rss_delta_bytes) AS max
                    FROM model_loads WHERE ok AND rss_delta_bytes IS NOT NULL
                    GROUP BY model ORDER BY max DESC, model""")
    reads = r.q("""SELECT 'model loads' AS kind, coalesce(tier, 'unknown') AS tier,
                          count(*) AS n, coalesce(sum(bytes), 0) AS bytes
                   FROM model_loads WHERE ok GROUP BY ALL
                   UNION ALL
                   SELECT 'block fetches', coalesce(tier, 'unknown'), count(*),
                          coalesce(sum(bytes), 0)
                   FROM fetches WHERE ok GROUP BY ALL""")
    runs = r.q("""WITH c AS (SELECT run_id, count(DISTINCT worker_id) AS opened
                             FROM workers GROUP BY run_id),
                       q AS (SELECT run_id, count(*) AS requests,
                                    count(*) FILTER (WHERE ok) AS served
                             FROM (SELECT run_id, ok FROM inferences
                                   UNION ALL SELECT run_id, ok FROM generations)
                             GROUP BY run_id)
                  SELECT coalesce(c.run_id, q.run_id) AS run_id, coalesce(c.opened, 0) AS opened,
                         coalesce(q.requests, 0) AS requests, coalesce(q.served, 0) AS served
                  FROM c FULL OUTER JOIN q ON c.run_id = q.run_id
                  ORDER BY served DESC, run_id""")
    rec = [float(x["seconds"]) for x in r.q("SELECT seconds FROM recoveries ORDER BY ts")]

    measured = [m for m in mem if m["samples"]]
    unmeasurable = [m for m in mem if not m["samples"] and m["unmeasurable"]]
    unsampled = [m for m in mem if not m["samples"] and not m["unmeasurable"]]
    models = {g["model"]: {"loads_measured": g["n"],
                           "median_rss_growth_bytes": round(g["median"]),
                           "max_rss_growth_bytes": g["max"]} for g in growth}
    cache = {kind: eff.cache_figures({x["tier"]: (int(x["n"]), int(x["bytes"]))
                                      for x in reads if x["kind"] == kind})
             for kind in ("model loads", "block fetches")}
    opened = sum(int(x["opened"]) for x in runs)
    served = sum(int(x["served"]) for x in runs)
    requests = sum(int(x["requests"]) for x in runs)
    figures: dict[str, Any] = {
        "memory": {"workers": mem, "models": models},
        "connections": eff.connection_figures(opened, served),
        "connections_by_run": runs,
        "cache": {"loads": cache["model loads"], "fetches": cache["block fetches"]},
        "errors": eff.error_figures(requests, requests - served),
        "recovery": eff.recovery_figures(rec),
    }

    s = Section("Resource efficiency", "Memory: the RSS of each local worker's browser "
                "process tree (browser, renderers, GPU and utility processes, summed: pages they "
                "share count once per process, so it is an upper bound), sampled "
                "every few seconds and right after each model load; a model's memory is that "
                "RSS after its load and warm-up minus before. Connection reuse: browser "
                "connections opened (workers that joined) against requests served (successful "
                "inferences and generations). A cache hit is a read served by a local tier "
                "(memory, disk, browser-cache); remote tiers are "
                f"{', '.join(sorted(NETWORK_TIERS))}. Recovery: from a lost worker to the next "
                "worker ready.", key="efficiency")
    conn, errs, recs = figures["connections"], figures["errors"], figures["recovery"]
    summary: list[list[Any]] = []
    if measured:
        top = measured[0]
        summary.append(["peak memory of one worker (MB)", _mb(top["peak"]),
                        f"{top['worker_id']} ({top['browser']})"])
    if models:
        name, g = max(models.items(), key=lambda kv: kv[1]["max_rss_growth_bytes"])
        summary.append(["largest memory growth at a model load (MB)",
                        _mb(g["max_rss_growth_bytes"]), name])
    if opened or served:
        summary += [["browser connections opened", opened, f"{len(runs)} run(s)"],
                    ["requests served", served, "successful inferences and generations"],
                    ["requests per connection", conn["requests_per_connection"],
                     "vs 1 with one connection per request"]]
    for label, c in (("model loads", cache["model loads"]),
                     ("block fetches", cache["block fetches"])):
        if c["reads"]:
            summary += [[f"{label} served by a cache", _pct(c["hit_rate"]),
                         f"{c['hits']:,} of {c['reads']:,}"],
                        [f"network MB saved by caches ({label})", _mb(c["bytes_saved"]),
                         f"{_fmt(_mb(c['network_bytes']))} MB still came over the network"]]
    if requests:
        summary.append(["error rate", _pct(errs["error_rate"]),
                        f"{errs['errors']:,} of {requests:,} requests failed"])
    if rec:
        summary += [["recoveries after a lost worker", recs["count"], ""],
                    ["recovery time, median s", recs["median_s"], f"max {_fmt(recs['max_s'])} s"]]
    s.headers = ["figure", "value", "detail"]
    s.rows = summary

    shown = measured[:WORKERS_SHOWN]
    if shown or unmeasurable:
        s.tables.append(Table(
            "Peak memory per worker",
            ["run", "worker", "browser", "peak RSS MB", "samples", "last seen"],
            [[m["run_id"], m["worker_id"], m["browser"], _mb(m["peak"]), m["samples"], m["ts"]]
             for m in shown]
            + [[m["run_id"], m["worker_id"], m["browser"], "not measured", 0, m["ts"]]
               for m in unmeasurable[:WORKERS_SHOWN]]))
    if len(measured) > len(shown):
        s.notes.append(f"{len(measured) - len(shown)} more measured worker(s) with a lower "
                       "peak are not listed")
    if unmeasurable:
        s.notes.append(f"{len(unmeasurable)} worker(s) not measured: {eff.UNMEASURABLE}")
    if unsampled:
        s.notes.append(f"{len(unsampled)} worker(s) have no memory sample (recorded before "
                       "memory sampling, or gone before their first sample)")
    if models:
        s.tables.append(Table(
            "Memory per model (RSS growth of the worker at each load)",
            ["model", "loads measured", "median MB", "max MB"],
            [[k, g["loads_measured"], _mb(g["median_rss_growth_bytes"]),
              _mb(g["max_rss_growth_bytes"])] for k, g in models.items()]))
    tier_rows = [[kind, t, "yes" if v["cache"] else "no" if v["cache"] is False else "–",
                  v["reads"], _pct(v["share"]), _mb(v["bytes"])]
                 for kind, c in cache.items() for t, v in c["by_tier"].items()]
    if tier_rows:
        s.tables.append(Table("Reads by tier (share = that tier's hit rate)",
                              ["reads", "tier", "cache", "count", "share", "MB"], tier_rows))
    conn_rows = [[x["run_id"], x["opened"], x["served"],
                  x["served"] / x["opened"] if x["opened"] else None]
                 for x in runs if x["served"] or x["opened"]][:20]
    if conn_rows:
        s.tables.append(Table("Connection reuse per run",
                              ["run", "connections opened", "requests served",
                               "requests per connection"], conn_rows))
    repeated = r.q("""SELECT model, count(*) AS loads, sum(bytes) AS bytes_uncached,
                             sum(bytes) FILTER (WHERE tier IN (SELECT unnest($1::VARCHAR[])))
                               AS bytes_network
                      FROM model_loads WHERE ok GROUP BY model HAVING count(*) > 1
                      ORDER BY model""", [sorted(NETWORK_TIERS)])
    figures["repeated_loads"] = repeated
    for x in repeated:
        net = x["bytes_network"] or 0
        s.notes.append(
            f"{x['model']}: {x['loads']} loads moved {_fmt(_mb(net))} MB over the network with "
            f"caching, vs {_fmt(_mb(x['bytes_uncached']))} MB if every load fetched it "
            f"({_fmt(100.0 * (1 - net / x['bytes_uncached']) if x['bytes_uncached'] else None)} % "
            "saved)")
    plot = plots.resource_memory(
        [{"label": f"{m['worker_id']} ({m['browser']})", "peak_mb": _mb(m["peak"])}
         for m in shown],
        [{"model": k, "median_mb": _mb(g["median_rss_growth_bytes"]),
          "max_mb": _mb(g["max_rss_growth_bytes"]), "n": g["loads_measured"]}
         for k, g in models.items()],
        plot_dir / "resource_memory.png")
    return s, figures, plot


def _adapter(raw: str | None) -> str:
    if not raw:
        return "–"
    try:
        a = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(a, dict):
        return " ".join(str(a[k]) for k in ("vendor", "architecture", "device") if a.get(k))
    return str(a)


def _md_cell(v: Any) -> str:
    return _fmt(v).replace("|", "\\|").replace("\n", " ")


def _markdown(sections: list[Section], path: Path, generated: str, counts: dict[str, int],
              out: Path) -> str:
    lines = ["# webaccel report", "", f"Generated {generated} from `{path}`.", "",
             "Records: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()), ""]
    for s in sections:
        lines += [f"## {s.title}", ""]
        if s.intro:
            lines += [s.intro, ""]
        if not s.rows and not s.notes and not s.tables:
            lines += [f"_{NO_DATA}_", ""]
            continue
        if s.plot is not None:
            lines += [f"![{s.title}]({s.plot.relative_to(out).as_posix()})", ""]
        for caption, headers, rows in [("", s.headers, s.rows)] + [
                (t.caption, t.headers, t.rows) for t in s.tables]:
            if not rows:
                continue
            if caption:
                lines += [f"**{caption}**", ""]
            lines.append("| " + " | ".join(headers) + " |")
            lines.append("|" + "---|" * len(headers))
            for row in rows:
                lines.append("| " + " | ".join(_md_cell(v) for v in row) + " |")
            lines.append("")
        lines += [f"- {n}" for n in s.notes]
        if s.notes:
            lines.append("")
    return "\n".join(lines)


def _html(sections: list[Section], path: Path, generated: str, counts: dict[str, int],
          out: Path) -> str:
    e = html.escape
    parts = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
             "<title>webaccel report</title><style>",
             "body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:24px auto;"
             "padding:0 16px;color:#1d2733}",
             "table{border-collapse:collapse;margin:8px 0 16px}"
             "th,td{border-bottom:1px solid #dde3ea;"
             "padding:4px 8px;text-align:left;font-variant-numeric:tabular-nums}"
             "th{background:#f3f6f9}img{max-width:100%;border:1px solid #dde3ea}"
             ".empty{color:#6b7785;font-style:italic}",
             "</style></head><body><h1>webaccel report</h1>",
             f"<p>Generated {e(generated)} from <code>{e(str(path))}</code>.</p>",
             "<p>Records: " + ", ".join(f"{e(k)} {v:,}" for k, v in counts.items()) + "</p>"]
    for s in sections:
        parts.append(f"<section id='{e(s.key)}'><h2>{e(s.title)}</h2>")
        if s.intro:
            parts.append("<p>" + re.sub(r"`([^`]+)`", r"<code>\1</code>", e(s.intro)) + "</p>")
        if not s.rows and not s.notes and not s.tables:
            parts.append(f"<p class='empty'>{NO_DATA}</p></section>")
            continue
        if s.plot is not None:
            parts.append(f"<img src='{e(s.plot.relative_to(out).as_posix())}' alt='{e(s.title)}'>")
        for caption, headers, rows in [("", s.headers, s.rows)] + [
                (t.caption, t.headers, t.rows) for t in s.tables]:
            if not rows:
                continue
            if caption:
                parts.append(f"<h3>{e(caption)}</h3>")
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in headers) + "</tr>")
            for row in rows:
                parts.append("<tr>" + "".join(f"<td>{e(_fmt(v))}</td>" for v in row) + "</tr>")
            parts.append("</table>")
        if s.notes:
            parts.append("<ul>" + "".join(f"<li>{e(n)}</li>" for n in s.notes) + "</ul>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
